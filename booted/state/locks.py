"""Locks between booted runs (and the monitor daemon): flock(2) on files under the state directory.

One lifecycle operation per lab at a time, one change of a service per environment at a time, one service
operation per host at a time, one nginx change at a time, one golden-image build per cache. A lock is
released by the kernel when its holder exits, even after kill -9, so a crashed run never leaves one behind.
The holder writes "pid N <what>" into the file; a run that has to wait says who it waits for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from booted.errors import StateError


class LockBusy(StateError):
    """Another run held a lock for longer than this run was willing to wait."""


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    pid, _, what = text.partition(" ")
    return f"another booted run (pid {pid}) is {what}" if pid.isdigit() and what else "another booted run holds it"


@contextmanager
def hold(path: Path, what: str, wait: float, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock file `path` while the block runs, waiting up to `wait` seconds for another holder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError:  # a shared read-only cache (another user's): nothing is written there anyway
        yield
        return
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(fd)
                if time.monotonic() >= deadline:
                    raise LockBusy(f"{holder}; try again when it has finished ({path})") from None
                if not told and say is not None:
                    say(f"{holder}: waiting (up to {wait:g}s)")
                    told = True
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


class Locks:
    """The locks of one state directory."""

    def __init__(self, root: Path, say: Callable[[str], None], wait: float) -> None:
        self.root, self.say, self.wait = root, say, wait

    def lab(self, env: str, what: str) -> contextlib.AbstractContextManager[None]:
        return hold(self.root / f"lab-{env}.lock", f"{what} lab {env!r}", self.wait, self.say)

    def lab_busy(self, env: str) -> str | None:
        """Who holds the lab's lifecycle lock right now (None: nobody), without waiting for it."""
        try:
            with hold(self.root / f"lab-{env}.lock", "checking", 0):
                return None
        except LockBusy as exc:
            return str(exc).split(";")[0]

    def host(self, name: str, what: str, wait: float) -> contextlib.AbstractContextManager[None]:
        return hold(self.root / "hosts" / f"{name}.lock", f"running {what} on {name}", wait)

    def service(self, env: str, service: str, what: str) -> contextlib.AbstractContextManager[None]:
        """One run at a time changes what runs of `service` in `env` (deploy, start, stop, rollback)."""
        return hold(self.root / f"service-{env}-{service}.lock", f"{what} in environment {env!r}", self.wait,
                    self.say)

    def nginx(self) -> contextlib.AbstractContextManager[None]:
        return hold(self.root / "nginx.lock", "reconfiguring booted's nginx", self.wait, self.say)
