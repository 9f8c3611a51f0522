"""The golden image: a Debian rootfs from Debian packages plus booted's guest layer, cached by inputs.

Two cached parts make one image, so that editing the boot script does not re-run debootstrap:
- rootfs-<key>: `debootstrap --variant=minbase` with the packages below, stripped (slow, ~1 min);
- layer-<key>: booted's guest files (/usr/lib/booted/*, plus /etc/inittab and the busybox-init link
  /usr/lib/booted/init that qemu hosts boot with), copied from booted/guest (instant).
Providers stack them: netns as overlay lowerdirs (layer over rootfs), qemu packs both into one disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from booted.config import Settings
from booted.errors import ImageError, NeedsRoot, ToolMissing
from booted.rules import DEBIAN_PACKAGE
from booted.state.locks import hold

SUITE = "bookworm"
PACKAGES = ("openssh-server", "python3", "iproute2", "curl", "busybox-static", "passwd")
GUEST_DIR = Path(__file__).resolve().parent.parent / "guest"
STRIP = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian", "usr/share/locale",
    "var/cache/apt", "var/cache/debconf/templates.dat-old", "var/log",
)  # apt's package lists stay: apt-get install works in the lab (through booted's apt proxy) right away
PHASES = {"Retrieving": "downloading", "Validating": "downloading", "Extracting": "extracting",
          "Unpacking": "unpacking", "Configuring": "configuring", "Installing": "installing"}
# Units a systemd image never starts: the package's sshd (all addresses, no host key; booted.service runs
# sshd on the lab IP), e2scrub (needs LVM), gettys (no udev in the image: they would wait 90 s for the tty),
# Debian's haproxy (the lb service runs its own HAProxy, supervised by booted, with its own config).
MASKED_UNITS = ("ssh.service", "ssh.socket", "e2scrub_reap.service", "serial-getty@.service", "getty@.service",
                "haproxy.service")
LAYER_RECIPE = "layer-v2"  # bump when _build_layer changes, to re-key the cache
STRIP_RECIPE = "strip-v2 compileall-v1 apt-lists-v1"  # bump when the build steps change, to re-key the cache


def default_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt already uses (BOOTED_MIRROR overrides it): the only network booted builds from."""
    files = sorted(sources.glob("sources.list.d/*.sources")) + [sources / "sources.list"]
    files += sorted(sources.glob("sources.list.d/*.list"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"(?m)^(?:URIs:|deb)\s+(?:\[[^\]]*\]\s+)?(https?://\S+/debian)/?\s", text):
            return match.group(1)
    return "http://deb.debian.org/debian"


@dataclass(frozen=True)
class GoldenImage:
    """A built golden image: `lowerdirs` top-first, as overlayfs wants them."""

    key: str
    rootfs: Path
    layer: Path

    @property
    def lowerdirs(self) -> list[Path]:
        return [self.layer, self.rootfs]


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def rootfs_key(mirror: str, extra: tuple[str, ...] = ()) -> str:
    return _digest(SUITE, mirror, " ".join(PACKAGES), " ".join(sorted(set(extra))), STRIP_RECIPE)


def layer_key() -> str:
    files = sorted(p for p in GUEST_DIR.rglob("*") if p.is_file())
    return _digest(LAYER_RECIPE, " ".join(MASKED_UNITS),
                   *(f"{p.relative_to(GUEST_DIR)}:{p.read_bytes().hex()}" for p in files))


def find_golden(cache_dir: Path, mirror: str | None = None, extra: tuple[str, ...] = ()) -> GoldenImage | None:
    """The cached golden image for the current inputs (with `extra` packages), or None if it has to be built."""
    mirror = mirror or default_mirror()
    rootfs = cache_dir / f"rootfs-{rootfs_key(mirror, extra)}"
    layer = cache_dir / f"layer-{layer_key()}"
    if (rootfs / ".booted-complete").exists() and (layer / ".booted-complete").exists():
        return GoldenImage(f"{rootfs.name[7:]}-{layer.name[6:]}", rootfs, layer)
    return None


def ensure_golden(settings: Settings, progress: Callable[[str], None], extra: tuple[str, ...] = ()) -> GoldenImage:
    """The golden image with `extra` packages, built on first use (about a minute, more with packages), then
    reused from the cache by every environment that asks for the same package set."""
    mirror = settings.mirror or default_mirror()
    found = find_golden(settings.cache_dir, mirror, extra)
    if found:
        return found
    with hold(settings.cache_dir / "build.lock", "building the golden image", 3600, progress):
        return find_golden(settings.cache_dir, mirror, extra) or build_golden(settings, progress, mirror, extra)


def build_golden(settings: Settings, progress: Callable[[str], None], mirror: str | None = None,
                 extra: tuple[str, ...] = ()) -> GoldenImage:
    """Build whatever part of the golden image is missing (idempotent; a crashed build is redone)."""
    mirror = mirror or settings.mirror or default_mirror()
    extra = tuple(sorted(set(extra)))
    bad = [p for p in extra if not DEBIAN_PACKAGE.match(p)]
    if bad:
        raise ImageError(f"package name(s) {', '.join(map(repr, bad))}: Debian package names are lowercase "
                         "letters, digits and + . -")
    cache_dir = settings.cache_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    rootfs = cache_dir / f"rootfs-{rootfs_key(mirror, extra)}"
    if not (rootfs / ".booted-complete").exists():
        _build_rootfs(settings, rootfs, mirror, progress, extra)
    else:
        progress(f"golden rootfs cached: {rootfs}")
    layer = cache_dir / f"layer-{layer_key()}"
    if not (layer / ".booted-complete").exists():
        _build_layer(layer)
    image = find_golden(cache_dir, mirror, extra)
    assert image is not None
    return image


def _build_layer(layer: Path) -> None:
    tmp = layer.with_name(layer.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    target = tmp / "usr/lib/booted"
    target.mkdir(parents=True)
    for src in sorted(GUEST_DIR.iterdir()):
        shutil.copy2(src, target / src.name)
        os.chmod(target / src.name, 0o755)
    # qemu boots busybox init (init=/usr/lib/booted/init) with booted's inittab; netns never runs init
    (tmp / "etc").mkdir()
    shutil.copy2(GUEST_DIR / "inittab", tmp / "etc" / "inittab")
    os.chmod(tmp / "etc" / "inittab", 0o644)
    (target / "init").symlink_to("/bin/busybox")
    # systemd images run the boot script as a unit; the package's own sshd (all addresses, no host key) never
    units = tmp / "etc/systemd/system"
    (units / "multi-user.target.wants").mkdir(parents=True)
    shutil.copy2(GUEST_DIR / "booted.service", units / "booted.service")
    os.chmod(units / "booted.service", 0o644)
    (units / "multi-user.target.wants" / "booted.service").symlink_to("/etc/systemd/system/booted.service")
    for unit in MASKED_UNITS:
        (units / unit).symlink_to("/dev/null")
    (tmp / ".booted-complete").write_text("ok\n")
    shutil.rmtree(layer, ignore_errors=True)
    tmp.rename(layer)


def _build_rootfs(settings: Settings, rootfs: Path, mirror: str, progress: Callable[[str], None],
                  extra: tuple[str, ...]) -> None:
    if not settings.is_root:
        raise NeedsRoot("building the golden image runs debootstrap, which needs root: run 'fab image_golden' "
                        "as root once, and point BOOTED_CACHE_DIR at that cache")
    if settings.which("debootstrap") is None:
        raise ToolMissing("debootstrap not found: apt-get install debootstrap (or run setup.sh)")
    tmp = rootfs.with_name(rootfs.name + ".tmp")
    if tmp.exists():
        progress(f"removing an unfinished build: {tmp}")
        shutil.rmtree(tmp)
    progress(f"building golden rootfs ({SUITE}, {len(PACKAGES)} packages"
             + (f" + {' '.join(extra)}" if extra else "") + f") from {mirror}; about a minute")
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(tmp), mirror]
    start = time.monotonic()
    _run_with_progress(cmd, progress, start)
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


def _apt_in_chroot(root: Path, extra: tuple[str, ...], progress: Callable[[str], None], start: float) -> None:
    """apt's package lists (so the lab installs at run time), then the extra packages, with services kept
    from starting in the chroot (policy-rc.d) and proc mounted for maintainer scripts."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    resolv = root / "etc/resolv.conf"
    shutil.copyfile("/etc/resolv.conf", resolv)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        progress(f"[{time.monotonic() - start:5.1f}s] apt-get update (package lists for the lab)")
        _chroot(root, ["apt-get", "update", "-q"], env)
        if extra:
            progress(f"[{time.monotonic() - start:5.1f}s] installing {' '.join(extra)}")
            _chroot(root, ["apt-get", "install", "-y", "-q", "--no-install-recommends", *extra], env)
        _chroot(root, ["apt-get", "clean"], env)
    finally:
        subprocess.run(["umount", str(root / "proc")], check=False)
        policy.unlink(missing_ok=True)
        resolv.write_text("")


def _chroot(root: Path, cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
        raise ImageError(f"{' '.join(cmd[:2])} in the golden image failed (exit {proc.returncode}):\n{tail}")


def _run_with_progress(cmd: list[str], progress: Callable[[str], None], start: float) -> None:
    """Run debootstrap, showing a line per phase and a running count instead of 600 lines."""
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
            phase = PHASES.get(words[1], words[1].lower())
            counts[phase] = counts.get(phase, 0) + 1
            now = time.monotonic()
            if counts[phase] == 1 or now - last > 3:
                last = now
                progress(f"[{now - start:5.1f}s] " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        code = proc.wait()
    if code != 0:
        raise ImageError(f"debootstrap failed (exit {code}); last lines:\n" + "\n".join(tail))


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
