"""bench/monitor.py --warm N: the monitor with a warm pool of N paused workers. A worker is killed (-9) under a
bounded load (netns only: the lb's lab address), then the role's `min` is raised by one in environments.py;
both are timed with the monitor's own records (its `take` action: resumed, health-checked, in the lb). The
memory a paused host keeps is measured as the PSS of its processes (netns: its freezer cgroup; a VM: its
QEMU process). Then the cold path in the same lab and run: `warm` set to 0 (the monitor stops the warm
host), a worker killed again and `min` raised again, each timed until the monitor's boot of a host (its
`start` or `heal` action: booted, deployed, tested, in the lb) is done."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from _benchlib import BenchError, say

from booted.context import Booted
from booted.providers import netns_snapshot
from booted.state.warm import warm_hosts

Until = Callable[..., float]


def warm(status: Path) -> list[str]:
    try:
        return list(json.loads(status.read_text())["roles"]["worker"]["warm"])
    except (OSError, ValueError, KeyError):
        return []


def pss_kib(ctx: Booted, host: str) -> int:
    """PSS (KiB) of a host's processes: its freezer cgroup on netns, the VM process and its children else."""
    handle = ctx.lab()
    pid = handle.running()[host]
    pids = [pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                                                   check=False).stdout.split()]
    netns = getattr(handle.provider, "netns", None)
    group = netns_snapshot.freezer(netns(handle.lab, host)) if netns else None
    if group is not None and (group / "cgroup.procs").is_file():
        pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def took(ctx: Booted, env: str, since: float, kinds: tuple[str, ...] = ("take",)) -> list[dict[str, object]]:
    return [a for a in ctx.inventory.actions(env) if a["kind"] in kinds and a["status"] == "done"
            and float(a["started"]) >= since]  # type: ignore[arg-type]


def raise_min(envfile: Path, count: int) -> None:
    text = envfile.read_text()
    new = text.replace(f'"worker": {count - 1}}}, "max"', f'"worker": {count}}}, "max"')
    if new == text:
        raise BenchError(f"could not raise min to {count} in {envfile}")
    envfile.write_text(new)


def cold(ctx: Booted, env: str, envfile: Path, status: Path, until: Until, slow: int) -> dict[str, float]:
    """The same lab without a warm pool: a worker killed, then `min` 3 -> 4, each until a boot serves."""
    envfile.write_text(re.sub(r'"warm": \{"worker": \d\}', '"warm": {"worker": 0}', envfile.read_text()))
    edited = time.time()

    def emptied() -> bool:  # two passes since the edit ended, no refill under way, no warm host left
        at = [float(p["at"]) for p in [json.loads(status.read_text())] if float(p["at"]) > edited]
        if at and not seen:
            seen.append(at[0])
        busy = [a for a in ctx.inventory.actions(env) if a["status"] == "in progress"]
        return (bool(seen) and bool(at) and at[0] > seen[0] and not busy
                and not warm_hosts(ctx.inventory, env, ctx.lab().running()))
    seen: list[float] = []
    until("the warm pool emptied", emptied, timeout=120 * slow)
    time.sleep(2)
    serving = [h for h in ctx.lab().running() if h.startswith("web")]
    killed = time.time()
    os.kill(ctx.lab().running()[sorted(serving)[0]], signal.SIGKILL)
    boots = ("start", "heal")
    until("a cold heal", lambda: took(ctx, env, killed, boots), timeout=120 * slow)
    out = {"cold_heal_s": float(took(ctx, env, killed, boots)[-1]["finished"]) - killed}  # type: ignore[arg-type]
    say(f"cold heal: {out['cold_heal_s']:.2f}s after the kill ({took(ctx, env, killed, boots)[-1]['detail']})")
    time.sleep(2)
    raised = time.time()
    raise_min(envfile, 4)
    until("a cold scale-up", lambda: took(ctx, env, raised, boots), timeout=120 * slow)
    out["cold_scaleup_s"] = float(took(ctx, env, raised, boots)[-1]["finished"]) - raised  # type: ignore[arg-type]
    say(f"cold scale-up: {out['cold_scaleup_s']:.2f}s after min rose to 4 "
        f"({took(ctx, env, raised, boots)[-1]['detail']})")
    return out


def measure(ctx: Booted, env: str, envfile: Path, status: Path, count: int, load: object | None,
            until: Until, slow: int) -> dict[str, float]:
    """heal_s, scaleup_s and the paused host's PSS, with `count` warm workers (the pool filled first)."""
    until(f"{count} warm worker(s)", lambda: len(warm(status)) == count, timeout=90 * slow)
    paused = warm(status)[0]
    out = {"pss_paused_mib": pss_kib(ctx, paused) / 1024, "pss_serving_mib": pss_kib(ctx, "web01") / 1024}
    killed = time.time()
    os.kill(ctx.lab().running()["web02"], signal.SIGKILL)
    until("a warm worker taken", lambda: took(ctx, env, killed), timeout=60 * slow)
    out["heal_s"] = float(took(ctx, env, killed)[-1]["finished"]) - killed  # type: ignore[arg-type]
    out["seen_s"] = float(took(ctx, env, killed)[-1]["started"]) - killed  # type: ignore[arg-type]
    say(f"heal: {out['heal_s']:.2f}s after the kill, taken after {out['seen_s']:.2f}s "
        f"({took(ctx, env, killed)[-1]['detail']})")
    time.sleep(2)
    if load is not None:
        load.stop.set()  # type: ignore[attr-defined]
        load.join()  # type: ignore[attr-defined]
    # the monitor's own record of the refill (its status file may still be the pass's before the take)
    until("the pool refilled", lambda: took(ctx, env, killed, ("warm",)) and len(warm(status)) == count,
          timeout=90 * slow)
    raised = time.time()
    raise_min(envfile, 3)
    until("a warm worker taken for the scale-up", lambda: took(ctx, env, raised), timeout=60 * slow)
    out["scaleup_s"] = float(took(ctx, env, raised)[-1]["finished"]) - raised  # type: ignore[arg-type]
    if not out["scaleup_s"] > 0:
        raise BenchError("the scale-up was not timed")
    say(f"scale-up: {out['scaleup_s']:.2f}s after min rose to 3 ({took(ctx, env, raised)[-1]['detail']})")
    return out
