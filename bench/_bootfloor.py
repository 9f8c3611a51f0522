"""The emulator's floor for bench/boot.py: booted's kernel and initramfs on booted's QEMU machine, booting to an
init that prints one line and powers off: what QEMU, its firmware and the kernel cost alone, timed from
QEMU's exec to that console line.

The floor's initramfs is booted's own with one more cpio archive appended (the kernel unpacks concatenated
archives): /floor-init, started by `rdinit=` instead of booted's /init, so nothing else differs. The VM has
booted's machine type, firmware (qboot), memory, kernel arguments, virtio-rng and a virtio NIC (user-mode,
no traffic); no disk (the floor never mounts one)."""

from __future__ import annotations

import gzip
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path

from booted.images.initramfs import Cpio
from booted.providers.qemu_cmdline import KERNEL_ARGS
from booted.providers.qemuctl import QBOOT, QEMU

LINE = b"booted-floor: init reached"
FLOOR_INIT = f"#!/bin/sh\necho '{LINE.decode()}'\npoweroff -f\n"
TIMEOUT = 120.0  # seconds one floor boot may take under software emulation before it counts as failed


def floor_initramfs(initramfs: Path, out: Path) -> Path:
    """booted's initramfs with /floor-init appended."""
    cpio = Cpio()
    cpio.file("floor-init", FLOOR_INIT.encode(), 0o755)
    out.write_bytes(initramfs.read_bytes() + gzip.compress(cpio.finish()))
    return out


def command(vmlinuz: Path, initrd: Path, accel: str) -> list[str]:
    return [QEMU, "-M", "pc", "-accel", accel, *(["-cpu", "host"] if accel == "kvm" else []), "-m", "256",
            "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-bios", QBOOT, "-kernel", str(vmlinuz), "-initrd", str(initrd),
            "-append", f"{KERNEL_ARGS} rdinit=/floor-init",
            "-device", "virtio-rng-pci", "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
            "-serial", "stdio"]


def one_boot(argv: list[str]) -> float:
    """Seconds from QEMU's exec to the floor's console line (the VM then powers off)."""
    began = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    seen, fd = b"", proc.stdout.fileno()
    try:
        while LINE not in seen:
            left = TIMEOUT - (time.monotonic() - began)
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RuntimeError(f"the floor VM printed no {LINE.decode()!r} within {TIMEOUT:.0f}s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the floor VM ended without {LINE.decode()!r}: {seen[-300:]!r}")
            seen += chunk
        return time.monotonic() - began
    finally:
        proc.kill()
        proc.wait(timeout=10)


def floor_seconds(vmlinuz: Path, initramfs: Path, accel: str, runs: int = 3) -> list[float]:
    """`runs` floor boots, one after the other."""
    with tempfile.TemporaryDirectory(prefix="booted-bench-floor-") as tmp:
        argv = command(vmlinuz, floor_initramfs(initramfs, Path(tmp) / "floor.gz"), accel)
        return [one_boot(argv) for _ in range(runs)]
