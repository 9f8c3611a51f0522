"""Snapshot benchmark (qemu): a 3-VM lab restored to serving against the same lab started from cold.
    sudo .venv/bin/python bench/snapshot.py           # 3 VMs
    sudo .venv/bin/python bench/snapshot.py --smoke   # 1 VM
In one run, on one private state directory and network, with the golden image, the VM assets and the
accelerator verdict already cached: `fab env_start_all` (timed: cold boots to serving hello), `fab
env_snapshot s` (its pause: the snapshot's own pause_s, every VM stopped together, each VM's memory and disk
saved), then `--restores` times (3) `fab hello_deploy --version 1.1` (the lab changed) and `fab env_restore s`
(timed: the running VMs stopped, disks and memory put back, each VM continued where it was, clocks set, hello
tested: serving 1.0; its steps and the load average printed). Last line: `restore_over_start=<median
restore s / start s> snapshot_pause_s=<pause>`. The lab is stopped in `finally` and checked for leftover
QEMU processes and taps.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import _benchlib as lib
from _benchlib import BenchError, say
from boot import leftovers, prepare

from booted.config import Settings

STEP = re.compile(r"restore s: (\w+) \((\d+\.\d+)s\)")  # env_restore's steps, seconds since it began
CLOCK = re.compile(r"clock was [-+.\d]+ s off, now [-+.\d]+ s")  # each host's, as env_restore says it
ENV = '''ENVIRONMENTS = {{
    "bench": {{
        "provider": "qemu",
        "network": "10.213.196.0/24",
        "hosts": {{"web[01:{n:02d}]": {{"role": "worker", "service": "hello", "version": "1.0"}}}},
    }},
}}
'''


def hello_repo(work: Path) -> Path:
    """A git repository of service/hello with tags 1.0 and 1.1 (the lab changes to 1.1 before the restore)."""
    sys.path.insert(0, str(lib.ROOT))
    from tests.integration.test_netns_lab import make_hello_repo
    return make_hello_repo(work)


def load() -> str:
    """The 1-minute load average, printed with every figure (the machine is shared)."""
    return Path("/proc/loadavg").read_text().split()[0]


def run(n: int, work: Path, logs: Path, repeat: int = 1) -> dict:
    envfile = work / "environments.py"
    envfile.write_text(ENV.format(n=n))
    env = lib.booted_env(work / "state", envfile, HELLO_REPO=str(hello_repo(work)),
                         BOOTED_BOOT_TIMEOUT=os.environ.get("BOOTED_BOOT_TIMEOUT", "600"))
    lab_id = Settings.from_env(env).lab_id("bench")
    try:
        say(f"{n} VM(s): fab env_start_all (load {load()})")
        start_s, proc = lib.timed([lib.FAB, "env_start_all"], env=env, log=logs / "start.log")
        if f"{n} ok, 0 failed" not in proc.stdout:
            raise BenchError(f"not all hosts served:\n{proc.stdout[-2000:]}")
        say(f"serving after {start_s:.1f}s; fab env_snapshot s (load {load()})")
        snap_s, _ = lib.timed([lib.FAB, "env_snapshot", "s"], env=env, log=logs / "snapshot.log")
        _, listing = lib.timed([lib.FAB, "env_snapshots", "--json"], env=env)
        [row] = json.loads(listing.stdout)
        restores: list[float] = []
        for k in range(repeat):
            lib.timed([lib.FAB, "hello_deploy", "--version", "1.1"], env=env, log=logs / f"deploy{k}.log")
            say(f"fab env_restore s (load {load()})")
            restore_s, proc = lib.timed([lib.FAB, "env_restore", "s"], env=env, log=logs / f"restore{k}.log")
            if proc.stdout.count("continued from the snapshot") != n or "serving hello 1.0" not in proc.stdout:
                raise BenchError(f"the restore did not continue every VM serving 1.0:\n{proc.stdout[-2000:]}")
            steps = STEP.findall(proc.stderr + proc.stdout)
            say(f"restored and serving after {restore_s:.1f}s; steps: " + ", ".join(f"{s} at {t}s" for s, t in steps)
                + "; " + ", ".join(CLOCK.findall(proc.stdout)))
            restores.append(restore_s)
    finally:
        stop_s, _ = lib.timed([lib.FAB, "env_stop"], env=env, check=False, log=logs / "stop.log")
        left = leftovers(lab_id)
        if left:
            raise BenchError(f"left behind after env_stop: {', '.join(left)}")
    return {"start": start_s, "snapshot": snap_s, "pause": float(row["pause_s"]), "size": row["size"] / 2**20,
            "restore": statistics.median(restores), "restores": restores, "stop": stop_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1 VM")
    parser.add_argument("--restores", type=int, default=3, help="restores (each after a deploy of 1.1) in the "
                        "run; the ratio takes their median (default 3)")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        print("bench/snapshot.py needs root and qemu-system-x86_64", file=sys.stderr)
        return 2
    n = 1 if args.smoke else 3
    accel, why, _ = prepare(["busybox"])
    work = Path(tempfile.mkdtemp(prefix="booted-bench-snapshot-"))
    try:
        r = run(n, work, work / "logs", max(1, args.restores))
    except (BenchError, RuntimeError) as exc:
        print(f"FAILED: {exc}\n(logs in {work / 'logs'})", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print(f"{lib.machine()}, load average {Path('/proc/loadavg').read_text().split()[:3]}")
    print(f"accelerator: {accel} ({why}); qemu, {n} VM(s) of 256 MB running hello")
    print(lib.table(("step", "seconds", "note"), [
        ("env_start_all (cold boots, warm image cache)", f"{r['start']:.1f}", "to serving hello 1.0"),
        ("env_snapshot", f"{r['snapshot']:.1f}", f"paused {r['pause']:.2f} s; {r['size']:.0f} MB on disk"),
        ("env_restore (after a deploy of 1.1)", f"{r['restore']:.1f}",
         "median of " + " ".join(f"{x:.1f}" for x in r["restores"]) + "; to serving hello 1.0, no boot"),
        ("env_stop", f"{r['stop']:.1f}", "")]))
    print(f"restore_over_start={r['restore'] / r['start']:.2f} snapshot_pause_s={r['pause']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
