"""Packages benchmark: golden image build time with and without extra packages, the apt proxy's cache, and
debootstrap against mmdebstrap.

    sudo .venv/bin/python bench/packages.py                 # base image vs + redis-server, the proxy, bootstraps
    sudo .venv/bin/python bench/packages.py --smoke         # debootstrap vs mmdebstrap only, one run each (~90 s)

1. Builds the golden image in a fresh, private cache twice: the base package set, then with `redis-server`
   (what `"packages": ["redis-server"]` in environments.py costs once; environments with the same set share
   the result).
2. Starts two netns hosts in that cache and installs `git` on one, then on the other, through booted's apt
   proxy; reads apt-cacher-ng's log: bytes fetched from the mirror vs bytes served to the hosts.
3. Bootstraps the same package set (the golden image's, minbase) from the same suite (bookworm main) with
   debootstrap and with mmdebstrap, `--runs` times each, alternating which goes first, every one downloading
   from the mirror into an empty folder; then once more with mmdebstrap from the three suites the golden image
   uses (not with --smoke). Shows both package lists' difference.
Always stops what it started. Last line: `golden_base_s=X golden_redis_s=Y apt_mirror_bytes=M apt_served_bytes=S
debootstrap_s=D mmdebstrap_s=M mmdebstrap_over_debootstrap=R` (medians; with --smoke the last three only).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _benchlib as lib
from _benchlib import BenchError, run_in_tmp, say

from booted.config import Settings
from booted.context import Booted
from booted.images.golden import ensure_golden
from booted.images.rootfs import PACKAGES, bootstrap_command
from booted.images.suites import Mirrors

ENV = '''ENVIRONMENTS = {"pkg": {"provider": "netns", "network": "10.213.234.0/24", "hosts": {"p[1:2]": {}}}}\n'''


def bootstrap(tool: str, target: Path, mirrors: Mirrors, patched: bool = False) -> tuple[float, set[str]]:
    """Seconds for one bootstrap of the golden image's packages into an empty folder, and what it installed."""
    start = time.perf_counter()
    proc = subprocess.run(bootstrap_command(tool, target, mirrors, PACKAGES, patched), capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"{tool} failed: {(proc.stdout + proc.stderr)[-1500:]}")
    listed = subprocess.run(["chroot", str(target), "dpkg-query", "-W", "-f", "${Package}\\n"], capture_output=True,
                            text=True, check=True).stdout.split()
    shutil.rmtree(target)
    return seconds, set(listed)


def compare_bootstraps(settings: Settings, tmp: Path, runs: int,
                       three: bool = True) -> tuple[float, float, list[tuple[str, str]]]:
    """debootstrap vs mmdebstrap, the same packages from the same suite: medians and the table's rows;
    `three`: then mmdebstrap once from the three suites the golden image names."""
    for tool in ("debootstrap", "mmdebstrap"):
        if settings.which(tool) is None:
            raise BenchError(f"{tool} not found: apt-get install {tool} (setup.sh installs both)")
    mirrors = Mirrors.of(settings)
    times: dict[str, list[float]] = {"debootstrap": [], "mmdebstrap": []}
    sets: dict[str, set[str]] = {}
    for run in range(runs):
        for tool in ("debootstrap", "mmdebstrap") if run % 2 == 0 else ("mmdebstrap", "debootstrap"):
            seconds, sets[tool] = bootstrap(tool, tmp / f"{tool}-{run}", mirrors)
            times[tool].append(seconds)
            say(f"{tool} run {run + 1}: {seconds:.1f}s, {len(sets[tool])} packages")
    patched = bootstrap("mmdebstrap", tmp / "mmdebstrap-patched", mirrors, patched=True)[0] if three else None
    if patched is not None:
        say(f"mmdebstrap from bookworm, -updates and -security: {patched:.1f}s")
    only = sorted(sets["debootstrap"] ^ sets["mmdebstrap"])
    deb, mm = lib.median(times["debootstrap"]), lib.median(times["mmdebstrap"])
    rows = [(f"debootstrap, {len(sets['debootstrap'])} packages (median of {runs})", f"{deb:.1f} s"),
            (f"mmdebstrap, {len(sets['mmdebstrap'])} packages (median of {runs})", f"{mm:.1f} s"),
            *([("mmdebstrap, the three suites the golden image names", f"{patched:.1f} s")] if patched else []),
            ("packages only one of them installed", " ".join(only) or "none")]
    return deb, mm, rows


def run(args: argparse.Namespace, tmp: Path) -> int:
    env = lib.booted_env(tmp / "state", tmp / "environments.py", BOOTED_CACHE_DIR=str(tmp / "cache"))
    (tmp / "environments.py").write_text(ENV)
    settings = Settings.from_env(env)
    if args.smoke:
        deb, mm, rows = compare_bootstraps(settings, tmp, 1, three=False)
        print(lib.machine())
        print(lib.table(["measurement", "value"], rows))
        print(f"debootstrap_s={deb:.1f} mmdebstrap_s={mm:.1f} mmdebstrap_over_debootstrap={mm / deb:.2f}")
        return 0
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
    deb, mm, bootstraps = compare_bootstraps(settings, tmp, args.runs)
    print(lib.machine())
    print(lib.table(["measurement", "value"], [
        ("golden image, base packages (bootstrap + apt lists + upgrade)", f"{times['base']:.1f} s"),
        ("golden image, + redis-server", f"{times['redis']:.1f} s"),
        ("apt-get install git, first host (cache cold)", f"{installs[0]:.1f} s"),
        ("apt-get install git, second host (cache warm)", f"{installs[1]:.1f} s"),
        ("bytes from the Debian mirror / served to hosts", f"{fetched} / {served}"),
        *bootstraps,
    ]))
    print(f"golden_base_s={times['base']:.1f} golden_redis_s={times['redis']:.1f} apt_mirror_bytes={fetched} "
          f"apt_served_bytes={served} debootstrap_s={deb:.1f} mmdebstrap_s={mm:.1f} "
          f"mmdebstrap_over_debootstrap={mm / deb:.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="bootstraps per tool (default 3)")
    parser.add_argument("--smoke", action="store_true", help="debootstrap vs mmdebstrap only, one run each")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/packages.py needs root (debootstrap, namespaces)", file=sys.stderr)
        return 2
    return run_in_tmp("packages", lambda tmp: run(args, tmp))


if __name__ == "__main__":
    sys.exit(main())
