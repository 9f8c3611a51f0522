"""Talking to QEMU: which accelerator really works here (cached), QMP commands, process checks."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

QEMU = "qemu-system-x86_64"
QBOOT = "/usr/share/qemu/qboot.rom"
PROBE_SECONDS = 2.0


def opt(path: Path | str) -> str:
    """A path inside a QEMU option value: commas are doubled."""
    return str(path).replace(",", ",,")


def qemu_version(qemu: str = QEMU) -> str:
    proc = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.splitlines()[0].strip() if proc.stdout else "unknown"


def probe_kvm(kernel: Path, qemu: str = QEMU, timeout: float | None = None) -> tuple[bool, str]:
    """Boot the real kernel under `-accel kvm -cpu host` until it prints "Linux version" on the serial port.

    A synthetic long-mode probe passes on machines where a real kernel then dies ("failed to set MSR 0x10a",
    "KVM internal error"), so only a real kernel decides. Returns (works, why not).
    """
    cmd = [qemu, "-accel", "kvm", "-cpu", "host", "-M", "pc", "-nodefaults", "-no-user-config", "-display", "none",
           "-bios", QBOOT, "-kernel", str(kernel), "-append", "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1",
           "-m", "128", "-no-reboot", "-serial", "stdio", "-monitor", "none"]
    timeout = PROBE_SECONDS if timeout is None else timeout
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        return False, str(exc)
    assert proc.stdout is not None and proc.stderr is not None
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = proc.stdout.read()
            if chunk:
                buf += chunk
                if b"Linux version" in buf:
                    return True, ""
            if proc.poll() is not None and not chunk:
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
        err = proc.communicate()[1].decode(errors="replace").strip()
    return False, (err.splitlines()[-1] if err else f"no kernel output within {timeout:.0f}s")


def detect_accel(cache_dir: Path, kernel: Path, forced: str = "auto", qemu: str = QEMU, kvm_dev: str = "/dev/kvm"
                 ) -> tuple[str, str]:
    """("kvm" | "tcg", why): KVM when /dev/kvm is usable and a real kernel boots under it, else TCG.

    The verdict is cached in cache_dir, keyed by the QEMU version, the kernel and /dev/kvm's presence;
    `forced` (BOOTED_ACCEL=kvm|tcg) overrides it.
    """
    if forced in ("kvm", "tcg"):
        return forced, "BOOTED_ACCEL"
    if not os.access(kvm_dev, os.R_OK | os.W_OK):
        return "tcg", f"{kvm_dev} is missing or not accessible"
    key = hashlib.sha256(f"{qemu_version(qemu)}\0{kernel.name}\0{kernel.stat().st_size}".encode()).hexdigest()[:12]
    cached = cache_dir / f"accel-{key}"
    try:
        accel, _, why = cached.read_text().strip().partition(" ")
        if accel in ("kvm", "tcg"):
            return accel, f"cached: {why}" if why else "cached"
    except OSError:
        pass
    works, err = probe_kvm(kernel, qemu)
    accel, why = ("kvm", "a kernel boots under KVM") if works else ("tcg", f"KVM fails here: {err}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}")
    tmp.write_text(f"{accel} {why}\n")
    tmp.replace(cached)
    return accel, why


def qmp(sock_path: Path, *commands: str, timeout: float = 2.0) -> list[dict | None]:
    """Run QMP commands (no arguments) on a VM's control socket; one reply per command."""
    out: list[dict | None] = []
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(sock_path))
        f = sock.makefile("rwb")
        json.loads(f.readline())  # greeting
        for cmd in ("qmp_capabilities", *commands):
            f.write(json.dumps({"execute": cmd}).encode() + b"\n")
            f.flush()
            while True:
                line = f.readline()
                if not line:
                    out.append(None)
                    break
                msg = json.loads(line)
                if "return" in msg or "error" in msg:
                    out.append(msg)
                    break
    return out[1:]
