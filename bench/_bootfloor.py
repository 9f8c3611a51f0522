"""The emulator's floor for bench/boot.py: booted's kernel and initramfs on booted's QEMU machine, booting to an
init that prints one line and powers off: what QEMU, its firmware and the kernel cost alone, timed from
QEMU's exec to that console line.

The command line is booted's own (qemu_cmdline.host_command for a host of a throwaway lab in a temporary
folder: its disk an overlay of the golden disk, its identity files empty, user-mode networking), so the floor
always boots the machine booted boots. Two things differ: the initramfs is booted's with one more cpio archive
appended (the kernel unpacks concatenated archives), /floor-init, which `rdinit=` starts instead of booted's
/init; and there is no control socket. The line is read from the console file, as booted keeps it."""

from __future__ import annotations

import gzip
import ipaddress
import subprocess
import tempfile
import time
from pathlib import Path

from booted.hosts.identity import Identity
from booted.images.initramfs import Cpio
from booted.images.vm_assets import Assets
from booted.providers.lab import Lab
from booted.providers.qemu_cmdline import IDENTITY_FILES, host_command

LINE = b"booted-floor: init reached"
FLOOR_INIT = f"#!/bin/sh\necho '{LINE.decode()}'\npoweroff -f\n"
TIMEOUT = 120.0  # seconds one floor boot may take under software emulation before it counts as failed
HOST = "floor"


def floor_initramfs(initramfs: Path, out: Path) -> Path:
    """booted's initramfs with /floor-init appended."""
    cpio = Cpio()
    cpio.file("floor-init", FLOOR_INIT.encode(), 0o755)
    out.write_bytes(initramfs.read_bytes() + gzip.compress(cpio.finish()))
    return out


def replaced(argv: list[str], option: str, value: str) -> list[str]:
    """`argv` with the value of its one `option` replaced."""
    at = argv.index(option) + 1
    return [*argv[:at], value, *argv[at + 1:]]


def dropped(argv: list[str], option: str) -> list[str]:
    """`argv` without `option` and its value."""
    at = argv.index(option)
    return argv[:at] + argv[at + 2:]


def command(assets: Assets, accel: str, tmp: Path) -> tuple[list[str], Path]:
    """The floor's QEMU command line (booted's, for a host of a lab in `tmp`) and its console file."""
    lab = Lab("floor", "f1f1f1", ipaddress.ip_network("10.0.2.0/24"), tmp / "lab")
    hdir = lab.host_dir(HOST)
    (hdir / "identity").mkdir(parents=True)
    for name in IDENTITY_FILES:
        (hdir / "identity" / name).write_bytes(b"")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(assets.disk), "-F", "raw",
                    str(hdir / "disk.qcow2")], check=True)
    host = Identity(name=HOST, ip="10.0.2.15", prefix=24, gateway="10.0.2.2", mac="52:54:00:12:34:56",
                    boot_url="", login_user="root", pw_hash=None, host_key=hdir / "identity" / IDENTITY_FILES[1],
                    authorized_key="")
    argv = host_command(lab, host, assets, accel, "user,id=n0,restrict=on")
    argv = replaced(argv, "-initrd", str(floor_initramfs(assets.initramfs, tmp / "floor.gz")))
    argv = replaced(argv, "-append", f"{argv[argv.index('-append') + 1]} rdinit=/floor-init")
    return dropped(argv, "-qmp"), hdir / "console.log"


def one_boot(argv: list[str], console: Path) -> float:
    """Seconds from QEMU's exec to the floor's console line (the VM then powers off)."""
    console.unlink(missing_ok=True)
    began = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            seen = console.read_bytes() if console.exists() else b""
            if LINE in seen:
                return time.monotonic() - began
            if time.monotonic() - began > TIMEOUT:
                raise RuntimeError(f"the floor VM printed no {LINE.decode()!r} within {TIMEOUT:.0f}s")
            if proc.poll() is not None and LINE not in (console.read_bytes() if console.exists() else b""):
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"the floor VM ended without {LINE.decode()!r}: {err[-300:]} {seen[-300:]!r}")
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def floor_seconds(assets: Assets, accel: str, runs: int = 3) -> list[float]:
    """`runs` floor boots, one after the other."""
    with tempfile.TemporaryDirectory(prefix="booted-bench-floor-") as tmp:
        argv, console = command(assets, accel, Path(tmp))
        return [one_boot(argv, console) for _ in range(runs)]
