"""What a qemu host boots from: a Debian cloud kernel, a tiny initramfs and the golden image as a disk.

All three are cached in the cache dir, keyed by their inputs:
- kernel-<package>_<version>/: the unpacked `linux-image-6.1.0-*-cloud-amd64` (apt-get download + dpkg-deb
  -x + depmod), keyed by the exact package version apt resolves for linux-image-cloud-amd64;
- initramfs-<key>.gz: a newc cpio written here (no cpio binary) with static busybox, the virtio/fw_cfg
  modules the cloud kernel lacks built in, and an /init that mounts /dev/vda and switch_roots;
- disk-<golden key>.img: the golden image (layer over rootfs) packed by `mkfs.ext4 -d` (no loop mount).
Every build writes a .tmp and renames it, so a crashed build is redone, never used.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from booted.errors import ImageError, ToolMissing
from booted.images.golden import GoldenImage
from booted.state.locks import hold

KERNEL_META = "linux-image-cloud-amd64"
# loaded by the initramfs in this order after their dependencies; builtins are skipped
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "qemu_fw_cfg", "virtio_rng", "ext4", "button", "evdev")
INIT_APPLETS = ("sh", "mount", "umount", "insmod", "cat", "mkdir", "usleep", "switch_root", "poweroff", "echo",
                "findfs")
INITRAMFS_INIT = r"""#!/bin/sh
# booted initramfs: load virtio + fw_cfg modules, mount root= (/dev/vda, or LABEL=x: a bootable disk), switch_root
# to init= (busybox init).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
root=/dev/vda; label=""; init=/sbin/init
for a in $(cat /proc/cmdline); do
  case "$a" in
    root=/dev/*) root=${a#root=} ;;
    root=LABEL=*) label=${a#root=LABEL=} ;;
    init=*) init=${a#init=} ;;
  esac
done
while read -r m; do insmod "/lib/modules/$m" || echo "initramfs: insmod $m failed"; done < /lib/modules/load.order
n=0
while :; do
  if [ -n "$label" ]; then root=$(findfs "LABEL=$label" 2>/dev/null) || root=/dev/none; fi
  [ -b "$root" ] && break
  n=$((n+1)); [ $n -gt 1000 ] && { echo "initramfs: root $root $label did not appear"; poweroff -f; }
  usleep 10000
done
mkdir -p /newroot
mount -t ext4 -o rw,noatime "$root" /newroot || { echo "initramfs: cannot mount $root"; poweroff -f; }
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot "$init"
"""
Progress = Callable[[str], None]


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:12]


SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # callers pass Settings.path (the user's PATH, then sbin)


def _tool(name: str, path: str) -> str:
    """The full path of a tool (modprobe and mkfs.ext4 live in sbin, which a user's PATH often lacks)."""
    return shutil.which(name, path=path) or name


def _need(path: str, *tools: str) -> None:
    missing = [t for t in tools if shutil.which(t, path=path) is None]
    if missing:
        raise ToolMissing(f"{', '.join(missing)} not found: apt-get install apt dpkg kmod e2fsprogs "
                          "(or run setup.sh)")


# kernel ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kernel:
    root: Path     # the unpacked package
    version: str   # uname -r, e.g. 6.1.0-56-cloud-amd64

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def modules(self) -> Path:
        base = self.root / "lib" / "modules"
        return (base if base.is_dir() else self.root / "usr" / "lib" / "modules") / self.version


def kernel_package() -> tuple[str, str]:
    """(package, version) apt resolves linux-image-cloud-amd64 to, e.g. linux-image-6.1.0-56-cloud-amd64."""
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", KERNEL_META], capture_output=True,
                         text=True, check=False).stdout
    match = re.search(r"^Depends:.*?\b(linux-image-\d[^\s,(]*-cloud-amd64)\s*\(=\s*([^)]+)\)", out, re.M)
    if not match:
        raise ImageError(f"apt does not know {KERNEL_META}: run apt-get update (needs the Debian mirror)")
    return match.group(1), match.group(2).strip()


def _unpacked(root: Path) -> Kernel:
    base = root / "lib" / "modules"
    base = base if base.is_dir() else root / "usr" / "lib" / "modules"
    versions = sorted(p.name for p in base.iterdir() if p.is_dir())
    if len(versions) != 1:
        raise ImageError(f"expected one kernel under {base}, found {versions}")
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
    _need(path, "apt-get", "dpkg-deb", "depmod")
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


def resolve_modules(kernel: Kernel, modules: tuple[str, ...] = MODULES, path: str = SYSTEM_PATH) -> list[Path]:
    """The .ko files to load for `modules`, dependencies first, each once (modprobe --show-depends)."""
    _need(path, "modprobe")
    order: list[Path] = []
    for mod in modules:
        proc = subprocess.run([_tool("modprobe", path), "-d", str(kernel.root), "-S", kernel.version,
                               "--show-depends", mod], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ImageError(f"kernel {kernel.version} has no module {mod}: {proc.stderr.strip()}")
        for line in proc.stdout.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "insmod" and Path(words[1]) not in order:
                order.append(Path(words[1]))
    return order


# initramfs ---------------------------------------------------------------------------------------
class Cpio:
    """A newc ("070701") cpio archive writer: what the kernel unpacks as an initramfs."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1, rdev: tuple[int, int] = (0, 0)
               ) -> None:
        self.ino += 1
        raw = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
        self.buf.write(b"\0" * (-self.buf.tell() % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self.buf.write(b"\0" * (-self.buf.tell() % 512))
        return self.buf.getvalue()


def initramfs_bytes(busybox: bytes, modules: list[tuple[str, bytes]]) -> bytes:
    """The uncompressed cpio: busybox + applet links, modules + load.order, /init."""
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", busybox, 0o755)
    for applet in INIT_APPLETS:
        cpio.symlink(f"bin/{applet}", "busybox")
    for name, data in modules:
        cpio.file(f"lib/modules/{name}", data)
    cpio.file("lib/modules/load.order", "".join(f"{n}\n" for n, _ in modules).encode())
    cpio.file("init", INITRAMFS_INIT.encode(), 0o755)
    return cpio.finish()


def build_initramfs(cache_dir: Path, kernel: Kernel, busybox: Path, path: str = SYSTEM_PATH) -> Path:
    """initramfs-<key>.gz for this kernel and busybox (the golden rootfs' static one), built once."""
    bb = busybox.read_bytes()
    key = digest(kernel.version, bb, INITRAMFS_INIT, " ".join(MODULES), " ".join(INIT_APPLETS))
    out = cache_dir / f"initramfs-{key}.gz"
    if out.exists():
        return out
    kos = resolve_modules(kernel, MODULES, path)
    modules = []
    for ko in kos:
        data, name = ko.read_bytes(), ko.name
        if name.endswith(".xz"):
            data, name = lzma.decompress(data), name[:-3]
        modules.append((name, data))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(gzip.compress(initramfs_bytes(bb, modules), compresslevel=6, mtime=0))
    tmp.rename(out)
    return out


# disk image --------------------------------------------------------------------------------------
def _size_for(rootfs: Path) -> int:
    """Apparent size of the tree, doubled plus 512 MiB of room, at least 1 GiB (the file is sparse)."""
    proc = subprocess.run(["du", "-sb", str(rootfs)], capture_output=True, text=True, check=False)
    used = int(proc.stdout.split()[0]) if proc.returncode == 0 and proc.stdout else 512 << 20
    return max(1 << 30, (2 * used + (512 << 20) + (1 << 20) - 1) // (1 << 20) * (1 << 20))


def base_image(cache_dir: Path, golden: GoldenImage, progress: Progress | None = None,
               path: str = SYSTEM_PATH) -> Path:
    """disk-<golden key>.img: the golden image's layer over its rootfs as one ext4 raw disk, built once.

    The rootfs is hard-linked into a staging dir (same filesystem as the cache: instant, nothing copied),
    the layer copied over it with --remove-destination (replaces links, never the rootfs' files), then
    `mkfs.ext4 -d` packs the staging dir.
    """
    say = progress or (lambda line: None)
    out = cache_dir / f"disk-{golden.key}.img"
    if out.exists():
        return out
    _need(path, "mkfs.ext4", "cp")
    start = time.monotonic()
    say(f"packing the golden image into a disk: {out.name}")
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    stage = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".stage-"))
    try:
        link = subprocess.run(["cp", "-al", f"{golden.rootfs}/.", str(stage)], capture_output=True, text=True,
                              check=False)
        if link.returncode != 0:  # another filesystem: a real copy
            shutil.rmtree(stage)
            stage.mkdir()
            subprocess.run(["cp", "-a", f"{golden.rootfs}/.", str(stage)], check=True)
        subprocess.run(["cp", "-a", "--remove-destination", f"{golden.layer}/.", str(stage)], check=True)
        (stage / ".booted-complete").unlink(missing_ok=True)
        size = _size_for(golden.rootfs)
        mkfs = subprocess.run([_tool("mkfs.ext4", path), "-q", "-F", "-L", "root",
                               "-E", "lazy_itable_init=0,lazy_journal_init=0",
                               "-d", str(stage), str(tmp), str(size // 1024) + "k"],
                              capture_output=True, text=True, check=False)
        if mkfs.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise ImageError(f"mkfs.ext4 -d {stage} failed: {mkfs.stderr.strip()[-400:]}")
        tmp.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    say(f"[{time.monotonic() - start:5.1f}s] disk image ready ({size >> 20} MiB, sparse)")
    return out


@dataclass(frozen=True)
class Assets:
    kernel: Kernel
    initramfs: Path
    disk: Path


def ensure_assets(cache_dir: Path, golden: GoldenImage, progress: Progress, path: str = SYSTEM_PATH) -> Assets:
    """Kernel, initramfs and base disk for `golden`, each built only when missing (one builder at a time)."""
    with hold(cache_dir / "build.lock", "building the VM disk assets", 3600, progress):
        return _ensure_assets(cache_dir, golden, progress, path)


def _ensure_assets(cache_dir: Path, golden: GoldenImage, progress: Progress, path: str) -> Assets:
    kernel = fetch_kernel(cache_dir, progress, path)
    busybox = golden.rootfs / "usr" / "bin" / "busybox"
    if not busybox.exists():
        busybox = golden.rootfs / "bin" / "busybox"
    initramfs = build_initramfs(cache_dir, kernel, busybox, path)
    return Assets(kernel, initramfs, base_image(cache_dir, golden, progress, path))
