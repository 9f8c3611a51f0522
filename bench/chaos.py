"""Chaos benchmark (netns): what `fab chaos` measures on a lab it makes — requests failed while workers are
killed (-9, the whole host) on a schedule, how long each heal took, and latency.

    sudo .venv/bin/python bench/chaos.py                  # ~2 min: 60 s, a kill every 15 s
    sudo .venv/bin/python bench/chaos.py --smoke          # ~40 s: 10 s, one kill

An lb (HAProxy) in front of a pool of 3 hello workers (min 3: the monitor restarts each killed worker), the
monitor as `fab monitor_start` (a pass every second), and `fab chaos --json` as a user runs it: its load goes
only to the lb inside the namespace this run made (20 req/s, bounded). Heal: from the kill until the monitor's
pass shows the role at its healthy count again. Always stops what it started. Last line:
`failed_requests=.. heal_p50_s=.. heal_max_s=.. p99_ms=..`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import _benchlib as lib
from _benchlib import BenchError, run_in_tmp, say

ENV = '''ENVIRONMENTS = {"cb": {"provider": "netns", "network": "10.213.252.0/24", "hosts": {
    "lb01": {"role": "lb", "service": "lb", "version": "1.0"},
    "web[01:03]": {"role": "worker", "service": "hello", "version": "1.0"}},
    "min": {"lb": 1, "worker": 3}, "monitor": {"interval": 1}}}
'''


def healthy(status: Path) -> int:
    try:
        return len(json.loads(status.read_text())["roles"]["worker"]["healthy"])
    except (OSError, ValueError, KeyError):
        return 0


def run(tmp: Path, duration: int, every: int) -> int:
    (tmp / "environments.py").write_text(ENV)
    env = lib.booted_env(tmp / "state", tmp / "environments.py")
    status = tmp / "state" / "monitor" / "cb.json"
    try:
        lib.timed([lib.FAB, "env_start_min"], env=env)
        lib.timed([lib.FAB, "monitor_start"], env=env)
        deadline = time.monotonic() + 60
        while healthy(status) < 3:
            if time.monotonic() > deadline:
                raise BenchError("the monitor saw no 3 healthy workers within 60 s")
            time.sleep(0.2)
        say(f"chaos: {duration} s, a kill every {every} s, 20 req/s")
        _, proc = lib.timed([lib.FAB, "chaos", "--duration", str(duration), "--kill-every", str(every), "--json"],
                            env=env)
        report = json.loads(proc.stdout)
    finally:
        lib.timed([lib.FAB, "env_stop"], env=env, check=False)
    kills = [f for f in report["failures"] if f["what"] == "kill -9 host"]
    if not kills:
        raise BenchError(f"no worker was killed: {report['timeline']}")
    heals = [f["heal_s"] for f in kills]
    if None in heals:
        raise BenchError(f"a killed worker did not heal within the run: {kills}")
    print(lib.machine())
    print(lib.table(["phase", "sent", "failed", "p50 ms", "p99 ms"],
                    [(p["name"], p["sent"], p["failed"], p["p50_ms"], p["p99_ms"]) for p in report["phases"]]))
    print()
    print(lib.table(["killed", "at s", "healed after s", "detail"],
                    [(f["host"], f"{f['at'] - report['started']:.1f}", f"{f['heal_s']:.1f}", f["detail"])
                     for f in kills]))
    print(f"netns hosts; {report['sent']} requests in {duration} s at 20 req/s; p50 {report['p50_ms']} ms")
    print(f"failed_requests={report['failed']} heal_p50_s={statistics.median(heals):.1f} "
          f"heal_max_s={max(heals):.1f} p99_ms={report['p99_ms']:.1f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="fab chaos on a netns lab: failed requests and heal times")
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--kill-every", type=int, default=15)
    parser.add_argument("--smoke", action="store_true", help="10 s, one kill (what the smoke test runs)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/chaos.py needs root (lab hosts)", file=sys.stderr)
        return 2
    duration, every = (10, 5) if args.smoke else (args.duration, args.kill_every)
    return run_in_tmp("chaos", lambda tmp: run(tmp, duration, every))


if __name__ == "__main__":
    sys.exit(main())
