"""Provisioning: image-based (golden image + copy-on-write clone: booted's way) against installing each host.

    sudo .venv/bin/python bench/provision.py                 # 1 and 3 hosts (~5 min)
    sudo .venv/bin/python bench/provision.py --smoke         # 1 host, no warm-up, debootstrap's first stage only
    sudo .venv/bin/python bench/provision.py --installer 900 # also run Debian's installer (preseed) for 1 host

image: `fab env_start_all` of N qemu hosts serving hello, the golden image already built (the image is made
once, not per host). installer (lower bound): what every native install does at least, per host: a
debootstrap of the same Debian 12 system (same packages, `--variant=minbase`) into the host's own file
system, N at once, packages from a warm local cache (an installer would have a warm apt proxy), then the
same boot to serving as the image path (`--smoke`: debootstrap's first stage only, `--foreign`: the
packages fetched and unpacked but not configured, so its install time is not a lower bound). A real
installer also partitions, installs a kernel and a boot loader and reboots, so this is the least it can
take. With `--installer S`, Debian's own installer runs too (`fab image_build --installer preseed`, 1 host,
at most S seconds): on our machines it cannot finish (the only Debian mirror serves no .udeb installer
components) and the table says so, and how far it got: when it fetched its preseed from booted's nginx
and when it asked the lab's apt proxy for the Debian mirror.
Last line: `installer_lb_over_image_1=<ratio> [installer_lb_over_image_N=<ratio>] debian_installer_finished=<0|1|->`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _benchlib as lib
from _benchlib import BenchError, say

from booted.config import Settings
from booted.images.golden import PACKAGES, SUITE, default_mirror

ENV = '''ENVIRONMENTS = {{
    "bench": {{
        "provider": "qemu",
        "network": "{net}",
        "hosts": {{"web[01:{n:02d}]": {{"role": "worker", "service": "hello", "version": "1.0"}}}},
    }},
}}
'''


def image_based(n: int, work: Path) -> float:
    """Seconds of env_start_all to N hosts serving (stopped afterwards)."""
    state, envfile = work / f"state{n}", work / f"env{n}.py"
    envfile.write_text(ENV.format(net=f"10.213.{243 + min(n, 2)}.0/24", n=n))
    env = lib.booted_env(state, envfile)
    try:
        seconds, proc = lib.timed([lib.FAB, "env_start_all"], env=env, log=work / "logs" / f"image{n}.log")
        if f"{n} ok, 0 failed" not in proc.stdout:
            raise BenchError(f"image-based, {n} host(s): not all served:\n{proc.stdout[-1500:]}")
    finally:
        lib.timed([lib.FAB, "env_stop"], env=env, check=False, log=work / "logs" / f"image{n}-stop.log")
    return seconds


def debootstrap(target: Path, cache: Path, mirror: str, foreign: bool = False) -> None:
    """`foreign`: the first stage only (fetch and unpack, no configuring): half the time, for a smoke."""
    proc = subprocess.run(["debootstrap", "--variant=minbase", *(["--foreign"] if foreign else []),
                           f"--include={','.join(PACKAGES)}",
                           f"--cache-dir={cache}", SUITE, str(target), mirror], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise BenchError(f"debootstrap failed: {proc.stdout[-800:]} {proc.stderr[-800:]}")


def installs(n: int, work: Path, cache: Path, mirror: str, foreign: bool = False) -> float:
    """Seconds for N debootstraps at once (each into its own folder, removed afterwards)."""
    targets = [work / f"install{n}-{i}" for i in range(n)]
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(lambda t: debootstrap(t, cache, mirror, foreign), targets))
        return time.perf_counter() - start
    finally:
        for t in targets:
            shutil.rmtree(t, ignore_errors=True)


INSTALLER_NET = "10.213.246"


def installer_milestones(state: Path) -> dict[str, bool]:
    """What Debian's installer of web01 has done so far, read from booted's logs: fetched its preseed from
    booted's nginx from its static address, and asked the lab's apt proxy for the Debian mirror."""
    def text(path: Path) -> str:
        return path.read_text(errors="replace") if path.exists() else ""
    fetched = text(state / "nginx" / "installer.log")
    mirror = text(state / "apt-cacher-ng" / "log" / "apt-cacher.log")
    return {"preseed": f"{INSTALLER_NET}.2 - - " in fetched
            and '"GET /kickstart/web01.preseed HTTP/1.1" 200' in fetched,
            "mirror": f"|{INSTALLER_NET}.2|debrep/dists/bookworm/" in mirror}


def debian_installer(work: Path, timeout: int) -> tuple[bool, float, str, dict[str, float]]:
    """Debian's installer with booted's preseed for one host: (finished, seconds, its last words, seconds
    from the start to each milestone it reached: preseed fetched, mirror asked through the apt proxy)."""
    envfile = work / "env-installer.py"
    envfile.write_text(ENV.format(net=f"{INSTALLER_NET}.0/24", n=1))
    state = work / "state-installer"
    env = lib.booted_env(state, envfile)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    reached: dict[str, float] = {}
    start = time.perf_counter()
    with open(work / "logs" / "installer.log", "w") as out, open(work / "logs" / "installer.err", "w") as err:
        proc = subprocess.Popen([lib.FAB, "image_build", "--name", "web01", "--installer", "preseed", "--timeout",
                                 str(timeout)], env=env, cwd=lib.ROOT, stdout=out, stderr=err, text=True)
        while proc.poll() is None:
            for name, done in installer_milestones(state).items():
                if done and name not in reached:
                    reached[name] = time.perf_counter() - start
            time.sleep(0.5)
    seconds = time.perf_counter() - start
    for name, done in installer_milestones(state).items():  # the last look (its logs stay after the run)
        if done and name not in reached:
            reached[name] = seconds
    last = ((work / "logs" / "installer.log").read_text().strip().splitlines() or [""])[-1]
    return proc.returncode == 0, seconds, last, reached


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="1 host, no warm-up of the package cache, debootstrap's first stage only")
    parser.add_argument("--hosts", type=int, default=3, help="the larger lab size (default 3)")
    parser.add_argument("--installer", type=int, default=0, metavar="SECONDS",
                        help="also run Debian's installer for 1 host, at most SECONDS")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None or shutil.which("debootstrap") is None:
        print("bench/provision.py needs root, qemu-system-x86_64 and debootstrap (run setup.sh)", file=sys.stderr)
        return 2
    sizes = [1] if args.smoke else sorted({1, max(1, args.hosts)})
    settings = Settings.from_env({**os.environ, "BOOTED_CACHE_DIR": os.environ.get("BOOTED_CACHE_DIR")
                                  or str(lib.GOLDEN_CACHE)})
    from booted.images.golden import ensure_golden
    from booted.images.vm_assets import ensure_assets

    ensure_assets(settings.cache_dir, ensure_golden(settings, say, ()), say, settings.path)  # not timed
    mirror = settings.mirror or default_mirror()
    cache = settings.cache_dir / "bench-debootstrap-debs"
    cache.mkdir(parents=True, exist_ok=True)

    def body(work: Path) -> int:
        if not args.smoke:  # a smoke proves the bench runs: its install may fill the cache itself
            say("warming the package cache for the installs (one debootstrap, not timed)")
            installs(1, work, cache, mirror)
        rows, ratio = [], {}
        for n in sizes:
            say(f"{n} host(s): image-based")
            image = image_based(n, work)
            say(f"{n} host(s): {n} install(s) at once")
            install = installs(n, work, cache, mirror, foreign=args.smoke)
            ratio[n] = (install + image) / image
            rows.append((n, f"{image:.1f}", f"{install:.1f}", f"{install + image:.1f}", f"{ratio[n]:.1f}"))
        print(lib.machine())
        print(lib.table(("hosts", "image s", "installs s", "installer lower bound s", "lower bound / image"), rows))
        finished = "-"
        if args.installer:
            say(f"Debian's installer, 1 host, at most {args.installer}s")
            ok, seconds, last, reached = debian_installer(work, args.installer)
            finished = "1" if ok else "0"
            steps = "; ".join(f"{what} after {reached[key]:.0f}s" if key in reached else f"{what}: never"
                              for key, what in (("preseed", "fetched its preseed from booted's nginx"),
                                                ("mirror", "asked the lab's apt proxy for the mirror")))
            print(f"Debian's installer (preseed), 1 host: {'installed' if ok else 'did not finish'} after "
                  f"{seconds:.0f}s: {last}\nDebian's installer: {steps}")
        n = max(sizes)
        more = f" installer_lb_over_image_{n}={ratio[n]:.2f}" if n != 1 else ""
        print(f"installer_lb_over_image_1={ratio[1]:.2f}{more} debian_installer_finished={finished}")
        return 0

    return lib.run_in_tmp("provision", body)


if __name__ == "__main__":
    sys.exit(main())
