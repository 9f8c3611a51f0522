"""A bootable golden disk, for hypervisors that boot from a disk rather than a kernel QEMU hands in
(VirtualBox, libvirt's disk boot): an MBR partition table (syslinux's mbr.bin), one bootable partition at
1 MiB holding the golden image's ext4 file system, with the kernel, booted's initramfs and extlinux (from
Debian's extlinux package) in /boot. The initramfs finds its root by label (root=LABEL=root), so the disk
boots on any disk controller the kernel drives. Built once per (base disk, kernel, initramfs, init) and
converted with qemu-img to the formats other hypervisors take (qcow2, vdi, vmdk).

A host's identity then comes from its seed disk (hosts/seed.py) instead of fw_cfg."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from booted.errors import ImageError, ToolMissing
from booted.images.building import Progress, digest
from booted.images.vm_assets import Assets
from booted.state.locks import hold

MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
RECIPE = "bootdisk-v1"
OFFSET = 1 << 20  # the partition starts at 1 MiB (sector 2048)
FORMATS = {"raw": "raw", "qcow2": "qcow2", "vdi": "vdi", "vmdk": "vmdk"}
# the last console= is /dev/console: the serial port, which booted logs (image_console)
KERNEL_ARGS = ("console=tty0 console=ttyS0 quiet panic=1 net.ifnames=0 nowatchdog cryptomgr.notests "
               "root=LABEL=root")
EXTLINUX_CONF = """\
# written by booted (images/bootdisk.py)
DEFAULT booted
PROMPT 0
TIMEOUT 0
LABEL booted
  KERNEL /boot/vmlinuz
  INITRD /boot/initramfs.gz
  APPEND {args} {init}
"""


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ImageError(f"{what} failed: {(proc.stderr or proc.stdout).strip()[-400:]}")


def ensure_bootdisk(cache_dir: Path, assets: Assets, init: str, progress: Progress, path: str,
                    fmt: str = "raw") -> Path:
    """bootdisk-<key>.<fmt>: the bootable disk of `assets` booting `init` (a kernel argument such as
    init=/usr/lib/booted/init), built once (one builder at a time)."""
    if fmt not in FORMATS:
        raise ImageError(f"disk format {fmt!r}: one of {', '.join(FORMATS)}")
    missing = [t for t in ("extlinux", "sfdisk", "mount", "umount", "qemu-img") if shutil.which(t, path=path) is None]
    if missing or not MBR.exists():
        raise ToolMissing(f"{', '.join(missing) or MBR} not found: apt-get install extlinux syslinux-common fdisk "
                          "qemu-utils (or run setup.sh)")
    key = digest(RECIPE, assets.disk.name, assets.kernel.version, assets.initramfs.name, init, KERNEL_ARGS)
    raw = cache_dir / f"bootdisk-{key}.raw"
    with hold(cache_dir / "build.lock", "building the bootable disk", 3600, progress):
        if not raw.exists():
            _build(raw, assets, init, progress, path)
        if fmt == "raw":
            return raw
        out = raw.with_suffix(f".{fmt}")
        if not out.exists():
            tmp = out.with_name(f".{out.name}.{os.getpid()}")
            _run([shutil.which("qemu-img", path=path) or "qemu-img", "convert", "-q", "-f", "raw", "-O",
                  FORMATS[fmt], str(raw), str(tmp)], f"qemu-img convert to {fmt}")
            tmp.rename(out)
        return out


def _build(out: Path, assets: Assets, init: str, progress: Progress, path: str) -> None:
    start = time.monotonic()
    progress(f"building the bootable disk {out.name} (extlinux)")
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=".bootdisk-"))
    fs, mnt, tmp = work / "fs.img", work / "mnt", work / "disk.raw"
    try:
        _run(["cp", "--sparse=always", str(assets.disk), str(fs)], "copying the base disk")
        mnt.mkdir()
        _run(["mount", "-o", "loop", str(fs), str(mnt)], f"mount -o loop {fs}")
        try:
            boot = mnt / "boot"
            (boot / "extlinux").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(assets.kernel.vmlinuz, boot / "vmlinuz")
            shutil.copyfile(assets.initramfs, boot / "initramfs.gz")
            (boot / "extlinux" / "extlinux.conf").write_text(EXTLINUX_CONF.format(args=KERNEL_ARGS, init=init))
            _run([shutil.which("extlinux", path=path) or "extlinux", "--install", str(boot / "extlinux")],
                 "extlinux --install")
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True, check=False)
        size = fs.stat().st_size
        with open(tmp, "wb") as disk:
            disk.truncate(OFFSET + size)
            disk.write(MBR.read_bytes()[:440])  # boot code only: the partition table follows
        sfdisk = subprocess.run([shutil.which("sfdisk", path=path) or "sfdisk", "-q", str(tmp)],
                                input=f"start={OFFSET // 512}, type=83, bootable\n", capture_output=True, text=True,
                                check=False)
        if sfdisk.returncode != 0:
            raise ImageError(f"sfdisk failed: {sfdisk.stderr.strip()[-400:]}")
        _run(["dd", f"if={fs}", f"of={tmp}", "bs=1M", f"seek={OFFSET >> 20}", "conv=notrunc,sparse",
              "status=none"], "writing the partition")
        tmp.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress(f"[{time.monotonic() - start:5.1f}s] bootable disk ready ({(OFFSET + size) >> 20} MiB, sparse)")
