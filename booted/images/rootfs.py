"""Building one generation of the golden rootfs: bootstrap, sources, upgrade, extra packages, strip.

mmdebstrap when it is installed (Debian 12 ships it; bench/packages.py: half debootstrap's time for the same
packages, as apt downloads and installs them), else debootstrap. mmdebstrap bootstraps from all
three suites at once; debootstrap knows one mirror, so its rootfs gets the updates and security suites and
an upgrade afterwards. Either way the image's /etc/apt/sources.list names the three suites and the build
ends with `apt-get dist-upgrade`: nothing the suites had at build time is pending in a host.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from booted.config import Settings
from booted.errors import ImageError, NeedsRoot, ToolMissing
from booted.images.suites import SUITE, Mirrors

PACKAGES = ("openssh-server", "python3", "iproute2", "curl", "busybox-static", "passwd")
MERGED_USR = Path("/usr/share/mmdebstrap/hooks/merged-usr")  # usr-is-merged as debootstrap does, not usrmerge
TOOLS = ("mmdebstrap", "debootstrap")  # the first one installed builds
STRIP = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian", "usr/share/locale",
    "var/cache/apt", "var/cache/debconf/templates.dat-old", "var/log",
)  # apt's package lists stay: apt-get install works in the lab (through booted's apt proxy) right away
PHASES = {"Retrieving": "downloading", "Validating": "downloading", "Extracting": "extracting",
          "Unpacking": "unpacking", "Configuring": "configuring", "Installing": "installing"}
RECIPE = "strip-v2 compileall-v1 apt-lists-v1 suites-v1 upgrade-v1"  # bump when the steps change: re-keys the cache
QUIET = ("chroot architecture", "finding correct", "automatically chosen", "running --", "skipping")  # mmdebstrap
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
Progress = Callable[[str], None]


def bootstrap_command(tool: str, target: Path, mirrors: Mirrors, packages: tuple[str, ...] = PACKAGES,
                      patched: bool = True) -> list[str]:
    """The minbase bootstrap of `packages` into `target` (an empty or missing folder). `patched`: mmdebstrap
    takes bookworm-updates and bookworm-security too (debootstrap takes one mirror: the main suite only)."""
    include = f"--include={','.join(packages)}"
    if tool == "debootstrap":
        return ["debootstrap", "--variant=minbase", include, SUITE, str(target), mirrors.main]
    hooks = [f"--hook-dir={MERGED_USR}"] if MERGED_USR.is_dir() else []
    sources = mirrors.source_lines() if patched else mirrors.source_lines()[:1]
    return ["mmdebstrap", "--mode=root", "--variant=minbase", *hooks, include,
            "--skip=cleanup/apt/lists", SUITE, str(target), *sources]


def build_rootfs(settings: Settings, rootfs: Path, mirrors: Mirrors, progress: Progress,
                 extra: tuple[str, ...]) -> None:
    """Build the rootfs at `rootfs` (through `rootfs`.tmp, so a crashed build is never taken for one)."""
    tool = next((t for t in TOOLS if settings.which(t)), None)
    if not settings.is_root:
        raise NeedsRoot(f"building the golden image runs {tool or 'mmdebstrap'} as root: run 'fab image_golden' "
                        "as root once, and point BOOTED_CACHE_DIR at that cache")
    if tool is None:
        raise ToolMissing("mmdebstrap (or debootstrap) not found: apt-get install mmdebstrap (or run setup.sh)")
    tmp = rootfs.with_name(rootfs.name + ".tmp")
    if tmp.exists():
        progress(f"removing an unfinished build: {tmp}")
        shutil.rmtree(tmp)
    progress(f"building golden rootfs ({SUITE} + updates + security, {len(PACKAGES)} packages"
             + (f" + {' '.join(extra)}" if extra else "") + f") from {mirrors.main} with {tool}; "
             + ("about 30 s" if tool == "mmdebstrap" else "about a minute"))
    start = time.monotonic()
    _run_with_progress(bootstrap_command(tool, tmp, mirrors), progress, start, verbatim=tool == "mmdebstrap")
    (tmp / "etc/apt/sources.list").write_text(mirrors.sources_list())
    _apt_in_chroot(tmp, extra, progress, start)
    progress(f"[{time.monotonic() - start:5.1f}s] stripping and byte-compiling")
    for rel in STRIP:
        path = tmp / rel
        if path.is_dir():
            shutil.rmtree(path)
            path.mkdir()
    for key in (tmp / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (tmp / "etc/machine-id").write_text("")
    subprocess.run(["chroot", str(tmp), "python3", "-m", "compileall", "-q", "/usr/lib/python3.11"],
                   check=False, capture_output=True)
    (tmp / ".booted-complete").write_text(f"{SUITE} {' '.join(PACKAGES)} {' '.join(extra)}\n")
    tmp.rename(rootfs)
    progress(f"[{time.monotonic() - start:5.1f}s] golden rootfs ready: {rootfs}")


def _apt_in_chroot(root: Path, extra: tuple[str, ...], progress: Progress, start: float) -> None:
    """apt's package lists of the three suites (so the lab installs at run time), the upgrade, then the extra
    packages, with services kept from starting in the chroot (policy-rc.d) and proc mounted for maintainer
    scripts."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    keep_conffiles = ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]
    try:
        progress(f"[{time.monotonic() - start:5.1f}s] apt-get update, dist-upgrade (updates and security)")
        _chroot(root, ["apt-get", "update", "-q"])
        _chroot(root, ["apt-get", "dist-upgrade", "-y", "-q", *keep_conffiles])
        if extra:
            progress(f"[{time.monotonic() - start:5.1f}s] installing {' '.join(extra)}")
            _chroot(root, ["apt-get", "install", "-y", "-q", "--no-install-recommends", *keep_conffiles, *extra])
        _chroot(root, ["apt-get", "clean"])
    finally:
        subprocess.run(["umount", str(root / "proc")], check=False)
        policy.unlink(missing_ok=True)
        resolv.write_text("")


def _chroot(root: Path, cmd: list[str]) -> None:
    proc = subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, env=CHROOT_ENV, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
        raise ImageError(f"{' '.join(cmd[:2])} in the golden image failed (exit {proc.returncode}):\n{tail}")


def _run_with_progress(cmd: list[str], progress: Progress, start: float, verbatim: bool = False) -> None:
    """Run the bootstrap: mmdebstrap's few "I:" lines as they come (`verbatim`), debootstrap's 600 as a line
    per phase with a running count."""
    tail: list[str] = []
    counts: dict[str, int] = {}
    last = start
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-15:]
            words = line.split()
            if len(words) < 2 or words[0] != "I:":
                continue
            now = time.monotonic()
            if verbatim:
                if not line[3:].startswith(QUIET):
                    progress(f"[{now - start:5.1f}s] {line[3:].strip()}")
                continue
            phase = PHASES.get(words[1], words[1].lower())
            counts[phase] = counts.get(phase, 0) + 1
            if counts[phase] == 1 or now - last > 3:
                last = now
                progress(f"[{now - start:5.1f}s] " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        code = proc.wait()
    if code != 0:
        raise ImageError(f"{cmd[0]} failed (exit {code}); last lines:\n" + "\n".join(tail))
