"""Monitor benchmark (netns, or qemu VMs): heal time and failed requests when a worker dies under load, time
from a load step to the new workers serving, and scale-down timing.

    sudo .venv/bin/python bench/monitor.py                    # netns hosts, ~1 min
    sudo .venv/bin/python bench/monitor.py --provider qemu    # qemu VMs (TCG here), ~5 min
    sudo .venv/bin/python bench/monitor.py --warm 1           # with a warm pool (bench/_warmpool.py)

An lb in front of a pool of 4 hello workers (min 2, max 4, target 10 req/s per worker, a pass every second,
a 10 s window), the monitor as `fab monitor_start`. A load generator (the lb's lab address only) runs at a
bounded rate; its failures are counted. Times are read from the daemon's status file (a pass per second).
Always stops what it started. Last line: `heal_s=.. failed_requests=.. scaleup_s=.. scaledown_s=..`; with
`--warm N` (N paused workers; the scale-up is `min` raised by one; load on netns only; on networks of their
own; then the cold path in the same lab and run, `warm` set to 0, on the line before:
`cold: heal_s=.. scaleup_s=..`) `heal_s=.. failed_requests=.. scaleup_s=..`. On a loaded machine give TCG
boots more time: BOOTED_BOOT_TIMEOUT=180.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import _benchlib as lib
import _warmpool as warmpool
from _benchlib import BenchError, run_in_tmp, say

from booted.config import Settings
from booted.context import Booted

ENV = '''ENVIRONMENTS = {"bm": {"provider": "PROVIDER", "network": "10.213.NET.0/24", "hosts": {
    "lb01": {"role": "lb", "service": "lb", "version": "1.0"},
    "web[01:04]": {"role": "worker", "service": "hello", "version": "1.0"}},
    "min": {"lb": 1, "worker": 2}, "max": {"worker": 4}, "target": {"worker": 10},
    "monitor": {"interval": 1, "window": 10}}}
'''
NETWORKS = {"netns": "238", "qemu": "237"}
WARM_NETWORKS = {"netns": "186", "qemu": "187"}


class Load(threading.Thread):
    def __init__(self, url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.rate, self.ok, self.failed, self.stop = url, rate, 0, 0, threading.Event()

    def run(self) -> None:
        due = time.monotonic()
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as resp:
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


def run_warm(tmp: Path, provider: str, count: int) -> int:
    envfile = tmp / "environments.py"
    net = WARM_NETWORKS[provider]
    envfile.write_text(ENV.replace("PROVIDER", provider).replace("NET", net).replace(
        '"monitor"', f'"warm": {{"worker": {count}}}, "monitor"').replace(  # kills are seen by their process:
        '"window": 10}', '"window": 10, "failures": 10}'))  # a TCG lb's slow check on a loaded machine is no heal
    slow = 1 if provider == "netns" else 6
    env = lib.booted_env(tmp / "state", envfile)
    ctx = Booted(Settings.from_env(env), say=lambda line: None)
    load = Load(f"http://10.213.{net}.2:8080/", 8) if provider == "netns" else None  # no load to VMs
    try:
        lib.timed([lib.FAB, "env_start_min"], env=env)
        lib.timed([lib.FAB, "monitor_start"], env=env)
        until("the first pass", lambda: len(healthy(tmp / "state" / "monitor" / "bm.json")) == 2, timeout=60 * slow)
        if load is not None:
            load.start()
            time.sleep(2)
        status = tmp / "state" / "monitor" / "bm.json"
        out = warmpool.measure(ctx, "bm", envfile, status, count, load, until, slow)
        out.update(warmpool.cold(ctx, "bm", envfile, status, until, slow))
    finally:
        if load is not None and load.is_alive():
            load.stop.set()
            load.join()
        lib.timed([lib.FAB, "env_stop"], env=env, check=False)
        ctx.close()
    failed = load.failed if load is not None else 0
    print(lib.machine())
    print(lib.table(["measurement", f"warm pool of {count}", "cold (warm 0, same run)"], [
        ("a worker killed (-9) -> the role back at its healthy count", f"{out['heal_s']:.2f} s",
         f"{out['cold_heal_s']:.2f} s"),
        ("... of which the monitor seeing it (a pass, or its watch between passes)", f"{out['seen_s']:.2f} s", ""),
        ("requests failed during the heal (of those sent)", "no load (VMs)" if load is None
         else f"{load.failed} of {load.ok + load.failed}", ""),
        ("min raised by one in environments.py -> the new worker serves", f"{out['scaleup_s']:.2f} s",
         f"{out['cold_scaleup_s']:.2f} s"),
        ("PSS of a paused host's processes / of a serving one", f"{out['pss_paused_mib']:.1f} MiB / "
                                                                f"{out['pss_serving_mib']:.1f} MiB", ""),
    ]))
    print(f"cold: heal_s={out['cold_heal_s']:.2f} scaleup_s={out['cold_scaleup_s']:.2f}")
    print(f"heal_s={out['heal_s']:.2f} failed_requests={failed} scaleup_s={out['scaleup_s']:.2f}")
    return 0


def run(tmp: Path, provider: str) -> int:
    (tmp / "environments.py").write_text(ENV.replace("PROVIDER", provider).replace("NET", NETWORKS[provider]))
    lb = f"http://10.213.{NETWORKS[provider]}.2:8080/"
    slow = 1 if provider == "netns" else 6  # qemu VMs boot under TCG here: longer waits
    env = lib.booted_env(tmp / "state", tmp / "environments.py")
    status = tmp / "state" / "monitor" / "bm.json"
    ctx = Booted(Settings.from_env(env), say=lambda line: None)
    try:
        lib.timed([lib.FAB, "env_start_min"], env=env)
        lib.timed([lib.FAB, "monitor_start"], env=env)
        until("the first pass", lambda: len(healthy(status)) == 2, timeout=60 * slow)
        load = Load(lb, 8)
        load.start()
        time.sleep(2)
        killed = time.time()
        os.kill(ctx.lab().running()["web02"], signal.SIGKILL)

        def healed() -> list[dict[str, object]]:  # the monitor's own record: when its action on web02 ended
            return [a for a in ctx.inventory.actions("bm") if a["host"] == "web02" and a["status"] == "done"
                    and float(a["started"]) >= killed]  # type: ignore[arg-type]
        until("web02 healed", healed, timeout=60 * slow)
        action = healed()[-1]
        seen = float(action["started"]) - killed  # type: ignore[arg-type]
        heal = float(action["finished"]) - killed  # type: ignore[arg-type]
        booted = re.search(r"booted in ([0-9.]+)s", str(action["detail"]))
        boot = float(booted.group(1)) if booted else float("nan")
        time.sleep(2)
        load.stop.set()
        load.join()
        say(f"heal: {heal:.1f}s after the kill (seen down after {seen:.1f}s), requests ok {load.ok}, "
            f"failed {load.failed}")
        step = Load(lb, 35)
        step.start()
        scaleup = until("4 workers", lambda: len(healthy(status)) == 4, timeout=60 * slow)
        time.sleep(2)
        step.stop.set()
        step.join()
        say(f"scale-up: {scaleup:.1f}s after the load step; requests failed during it: {step.failed}")
        low = Load(lb, 3)  # a trickle below the target while the pool shrinks: the lb drops no request
        low.start()
        scaledown = until("back to 2 workers", lambda: len(healthy(status)) == 2, timeout=90 * slow)
        time.sleep(2)
        low.stop.set()
        low.join()
        say(f"scale-down: {scaledown:.1f}s after the load ended (window 10 s); requests failed: {low.failed}")
    finally:
        lib.timed([lib.FAB, "env_stop"], env=env, check=False)
        ctx.close()
    print(lib.machine())
    print(lib.table(["measurement", "value"], [
        ("a worker killed under 8 req/s: the monitor acts after", f"{seen:.1f} s"),
        ("... and the worker serves again (booted, deployed, tested) after", f"{heal:.1f} s"),
        ("... of which booting it (start to its boot-log call)", f"{boot:.1f} s"),
        ("requests failed during the heal (of those sent)", f"{load.failed} of {load.ok + load.failed}"),
        ("load step 8 -> 35 req/s (target 10/worker): 4 workers healthy after", f"{scaleup:.1f} s"),
        ("requests failed during the scale-up", f"{step.failed} of {step.ok + step.failed}"),
        ("load down to 3 req/s: back to 2 workers after (window 10 s)", f"{scaledown:.1f} s"),
        ("requests failed during the scale-down", f"{low.failed} of {low.ok + low.failed}"),
    ]))
    print(f"{provider} hosts; heal minus boot: {heal - boot:.1f} s")
    print(f"heal_s={heal:.1f} failed_requests={load.failed + step.failed + low.failed} scaleup_s={scaleup:.1f} "
          f"scaledown_s={scaledown:.1f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="the monitor's heal and scale timing under load")
    parser.add_argument("--provider", choices=sorted(NETWORKS), default="netns")
    parser.add_argument("--warm", type=int, default=0, choices=(0, 1, 2), help="warm workers (0: the cold path)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/monitor.py needs root (lab hosts)", file=sys.stderr)
        return 2
    if args.warm:
        return run_in_tmp("monitor", lambda tmp: run_warm(tmp, args.provider, args.warm))
    return run_in_tmp("monitor", lambda tmp: run(tmp, args.provider))


if __name__ == "__main__":
    sys.exit(main())
