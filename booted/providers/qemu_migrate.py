"""A QEMU's whole state into a file and back, through QMP and QEMU's migration (QEMU 7.2: no `file:`
migration, so the file's descriptor is handed over: `getfd` + `fd:` out, `-incoming fd:N` in), and a paused
VM resumed safely. Used by qemu_snapshot.py."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from booted.providers.qemuctl import qmp

MIGRATE_SECONDS = 300.0
LAUNCH_SECONDS = 10.0
BANDWIDTH = 2**40  # bytes/s a migration may take: no limit (a paused VM's RAM into a local file)
FDNAME = "booted-snapshot"  # the name the migration's file descriptor gets in QEMU (getfd)
MOVING = ("setup", "active", "cancelling", "device", "pre-switchover", "wait-unplug")  # a migration under way


def command(sock: Path, *commands: str | dict, timeout: float = 5.0, fd: int | None = None) -> str:
    """Run QMP commands (`fd` handed over with a `getfd`): "" when QEMU answered each with success, else
    what went wrong first."""
    try:
        replies = qmp(sock, *commands, timeout=timeout, fd=fd)
    except (OSError, ValueError) as exc:
        return f"QMP: {exc}"
    for reply in replies:
        if reply is None:
            return "QMP: no reply"
        if "return" not in reply:
            return f"QMP: {reply.get('error', {}).get('desc', reply)}"
    return ""


def as_started(argv: list[str]) -> list[str]:
    """A VM's command line as its host was started: without the `-incoming` of a VM that was itself
    continued from a snapshot, nor /proc's empty last word (it would be a disk image)."""
    out: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "-incoming":
            next(words, None)
        else:
            out.append(word)
    while out and not out[-1]:
        out.pop()
    return out


def migrate_to(sock: Path, path: Path) -> str:
    """Migrate a paused VM into the file `path`, which QEMU writes itself (no pipe, no `cat`), at full speed
    (QEMU's default limit, 128 MiB/s, was most of the pause: about 0.8 s for a 256 MB VM, 0.1 s without),
    until done: "" or the error."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror}"
    try:
        error = command(sock, {"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": BANDWIDTH}},
                        {"execute": "getfd", "arguments": {"fdname": FDNAME}},
                        {"execute": "migrate", "arguments": {"uri": f"fd:{FDNAME}"}}, fd=fd)
    finally:
        os.close(fd)
    return error or _migrated(sock, MIGRATE_SECONDS)


def _migrated(sock: Path, timeout: float) -> str:
    """Poll query-migrate until the migration is done: "" or the error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = qmp(sock, "query-migrate", timeout=5.0)[0] or {}
        except (OSError, ValueError) as exc:
            return f"QMP: {exc}"
        status = reply.get("return", {}).get("status", "")
        if status == "completed":
            return ""
        if status in ("failed", "cancelled"):
            return f"migration {status}: {reply['return'].get('error-desc', '')}"
        time.sleep(0.02)
    return f"migration not finished after {timeout:.0f}s"


def incoming(argv: list[str], stream: int) -> list[str]:
    """The command line that starts a VM from the migration stream open as descriptor `stream` (QEMU reads it
    as it starts: no QMP round trip first, and it exits if the stream is bad)."""
    return [*as_started(argv), "-incoming", f"fd:{stream}"]


def loaded(proc: subprocess.Popen, sock: Path) -> str:
    """Wait until a QEMU started with `incoming` has read its stream (its status leaves `inmigrate`; QMP does
    not answer while it reads a file): "" or what went wrong. It loads paused, as it was saved."""
    log = sock.parent / "qemu.log"
    deadline = time.monotonic() + LAUNCH_SECONDS + MIGRATE_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"QEMU exited with {proc.returncode}: {log.read_text(errors='replace')[-300:]}"
        try:
            status, migration = qmp(sock, "query-status", "query-migrate", timeout=5.0)
        except (OSError, ValueError):  # not listening yet, or busy reading
            status = migration = None
        if status and status.get("return", {}).get("status", "inmigrate") != "inmigrate":
            state = (migration or {}).get("return", {}).get("status")
            return "" if state == "completed" else f"its memory was not loaded (migration {state})"
        time.sleep(0.02)
    return f"its memory was not loaded after {MIGRATE_SECONDS:.0f}s"


def resume(sock: Path) -> str:
    """`cont` (a running VM ignores it), after cancelling a migration still under way: a `cont` during one
    runs the VM until the migration completes, which then leaves it stopped (`postmigrate`)."""
    try:
        [_, moving] = qmp(sock, "migrate_cancel", "query-migrate", timeout=5.0)
    except (OSError, ValueError) as exc:
        return f"QMP: {exc}"
    deadline = time.monotonic() + 30.0
    while (moving or {}).get("return", {}).get("status") in MOVING and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            moving = qmp(sock, "query-migrate", timeout=5.0)[0]
        except (OSError, ValueError) as exc:
            return f"QMP: {exc}"
    return command(sock, "cont")
