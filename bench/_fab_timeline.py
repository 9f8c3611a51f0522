"""Wall timeline of one `fab` task run, for bench/fanout.py --profile (a profiling aid, not a benchmark row).

    python bench/_fab_timeline.py OUT.json hello_deploy --version V

Runs Fabric's `fab` program in this process with timing wrappers around booted's phases: Python start-up
(from the process's exec, read from /proc), imports, context, the relist check, plan, packaging and
publishing, the service lock; per host (in the fan-out's threads): the host lock, database writes, SSH
connect, the remote command, the HTTP proof. Writes every interval as JSON: [thread, phase, start, end]
in seconds from exec. The wrappers cost a little time themselves: compare phases, not totals, with the
bench's rows.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


def since_exec() -> float:
    """Seconds since this process was exec'd (its start time in /proc/self/stat against the uptime)."""
    with open("/proc/self/stat") as fh:
        ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as fh:
        uptime = float(fh.read().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


T0 = time.perf_counter() - since_exec()
EVENTS: list[tuple[str, str, float, float]] = []


def record(phase: str, start: float) -> None:
    EVENTS.append((threading.current_thread().name, phase, start - T0, time.perf_counter() - T0))


def timed(owner: Any, name: str, phase: str) -> None:
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record(phase, start)
    setattr(owner, name, wrapper)


def timed_acquire(owner: Any, name: str, phase: str) -> None:
    """A context manager's entry (a lock's wait) as the phase."""
    fn: Callable[..., contextlib.AbstractContextManager[None]] = getattr(owner, name)

    @functools.wraps(fn)
    @contextlib.contextmanager
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[None]:
        start = time.perf_counter()
        with fn(*args, **kwargs):
            record(phase, start)
            yield
    setattr(owner, name, wrapper)


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    EVENTS.append(("MainThread", "python start-up", 0.0, time.perf_counter() - T0))
    start = time.perf_counter()
    import fabric.main
    record("import fabric", start)
    start = time.perf_counter()
    import booted.context
    import booted.remote.deploy as deploy
    import booted.remote.fanout as fanout
    import booted.state.inventory as inventory
    import booted.state.locks as locks
    import fabfile.deploy
    record("import booted (context, remote, state)", start)

    timed(booted.context.Booted, "__init__", "context")
    timed(fabfile.deploy, "_relist", "relist check")
    for name, phase in (("plan", "plan"), ("package", "package release"), ("publish", "publish release"),
                        ("proven", "HTTP proof (GET health)")):
        timed(deploy, name, phase)
    timed(fanout, "run_command", "remote command (SSH exec)")
    timed(fanout.Fleet, "run", "fan-out (all hosts)")
    for name in ("forget_releases", "record_release", "open_deployment", "finish_deployment"):
        timed(inventory.Inventory, name, f"database {name}")
    timed(inventory.Inventory, "__init__", "database open")
    timed(booted.context.Booted, "close", "context close")
    timed_acquire(locks.Locks, "host", "host lock")
    timed_acquire(locks.Locks, "service", "service lock")
    connection = fanout.Fleet.connection

    def connect(fleet: fanout.Fleet, target: fanout.Target) -> Any:
        start = time.perf_counter()
        conn = fleet._conns.get(target.name)
        was_open = conn is not None and conn.is_connected
        conn = connection(fleet, target)
        if not was_open:
            record("SSH connect", start)
        return conn
    fanout.Fleet.connection = connect  # type: ignore[method-assign]

    sys.argv = ["fab", *argv]
    start = time.perf_counter()
    try:
        fabric.main.program.run(exit=False)
    finally:
        record("fab program (parse + task)", start)
        with open(out, "w") as fh:
            json.dump(EVENTS, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
