"""The daemon as a process: one per environment (a flock, released even after kill -9), started in the
background with its log under the state directory, stopped with SIGTERM (it finishes the action it is in)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from booted.errors import StateError
from booted.monitor.statusfile import status_file
from booted.providers.procs import alive, from_pidfile
from booted.state.locks import LockBusy, hold

if TYPE_CHECKING:
    from booted.context import Booted


def files(ctx: Booted, env: str) -> tuple[Path, Path]:
    """(lock file, log file) of an environment's monitor."""
    root = ctx.settings.state_dir / "monitor"
    return root / f"{env}.lock", root / f"{env}.log"


def running(ctx: Booted, env: str) -> int | None:
    """The PID of the environment's monitor, if one runs."""
    return from_pidfile(files(ctx, env)[0], "monitor")  # the lock file is per environment


def password_from(stream: IO[str]) -> str | None:
    """The password monitor_start hands its daemon on stdin (one line), or None."""
    return stream.readline().rstrip("\n") or None


def foreground(ctx: Booted, env: str) -> None:
    """Run the monitor here until SIGTERM or Ctrl-C; a second monitor of the same environment is refused."""
    from booted.monitor.daemon import Monitor

    lock, _ = files(ctx, env)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with hold(lock, f"monitoring lab {env!r} (monitor)", 0):
            try:
                Monitor(ctx, env).run(stop)
            except KeyboardInterrupt:
                pass
            ctx.say(f"monitor: {env} stopped")
    except LockBusy:
        raise StateError(f"the monitor of {env!r} already runs (pid {running(ctx, env)}): "
                         f"fab monitor_stop --env {env}") from None


START_SECONDS = 30.0  # the daemon's Python start, its lock and its API, on a busy machine


def start(ctx: Booted, env: str) -> int:
    """Start the monitor in the background; its PID, once it holds its lock and its API listens (the URL file
    it writes then: a stopped daemon's is removed first, so the file named is the new daemon's)."""
    pid = running(ctx, env)
    if pid:
        raise StateError(f"the monitor of {env!r} already runs (pid {pid}); its log: {files(ctx, env)[1]}")
    log = files(ctx, env)[1]
    log.parent.mkdir(parents=True, exist_ok=True)
    url = status_file(ctx.settings.state_dir, env).with_suffix(".url")
    url.unlink(missing_ok=True)
    password = ctx.settings.password
    with open(log, "ab") as out:  # booted's clean environment; the password (if any) on stdin, read at start
        proc = subprocess.Popen([sys.executable, "-m", "fabric", "monitor", "--env", env,
                                 *(["--password-stdin"] if password else [])],
                                cwd=ctx.settings.project_root, env=ctx.settings.daemon_env(),
                                stdin=subprocess.PIPE if password else subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    if password and proc.stdin is not None:
        try:
            proc.stdin.write(password.encode() + b"\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it ended already: said below
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if running(ctx, env) == proc.pid and url.exists() and url.stat().st_size:
            return proc.pid
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise StateError(f"the monitor of {env!r} did not start: {' / '.join(tail)}")
        time.sleep(0.05)
    raise StateError(f"the monitor of {env!r} (pid {proc.pid}) took no lock or opened no API within "
                     f"{START_SECONDS:g}s; see {log}")


def stop(ctx: Booted, env: str, wait: float = 60.0) -> int | None:
    """SIGTERM the monitor (it ends after its current action), SIGKILL after `wait`; the PID it had."""
    pid = running(ctx, env)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    return pid
