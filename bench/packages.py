"""Packages benchmark: golden image build time with and without extra packages, and the apt proxy's cache.

    sudo .venv/bin/python bench/packages.py                 # base image vs + redis-server, then the proxy

1. Builds the golden image in a fresh, private cache twice: the base package set, then with `redis-server`
   (what `"packages": ["redis-server"]` in environments.py costs once; environments with the same set share
   the result).
2. Starts two netns hosts in that cache and installs `git` on one, then on the other, through booted's apt
   proxy; reads apt-cacher-ng's log: bytes fetched from the mirror vs bytes served to the hosts.
Always stops what it started. Last line: `golden_base_s=X golden_redis_s=Y apt_mirror_bytes=M apt_served_bytes=S`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import _benchlib as lib
from _benchlib import BenchError, run_in_tmp, say

from booted.config import Settings
from booted.context import Booted
from booted.images.golden import ensure_golden

ENV = '''ENVIRONMENTS = {"pkg": {"provider": "netns", "network": "10.213.234.0/24", "hosts": {"p[1:2]": {}}}}\n'''


def run(args: argparse.Namespace, tmp: Path) -> int:
    env = lib.booted_env(tmp / "state", tmp / "environments.py", BOOTED_CACHE_DIR=str(tmp / "cache"))
    (tmp / "environments.py").write_text(ENV)
    settings = Settings.from_env(env)
    times = {}
    for label, extra in (("base", ()), ("redis", ("redis-server",))):
        start = time.perf_counter()
        ensure_golden(settings, say, extra)
        times[label] = time.perf_counter() - start
        say(f"golden image {label}: {times[label]:.1f}s")
    ctx = Booted(settings, say=say)
    lab = ctx.lab()
    try:
        if not all(r.ok for r in lab.start(lab.images(["p1", "p2"]))):
            raise BenchError("the two hosts did not come up")
        installs = []
        with ctx.fleet() as fleet:
            for name in ("p1", "p2"):
                target = ctx.targets([name])[0]
                start = time.perf_counter()
                fleet.sh(target, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends git")
                installs.append(time.perf_counter() - start)
        log = tmp / "state" / "apt-cacher-ng" / "log" / "apt-cacher.log"
        rows = [line.split("|") for line in log.read_text().splitlines() if line.count("|") >= 4]
        fetched = sum(int(r[2]) for r in rows if r[1] == "I")
        served = sum(int(r[2]) for r in rows if r[1] == "O")
    finally:
        lab.stop_all()
        ctx.close()
    print(lib.machine())
    print(lib.table(["measurement", "value"], [
        ("golden image, base packages (debootstrap + apt lists)", f"{times['base']:.1f} s"),
        ("golden image, + redis-server", f"{times['redis']:.1f} s"),
        ("apt-get install git, first host (cache cold)", f"{installs[0]:.1f} s"),
        ("apt-get install git, second host (cache warm)", f"{installs[1]:.1f} s"),
        ("bytes from the Debian mirror / served to hosts", f"{fetched} / {served}"),
    ]))
    print(f"golden_base_s={times['base']:.1f} golden_redis_s={times['redis']:.1f} apt_mirror_bytes={fetched} "
          f"apt_served_bytes={served}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/packages.py needs root (debootstrap, namespaces)", file=sys.stderr)
        return 2
    return run_in_tmp("packages", lambda tmp: run(args, tmp))


if __name__ == "__main__":
    sys.exit(main())
