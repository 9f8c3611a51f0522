"""The tiny initramfs VM hosts boot with: static busybox, the virtio/fw_cfg modules Debian's cloud kernel
lacks built in, and an /init that mounts the root disk (/dev/vda, or LABEL=root on a bootable disk) and
switch_roots to init=. initramfs-<key>.gz in the cache dir, a newc cpio written here (no cpio binary),
keyed by the kernel, busybox and this recipe; written as .tmp and renamed, so a crashed build is redone.
"""

from __future__ import annotations

import gzip
import io
import lzma
import stat
import subprocess
from pathlib import Path

from booted.errors import ImageError
from booted.images.building import SYSTEM_PATH, digest, need_tools, tool_path
from booted.images.kernel import Kernel

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


def resolve_modules(kernel: Kernel, modules: tuple[str, ...] = MODULES, path: str = SYSTEM_PATH) -> list[Path]:
    """The .ko files to load for `modules`, dependencies first, each once (modprobe --show-depends)."""
    need_tools(path, "modprobe")
    order: list[Path] = []
    for mod in modules:
        proc = subprocess.run([tool_path("modprobe", path), "-d", str(kernel.root), "-S", kernel.version,
                               "--show-depends", mod], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ImageError(f"kernel {kernel.version} has no module {mod}: {proc.stderr.strip()}")
        for line in proc.stdout.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "insmod" and Path(words[1]) not in order:
                order.append(Path(words[1]))
    return order


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
    busybox_binary = busybox.read_bytes()
    key = digest(kernel.version, busybox_binary, INITRAMFS_INIT, " ".join(MODULES), " ".join(INIT_APPLETS))
    out = cache_dir / f"initramfs-{key}.gz"
    if out.exists():
        return out
    modules = []
    for ko in resolve_modules(kernel, MODULES, path):
        data, name = ko.read_bytes(), ko.name
        if name.endswith(".xz"):
            data, name = lzma.decompress(data), name[:-3]
        modules.append((name, data))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(gzip.compress(initramfs_bytes(busybox_binary, modules), compresslevel=6, mtime=0))
    tmp.rename(out)
    return out
