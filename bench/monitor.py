"""Monitor benchmark (netns): heal time and failed requests when a worker dies under load, time from a load
step to the new workers serving, and scale-down timing.

    sudo .venv/bin/python bench/monitor.py

An lb in front of a pool of 4 hello workers (min 2, max 4, target 10 req/s per worker, a pass every second,
a 10 s window), the monitor as `fab monitor_start`. A load generator (the lb's lab address only) runs at a
bounded rate; its failures are counted. Times are read from the daemon's status file (a pass per second).
Always stops what it started. Last line: `heal_s=.. failed_requests=.. scaleup_s=.. scaledown_s=..`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import _benchlib as lib
from _benchlib import BenchError, run_in_tmp, say

from booted.config import Settings
from booted.context import Booted

ENV = '''ENVIRONMENTS = {"bm": {"provider": "netns", "network": "10.213.238.0/24", "hosts": {
    "lb01": {"role": "lb", "service": "lb", "version": "1.0"},
    "web[01:04]": {"role": "worker", "service": "hello", "version": "1.0"}},
    "min": {"lb": 1, "worker": 2}, "max": {"worker": 4}, "target": {"worker": 10},
    "monitor": {"interval": 1, "window": 10}}}
'''
LB = "http://10.213.238.2:8080/"


class Load(threading.Thread):
    def __init__(self, rate: float) -> None:
        super().__init__(daemon=True)
        self.rate, self.ok, self.failed, self.stop = rate, 0, 0, threading.Event()

    def run(self) -> None:
        due = time.monotonic()
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(LB, timeout=3) as resp:
                    resp.read()
                self.ok += 1
            except OSError:
                self.failed += 1
            due += 1 / self.rate
            time.sleep(max(0.0, due - time.monotonic()))


def healthy(status: Path) -> list[str]:
    try:
        return list(json.loads(status.read_text())["roles"]["worker"]["healthy"])
    except (OSError, ValueError, KeyError):
        return []


def until(what: str, check: object, timeout: float = 60) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.1)
    raise BenchError(f"not within {timeout}s: {what}")


def run(tmp: Path) -> int:
    (tmp / "environments.py").write_text(ENV)
    env = lib.booted_env(tmp / "state", tmp / "environments.py")
    status = tmp / "state" / "monitor" / "bm.json"
    ctx = Booted(Settings.from_env(env), say=lambda line: None)
    try:
        lib.timed([lib.FAB, "env_start_min"], env=env)
        lib.timed([lib.FAB, "monitor_start"], env=env)
        until("the first pass", lambda: len(healthy(status)) == 2)
        load = Load(8)
        load.start()
        time.sleep(2)
        killed = time.time()
        os.kill(ctx.lab().running()["web02"], signal.SIGKILL)

        def healed() -> list[dict[str, object]]:  # the monitor's own record: when its action on web02 ended
            return [a for a in ctx.inventory.actions("bm") if a["host"] == "web02" and a["status"] == "done"
                    and float(a["started"]) >= killed]  # type: ignore[arg-type]
        until("web02 healed", healed)
        action = healed()[-1]
        seen = float(action["started"]) - killed  # type: ignore[arg-type]
        heal = float(action["finished"]) - killed  # type: ignore[arg-type]
        time.sleep(2)
        load.stop.set()
        load.join()
        say(f"heal: {heal:.1f}s after the kill (seen down after {seen:.1f}s), requests ok {load.ok}, "
            f"failed {load.failed}")
        step = Load(35)
        step.start()
        scaleup = until("4 workers", lambda: len(healthy(status)) == 4)
        time.sleep(2)
        step.stop.set()
        step.join()
        say(f"scale-up: {scaleup:.1f}s after the load step; requests failed during it: {step.failed}")
        scaledown = until("back to 2 workers", lambda: len(healthy(status)) == 2, timeout=90)
        say(f"scale-down: {scaledown:.1f}s after the load ended (window 10 s)")
    finally:
        lib.timed([lib.FAB, "env_stop"], env=env, check=False)
        ctx.close()
    print(lib.machine())
    print(lib.table(["measurement", "value"], [
        ("a worker killed under 8 req/s: the monitor acts after", f"{seen:.1f} s"),
        ("... and the worker serves again (booted, deployed, tested) after", f"{heal:.1f} s"),
        ("requests failed during the heal (of those sent)", f"{load.failed} of {load.ok + load.failed}"),
        ("load step 8 -> 35 req/s (target 10/worker): 4 workers healthy after", f"{scaleup:.1f} s"),
        ("requests failed during the scale-up", f"{step.failed} of {step.ok + step.failed}"),
        ("load ended: back to 2 workers after (window 10 s)", f"{scaledown:.1f} s"),
    ]))
    print(f"heal_s={heal:.1f} failed_requests={load.failed + step.failed} scaleup_s={scaleup:.1f} "
          f"scaledown_s={scaledown:.1f}")
    return 0


def main() -> int:
    if os.geteuid() != 0:
        print("bench/monitor.py needs root (netns hosts)", file=sys.stderr)
        return 2
    return run_in_tmp("monitor", run)


if __name__ == "__main__":
    sys.exit(main())
