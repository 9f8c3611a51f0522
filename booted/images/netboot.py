"""Debian's own installer for the installer-based path: the netboot kernel and initrd from Debian's
debian-installer-12-netboot-amd64 package, downloaded with apt and unpacked once per package version into
the cache (only those two files are kept)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from booted.errors import ImageError, ToolMissing
from booted.images.building import Progress
from booted.images.kernel import unpack_deb

PACKAGE = "debian-installer-12-netboot-amd64"
INNER = "usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64"


@dataclass(frozen=True)
class Netboot:
    linux: Path
    initrd: Path
    version: str


def ensure_netboot(cache_dir: Path, progress: Progress, path: str) -> Netboot:
    """The installer's kernel and initrd for the package version apt resolves (downloaded once)."""
    for tool in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(tool, path=path) is None:
            raise ToolMissing(f"{tool} not found: the installer comes from Debian's {PACKAGE} package")
    show = subprocess.run(["apt-cache", "show", "--no-all-versions", PACKAGE], capture_output=True, text=True,
                          check=False).stdout
    version = next((line.split(":", 1)[1].strip() for line in show.splitlines() if line.startswith("Version:")), "")
    if not version:
        raise ImageError(f"apt does not know {PACKAGE}: run apt-get update (needs the Debian mirror)")
    root = cache_dir / f"netboot-{version.replace(':', '%3a')}"
    done = Netboot(root / "linux", root / "initrd.gz", version)
    if done.linux.exists() and done.initrd.exists():
        return done
    progress(f"downloading Debian's installer ({PACKAGE} {version}, about 130 MB, once)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".netboot-"))
    try:
        unpack_deb(PACKAGE, version, work / "x")
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name in ("linux", "initrd.gz"):
            shutil.move(str(work / "x" / INNER / name), str(tmp / name))
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return done
