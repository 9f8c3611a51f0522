"""Reading /proc: which processes run, what they run, whether they are alive. Providers find their
hosts' handle processes (VMs, namespace inits) this way, and check a PID again before every signal."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def cmdline(pid: int) -> list[str]:
    """argv of a process ([] when it is gone or not readable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:  # open(), not Path: called for every process of the machine
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def from_pidfile(pidfile: Path, *marks: str) -> int | None:
    """The PID in `pidfile` if that process is alive and its argv contains every one of `marks` (so a reused
    PID, or another user's instance of the same program, is never taken for ours)."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    argv = " ".join(cmdline(pid))
    return pid if alive(pid) and all(m in argv for m in marks) else None


def processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every process readable in /proc (alive or not: check with alive() before use)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            argv = cmdline(int(entry.name))
            if argv and argv[0]:
                yield int(entry.name), argv
