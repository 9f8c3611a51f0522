"""libvirt vs the qemu provider: `fab env_start_all` on the same hosts, in one run.

    sudo .venv/bin/python bench/libvirt.py              # 2 and 4 hosts, 3 runs each (needs root, QEMU, libvirtd)
    sudo .venv/bin/python bench/libvirt.py --smoke      # 1 host, 1 run, libvirt and qemu-disk only

Three ways to run the same N hosts of hello 1.0 (each with its own state directory and network):
`qemu` (booted runs QEMU itself, direct kernel boot: the default), `qemu-disk` (booted runs QEMU on the
bootable disk and seed disk: what libvirt boots) and `libvirt` (a private libvirtd started for the run,
tests/libvirtd.py: its own config and state, stopped afterwards). For each, `env_start_all` then `env_stop`,
`--runs` times (default 3); the table gives the median of the runs after the first, and the first apart (for
libvirt it uploads the golden disk into the pool). The golden image and bootable disks are built before
anything is timed. `--smoke` leaves out `qemu` (the like-for-like comparison is libvirt against qemu-disk;
booted's direct kernel boot runs in every other VM test of the suite).
Last line: `libvirt_over_qemu=<ratio> libvirt_over_qemu_disk=<ratio>` (medians, largest N; a way that did
not run is left out).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import _benchlib as lib
from _benchlib import BenchError, say

from booted.config import Settings
from tests import libvirtd

ENV = '''ENVIRONMENTS = {{
    "bench": {{
        "provider": "{provider}",
        "network": "{net}",{extra}
        "hosts": {{"web[01:{n:02d}]": {{"role": "worker", "service": "hello", "version": "1.0"}}}},
    }},
}}
'''
WAYS = ("qemu", "qemu-disk", "libvirt")


def prepare() -> None:
    """Golden image, qemu assets and both bootable disks (raw for qemu, qcow2 for libvirt): not timed."""
    from booted.images.bootdisk import ensure_bootdisk
    from booted.images.golden import ensure_golden
    from booted.images.vm_assets import ensure_assets
    from booted.providers.qemu import INITS

    settings = Settings.from_env({**os.environ, "BOOTED_CACHE_DIR": os.environ.get("BOOTED_CACHE_DIR")
                                  or str(lib.GOLDEN_CACHE)})
    assets = ensure_assets(settings.cache_dir, ensure_golden(settings, say, ()), say, settings.path)
    for fmt in ("raw", "qcow2"):
        ensure_bootdisk(settings.cache_dir, assets, INITS["busybox"], say, settings.path, fmt)


def one_way(way: str, n: int, runs: int, work: Path, net: str) -> list[float]:
    """env_start_all times of `runs` runs of N hosts one way (each run stopped before the next)."""
    state, envfile = work / f"state-{way}-{n}", work / f"env-{way}-{n}.py"
    daemon = libvirtd.start(work / f"libvirtd-{n}") if way == "libvirt" else None
    extra = {"qemu": "", "qemu-disk": '\n        "boot": "disk",',
             "libvirt": f'\n        "hypervisors": [{{"uri": "{daemon.uri}", "name": "local"}}],' if daemon else ""}
    envfile.write_text(ENV.format(provider="libvirt" if way == "libvirt" else "qemu", net=net, n=n,
                                  extra=extra[way]))
    env = lib.booted_env(state, envfile)
    times: list[float] = []
    try:
        for run in range(runs):
            say(f"{way}, {n} host(s), run {run + 1}: fab env_start_all")
            try:
                seconds, proc = lib.timed([lib.FAB, "env_start_all"], env=env,
                                          log=work / "logs" / f"{way}-{n}-{run}.log")
                if f"{n} ok, 0 failed" not in proc.stdout:
                    raise BenchError(f"{way}, {n} host(s): not all served:\n{proc.stdout[-1500:]}")
            finally:
                lib.timed([lib.FAB, "env_stop"], env=env, check=False, log=work / "logs" / f"{way}-{n}-{run}-stop.log")
            say(f"{way}, {n} host(s): serving after {seconds:.1f}s")
            times.append(seconds)
    finally:
        if daemon is not None:
            daemon.stop()
    return times


def warm(times: list[float]) -> float:
    """The median of the runs after the first (the first of libvirt uploads the golden disk), or the one run."""
    return lib.median(times[1:] or times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1 host, 1 run, ways qemu-disk and libvirt")
    parser.add_argument("--hosts", default="2,4", help="comma list of lab sizes (default 2,4)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sizes = [1] if args.smoke else [int(x) for x in args.hosts.split(",") if x]
    runs = 1 if args.smoke else max(1, args.runs)
    ways = [w for w in WAYS if w != "qemu"] if args.smoke else list(WAYS)
    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None or libvirtd.missing():
        print(f"bench/libvirt.py needs root, qemu-system-x86_64 and libvirtd ({libvirtd.missing()}): run setup.sh",
              file=sys.stderr)
        return 2
    prepare()

    def body(work: Path) -> int:
        results: dict[tuple[str, int], list[float]] = {}
        for n in sizes:
            for way in ways:
                results[(way, n)] = one_way(way, n, runs, work, f"10.213.{240 + WAYS.index(way)}.0/24")
        print(lib.machine())
        rows = [(way, n, f"{warm(t):.1f}", f"{t[0]:.1f}", f"{min(t):.1f}", len(t)) for (way, n), t in results.items()]
        print(lib.table(("provider", "hosts", "median s (after the first)", "first run s", "best s", "runs"), rows))
        n = max(sizes)
        lv = warm(results[("libvirt", n)])
        print(" ".join(f"libvirt_over_{way.replace('-', '_')}={lv / warm(results[(way, n)]):.2f}"
                       for way in ways if way != "libvirt"))
        return 0

    return lib.run_in_tmp("libvirt", body)


if __name__ == "__main__":
    sys.exit(main())
