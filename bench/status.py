"""Status benchmark: `fab hosts_list` and `fab env_status` wall time (Python start-up included) with a
filled inventory.

    .venv/bin/python bench/status.py --hosts 100   # the full benchmark (target: < 1 s each)
    .venv/bin/python bench/status.py --hosts 5     # smoke

Fills a private state directory in-process through booted.state.inventory.Inventory: N host images (lease), N
boot events (record_boots, so N hosts are listed), reachability and a recorded deployment of hello 1.0 on
each. No host runs. Then times each command --runs times (default 5) and reports the median, next to
`fab --list` (Python + Fabric + fabfile import: the floor any task pays).
Last line: `hosts_list_s=X env_status_s=Y fab_list_s=Z hosts=N`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import time
from pathlib import Path

import _benchlib as lib
from _benchlib import BenchError, run_in_tmp, say

from booted.config import Settings
from booted.context import Booted
from booted.results import HostResult
from booted.state.inventory import BootEvent

NETWORK = "10.213.190.0/24"


def fill(ctx: Booted, hosts: int) -> None:
    env = ctx.environment("bench")
    images = []
    for spec in env.hosts:
        blob = hashlib.sha512(spec.name.encode()).digest()[:51]  # stands in for a key blob (never used to connect)
        pub = f"ssh-ed25519 {base64.b64encode(blob).decode()} booted-host-{spec.name}"
        images.append(ctx.inventory.lease(name=spec.name, env=env.name, provider=env.provider,
                                          network=env.network, role=spec.role, service=spec.service,
                                          version=spec.version, hostkey=pub))
    now = time.time()
    events = [BootEvent(now, i.ip, i.name, i.ip, i.mac,
                        "SHA256:" + base64.b64encode(hashlib.sha256(i.hostkey.encode()).digest()).decode()[:43])
              for i in images]
    ctx.inventory.record_boots(str(ctx.settings.boot_log), events, (1, 0, len(events), 0))
    ctx.inventory.set_reachable({i.name: True for i in images})
    dep = ctx.inventory.open_deployment("hello", "1.0", "deploy", [i.name for i in images])
    ctx.inventory.finish_deployment(dep, [HostResult(i.name, True, "switched to 1.0", 0.1, "1.0") for i in images])
    for i in images:
        ctx.inventory.record_release(i.name, "hello", "1.0")
    if len(ctx.inventory.hosts()) != hosts or len(ctx.inventory.images()) != hosts:
        raise BenchError(f"inventory holds {len(ctx.inventory.images())} images / "
                         f"{len(ctx.inventory.hosts())} listed hosts, expected {hosts}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=100, help="host images and listed hosts (1..250)")
    parser.add_argument("--runs", type=int, default=5, help="runs per command; the median counts")
    args = parser.parse_args()
    if not 1 <= args.hosts <= 250 or args.runs < 1:
        parser.error("--hosts must be 1..250 and --runs at least 1")
    return run_in_tmp("status", lambda tmp: run(args, tmp))


def run(args: argparse.Namespace, tmp: Path) -> int:
    envfile = tmp / "environments.py"
    last = f"{args.hosts:03d}"
    envfile.write_text("ENVIRONMENTS = " + repr({"bench": {"provider": "netns", "network": NETWORK, "hosts": {
        f"s[001:{last}]" if args.hosts > 1 else "s001": {"role": "worker", "service": "hello",
                                                         "version": "1.0"}}}}) + "\n")
    env = lib.booted_env(tmp / "state", envfile)
    ctx = Booted(Settings.from_env(env), say=say)
    try:
        start = time.perf_counter()
        fill(ctx, args.hosts)
        say(f"filled the inventory with {args.hosts} images and listed hosts in {time.perf_counter() - start:.2f}s")
    finally:
        ctx.close()

    times: dict[str, list[float]] = {"fab --list": [], "fab hosts_list": [], "fab env_status": []}
    for _ in range(args.runs):
        for label in times:
            seconds, proc = lib.timed([lib.FAB, *label.split()[1:]], env=env)
            if label == "fab hosts_list" and proc.stdout.count(" yes") < args.hosts:
                raise BenchError(f"hosts_list does not show {args.hosts} reachable hosts:\n{proc.stdout[-800:]}")
            if label == "fab env_status" and proc.stdout.count("hello 1.0") < 2 * args.hosts:
                raise BenchError(f"env_status does not show {args.hosts} hosts with hello 1.0:\n{proc.stdout[-800:]}")
            times[label].append(seconds)
    med = {k: lib.median(v) for k, v in times.items()}
    target = {k: ("yes" if v < 1.0 else "NO") for k, v in med.items()}
    print(f"status benchmark: {args.hosts} host images + listed hosts, median of {args.runs}; {lib.machine()}")
    print(lib.table(["command", "median s", "runs s", "< 1 s"],
                    [(k, f"{med[k]:.3f}", " ".join(f"{x:.3f}" for x in v), target[k]) for k, v in times.items()]))
    print(f"hosts_list_s={med['fab hosts_list']:.3f} env_status_s={med['fab env_status']:.3f} "
          f"fab_list_s={med['fab --list']:.3f} hosts={args.hosts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
