"""bench/fanout.py --profile: where the time of booted's three `fab` runs goes (bench/_fab_timeline.py).

For each step (hello_deploy --version V, hello_start, hello_test): one more run under the timeline, with the
CPU seconds of the controller (the fab process and its children: git) and of the lab hosts (every process of
their network namespaces, reaped children included). Prints one table per step: main-thread phases in
order (start, end, seconds), then per-host phases (how many, first start, last end, median and max).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _benchlib as lib

TIMELINE = lib.ROOT / "bench" / "_fab_timeline.py"


def host_cpu(prefix: str) -> float:
    """CPU seconds of every process in the network namespaces named prefix* (user + system, and their
    reaped children's)."""
    total = 0
    names = [n for n in os.listdir("/run/netns") if n.startswith(prefix)] if os.path.isdir("/run/netns") else []
    for ns in names:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
        for pid in pids.split():
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(x) for x in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def summary(events: Sequence[Sequence[object]]) -> list[str]:
    """The timeline's intervals as table lines: main-thread phases, then per-host phases."""
    lines = []
    for _, phase, start, end in sorted((e for e in events if e[0] == "MainThread"), key=lambda e: float(e[2])):
        lines.append(f"  {phase:40s} {float(start):7.3f} -> {float(end):7.3f}  {float(end) - float(start):6.3f} s")
    per: dict[str, list[tuple[float, float]]] = {}
    for thread, phase, start, end in events:
        if thread != "MainThread":
            per.setdefault(str(phase), []).append((float(start), float(end)))
    for phase, spans in sorted(per.items(), key=lambda kv: min(s for s, _ in kv[1])):
        took = [e - s for s, e in spans]
        lines.append(f"  per host: {phase:30s} n={len(spans):3d} {min(s for s, _ in spans):7.3f} -> "
                     f"{max(e for _, e in spans):7.3f}  median {statistics.median(took):6.3f} max {max(took):6.3f}")
    return lines


def measured(cmd: list[str], env: dict[str, str], netns_prefix: str) -> str:
    """Run `cmd` (checked): 'wall W s, controller CPU C s, hosts' CPU H s (load L)'."""
    hosts0, ctl0, load = host_cpu(netns_prefix), resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=str(lib.ROOT), capture_output=True, check=True, timeout=600)
    wall = time.perf_counter() - start
    ctl1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(0.3)  # the hosts reap what the run started
    ctl = ctl1.ru_utime - ctl0.ru_utime + ctl1.ru_stime - ctl0.ru_stime
    return f"wall {wall:.2f} s, controller CPU {ctl:.2f} s, hosts' CPU {host_cpu(netns_prefix) - hosts0:.2f} s " \
           f"(load {load:.1f})"


def profile_step(argv: list[str], env: dict[str, str], netns_prefix: str) -> str:
    """One `fab` run of `argv` under the timeline: its table, with wall and CPU seconds."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        took = measured([lib.PYTHON, str(TIMELINE), out.name, *argv], env, netns_prefix)
        events = json.loads(Path(out.name).read_text())
    return "\n".join([f"profile: fab {' '.join(argv)}: {took}; phases, seconds from exec:", *summary(events)])


def profile(bench: Any) -> list[str]:
    """bench/fanout.py --profile (after its runs): booted's three steps once more under the timeline, then
    one floor and one floor + work run (a release no run deployed) with their CPU seconds."""
    prefix = f"bt{bench.ctx.settings.lab_id('bench')}-"
    out = [profile_step(argv, bench.env, prefix)
           for argv in (["hello_deploy", "--version", "prof-booted"], ["hello_start"], ["hello_test"])]
    bench.verify("prof-booted")
    for name, mode, job in (("floor", "true", bench.tmp / "floor.json"),  # written by the floor row
                            ("floor + work", "deploy", bench.fabric_job("prof-fabric"))):
        if job.exists():
            out.append(f"profile: {name}: " + measured([lib.PYTHON, str(lib.ROOT / "bench" / "_fabric_run.py"),
                                                        mode, str(job)], bench.env, prefix))
    bench.verify("prof-fabric")
    return out
