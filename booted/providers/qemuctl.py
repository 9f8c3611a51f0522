"""Talking to QEMU: which accelerator really works here (cached), QMP commands, a VM's process (checked
before every signal: PIDs get reused), stopping it, and what its logs last said."""

from __future__ import annotations

import array
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from booted.providers.procs import alive, cmdline

QEMU = "qemu-system-x86_64"
QBOOT = "/usr/share/qemu/qboot.rom"
PROBE_SECONDS = 2.0
POWERDOWN_SECONDS = 3.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|[\x00-\x08\x0e-\x1f]")  # a console's screen codes


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


def connect_unix(sock: socket.socket, path: Path) -> None:
    """Connect to the socket at `path`, of any length: AF_UNIX paths end at 107 bytes, so a longer one (a deep
    state directory) is reached through a descriptor of its folder (/proc/self/fd/N/name)."""
    if len(os.fsencode(path)) < 100:
        sock.connect(str(path))
        return
    folder = os.open(path.parent, os.O_PATH)
    try:
        sock.connect(f"/proc/self/fd/{folder}/{path.name}")
    finally:
        os.close(folder)


def qmp(sock_path: Path, *commands: str | dict, timeout: float = 2.0, fd: int | None = None) -> list[dict | None]:
    """Run QMP commands on a VM's control socket (a name, or {"execute": .., "arguments": ..}); one reply per
    command. `fd` is handed to QEMU (SCM_RIGHTS) with each `getfd` command, which names it for later ones."""
    out: list[dict | None] = []
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        connect_unix(sock, sock_path)
        stream = sock.makefile("rwb")
        json.loads(stream.readline())  # greeting
        for cmd in ("qmp_capabilities", *commands):
            line = json.dumps(cmd if isinstance(cmd, dict) else {"execute": cmd}).encode() + b"\n"
            if fd is not None and isinstance(cmd, dict) and cmd.get("execute") == "getfd":
                sock.sendmsg([line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
            else:
                stream.write(line)
                stream.flush()
            while True:
                line = stream.readline()
                if not line:
                    out.append(None)
                    break
                msg = json.loads(line)
                if "return" in msg or "error" in msg:
                    out.append(msg)
                    break
    return out[1:]


def qmp_ok(sock_path: Path, command: str) -> bool:
    """Run one QMP command; whether QEMU answered it with success (False when it cannot be reached)."""
    try:
        reply = qmp(sock_path, command)
    except (OSError, ValueError):
        return False
    return bool(reply and reply[0] and "return" in reply[0])


def is_vm(pid: int, vm: str) -> bool:
    """PID still is the live QEMU of the VM named `vm` (`-name vm`)."""
    argv = cmdline(pid)
    return alive(pid) and "-name" in argv[:-1] and argv[argv.index("-name") + 1] == vm


def signal_vm(vm: str, pid: int, sig: signal.Signals) -> bool:
    """Send `sig` to the VM's QEMU if PID still is it; whether it was sent."""
    if not is_vm(pid, vm):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_vm(vm: str, pid: int, sock_path: Path) -> None:
    """Power button (acpid syncs and powers off), then QMP quit, then SIGTERM, then SIGKILL."""
    steps = [(lambda: qmp_ok(sock_path, "system_powerdown"), POWERDOWN_SECONDS),
             (lambda: qmp_ok(sock_path, "quit"), 2.0),
             (lambda: signal_vm(vm, pid, signal.SIGTERM), 3.0),
             (lambda: signal_vm(vm, pid, signal.SIGKILL), 3.0)]
    for action, wait in steps:
        if not is_vm(pid, vm):
            return
        if not action():
            continue
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.02)


def last_words(hdir: Path) -> str:
    """The last lines QEMU (qemu.log) and the guest (console.log) wrote, screen codes removed."""
    lines: list[str] = []
    for log in ("qemu.log", "console.log"):
        try:
            lines += (hdir / log).read_text(errors="replace").strip().splitlines()[-2:]
        except OSError:
            pass
    text = " / ".join(ANSI.sub("", line).strip() for line in lines if ANSI.sub("", line).strip())
    return text[-400:]
