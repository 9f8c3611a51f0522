"""The kernel VM hosts boot: Debian's cloud kernel, downloaded and unpacked once per exact package version.

kernel-<package>_<version>/ in the cache dir is the unpacked `linux-image-6.1.0-*-cloud-amd64` (apt-get
download + dpkg-deb -x + depmod), keyed by the exact version apt resolves for linux-image-cloud-amd64. The
build writes a .tmp and renames it, so a crashed build is redone, never used.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from booted.errors import ImageError
from booted.images.building import SYSTEM_PATH, Progress, need_tools

KERNEL_META = "linux-image-cloud-amd64"


@dataclass(frozen=True)
class Kernel:
    root: Path     # the unpacked package
    version: str   # uname -r, e.g. 6.1.0-56-cloud-amd64

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def modules(self) -> Path:
        return modules_dir(self.root) / self.version


def modules_dir(root: Path) -> Path:
    """Where an unpacked kernel package keeps its modules (lib/modules, or usr/lib/modules when merged)."""
    lib = root / "lib" / "modules"
    return lib if lib.is_dir() else root / "usr" / "lib" / "modules"


def kernel_package() -> tuple[str, str]:
    """(package, version) apt resolves linux-image-cloud-amd64 to, e.g. linux-image-6.1.0-56-cloud-amd64."""
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", KERNEL_META], capture_output=True,
                         text=True, check=False).stdout
    match = re.search(r"^Depends:.*?\b(linux-image-\d[^\s,(]*-cloud-amd64)\s*\(=\s*([^)]+)\)", out, re.M)
    if not match:
        raise ImageError(f"apt does not know {KERNEL_META}: run apt-get update (needs the Debian mirror)")
    return match.group(1), match.group(2).strip()


def _unpacked(root: Path) -> Kernel:
    modules = modules_dir(root)
    versions = sorted(p.name for p in modules.iterdir() if p.is_dir())
    if len(versions) != 1:
        raise ImageError(f"expected one kernel under {modules}, found {versions}")
    return Kernel(root, versions[0])


def unpack_deb(package: str, version: str, into: Path) -> None:
    """`apt-get download` one package version and unpack it (dpkg-deb -x, no maintainer scripts) into `into`."""
    debs = into / ".debs"
    debs.mkdir(parents=True, exist_ok=True)
    os.chmod(debs, 0o777)  # apt-get download drops privileges to _apt when it can
    try:
        proc = subprocess.run(["apt-get", "download", "-q", f"{package}={version}"], cwd=debs, capture_output=True,
                              text=True, check=False)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if proc.returncode != 0 or not found:
            raise ImageError(f"apt-get download {package}={version} failed: {proc.stderr.strip()[-300:]}")
        subprocess.run(["dpkg-deb", "-x", str(found[0]), str(into)], check=True)
    finally:
        shutil.rmtree(debs, ignore_errors=True)


def fetch_kernel(cache_dir: Path, progress: Progress, path: str = SYSTEM_PATH) -> Kernel:
    """The Debian cloud kernel, downloaded and unpacked once per exact package version. Offline, the
    newest kernel already in the cache is used."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        pkg, version = kernel_package()
    except ImageError:
        done = sorted(cache_dir.glob("kernel-*/.booted-complete"), key=os.path.getmtime)
        if not done:
            raise
        progress(f"apt cannot resolve {KERNEL_META}; using the cached {done[-1].parent.name}")
        return _unpacked(done[-1].parent)
    root = cache_dir / f"kernel-{pkg}_{version.replace(':', '%3a')}"
    if (root / ".booted-complete").exists():
        return _unpacked(root)
    need_tools(path, "apt-get", "dpkg-deb", "depmod")
    progress(f"downloading kernel {pkg} {version}")
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    os.chmod(tmp, 0o755)
    unpack_deb(pkg, version, tmp)
    kernel = _unpacked(tmp)
    subprocess.run(["depmod", "-b", str(tmp), kernel.version], check=True, capture_output=True)  # no postinst ran
    (tmp / ".booted-complete").write_text(f"{pkg} {version} {kernel.version}\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    progress(f"kernel ready: {root.name}")
    return _unpacked(root)
