"""Reading /proc: what a PID runs and whether it is alive. Providers check both before any signal."""

from __future__ import annotations

from pathlib import Path


def cmdline(pid: int) -> list[str]:
    """argv of a process ([] when it is gone or not readable)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
