"""Scale benchmark: a lab of N netns hosts (500 in a /23) against the same run's small lab (50 hosts).

    sudo .venv/bin/python bench/scale.py --hosts 500           # 50 hosts, then 500 (about 15 minutes)
    sudo .venv/bin/python bench/scale.py --hosts 5 --small 3   # smoke

For each size, in a private state directory: `start_all()` in-process (every host up and serving hello 1.0,
checked over HTTP), a deploy/start/test round (`fab hello_deploy --version 2.0; fab hello_start; fab
hello_test`), `fab hosts_list`, `fab env_status` and `fab env_status --probe ssh` (Python start-up included;
the bytecode of booted and fabfile compiled first, as an installed booted has it; median of 3, with the CPU
seconds of that run: on a loaded machine the wall time is mostly waiting for a core), one monitor pass (in-process,
against its interval), the memory of the hosts (PSS of every process in the lab's network namespaces) and of
the controller (this process, which holds the lab), then `stop_all()` and a check that no namespace or process
is left. Last line: `start_per_host_500_over_50=.. deploy_per_host_500_over_50=.. status_s=.. pass_s=..`
(the names say 500 and 50 whatever --hosts and --small are).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import _benchlib as lib
from _benchlib import BenchError, say

from booted.config import Settings
from booted.context import Booted
from booted.monitor.daemon import Monitor

ENV = "scale"


@dataclass
class Figures:
    hosts: int
    start_s: float = 0.0
    deploy_s: float = 0.0  # deploy + start + test, three fab runs
    steps: dict[str, tuple[float, float]] = field(default_factory=dict)  # each of those: (wall s, fab's CPU s)
    list_s: float = 0.0
    status_s: float = 0.0
    status_ssh_s: float = 0.0  # env_status --probe ssh: every host's SSH banner
    cpu: dict[str, float] = field(default_factory=dict)  # the CPU seconds (user + sys) of those fab runs
    pass_s: float = 0.0
    interval: float = 0.0
    hosts_mb: float = 0.0  # PSS of all the hosts' processes
    controller_mb: float = 0.0
    stop_s: float = 0.0
    left: list[str] = field(default_factory=list)


NEIGH = Path("/proc/sys/net/ipv4/neigh/default")


def neigh_needed(hosts: int) -> dict[str, int]:
    """The ARP table's limits a lab of `hosts` needs: the table is one for every network namespace of the
    machine (the controller's entry for each host, each host's entry for its gateway and peers), and at its
    default (gc_thresh3 = 1024) a 500-host lab overflowed it ("neighbor table overflow", hosts unreachable)."""
    return {"gc_thresh2": max(512, 2 * hosts), "gc_thresh3": max(1024, 4 * hosts)}


def neigh_limits(want: dict[str, int], raise_them: bool) -> dict[str, int]:
    """Check (with raise_them: raise) the ARP table limits; returns the values to restore."""
    have = {k: int((NEIGH / k).read_text()) for k in want}
    low = {k: v for k, v in want.items() if have[k] < v}
    if low and not raise_them:
        raise BenchError("the ARP table is too small for this lab: " + ", ".join(
            f"net.ipv4.neigh.default.{k} is {have[k]}, needs {v}" for k, v in low.items())
            + " (sysctl -w ..., or --raise-limits to raise them for this run)")
    for k, v in low.items():
        (NEIGH / k).write_text(str(v))
    return {k: have[k] for k in low}


def pss_kb(pid: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def namespaces(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix)) if os.path.isdir("/run/netns") else []


def lab_pids(prefix: str) -> list[str]:
    """The processes in the lab's network namespaces (its hosts' sshd, services, supervisors...)."""
    inodes = set()
    for name in namespaces(prefix):
        try:
            inodes.add(os.stat(f"/run/netns/{name}").st_ino)
        except OSError:
            pass
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                pids.append(pid)
        except OSError:
            pass
    return pids


class Lab:
    def __init__(self, tmp: Path, hosts: int, network: str) -> None:
        self.tmp, self.n, self.network = tmp, hosts, network
        self.state, self.envfile, self.repo = tmp / "state", tmp / "environments.py", tmp / "hello-repo"
        self.env = lib.booted_env(self.state, self.envfile, HELLO_REPO=str(self.repo))
        self.ctx: Booted | None = None
        self.prefix = ""

    def prepare(self) -> None:
        last = f"{self.n:03d}"
        hosts = {f"w[001:{last}]" if self.n > 1 else "w001": {"role": "worker", "service": "hello", "version": "1.0"}}
        self.envfile.write_text("ENVIRONMENTS = " + repr({ENV: {"provider": "netns", "network": self.network,
                                                                "hosts": hosts}}) + "\n")
        shutil.copytree(lib.ROOT / "service" / "hello", self.repo, ignore=shutil.ignore_patterns("__pycache__"))
        git = ["git", "-C", str(self.repo), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "hello"], ["tag", "1.0"], ["tag", "2.0"]):
            subprocess.run(git + cmd, check=True, capture_output=True)

    def verify(self, version: str) -> None:
        assert self.ctx is not None
        targets = [(h.name, h.ip) for h in self.ctx.inventory.hosts()]

        def one(t: tuple[str, str]) -> str | None:
            try:
                with urllib.request.urlopen(f"http://{t[1]}:8000/health", timeout=10) as resp:
                    data = json.loads(resp.read(65536))
            except (OSError, ValueError) as exc:
                return f"{t[0]}: {exc}"
            return None if data.get("host") == t[0] and data.get("version") == version else f"{t[0]}: {data}"
        with ThreadPoolExecutor(max_workers=32) as pool:
            bad = [p for p in pool.map(one, targets) if p]
        if len(targets) != self.n or bad:
            raise BenchError(f"{len(targets)}/{self.n} hosts listed; {len(bad)} not serving {version}: {bad[:3]}")

    def fab(self, *args: str) -> float:
        return lib.timed([lib.FAB, *args], env=self.env)[0]

    def fab_median(self, fig: Figures, *args: str, runs: int = 3) -> float:
        """The median wall seconds of `runs` fab runs; its CPU seconds (user + sys) go to fig.cpu."""
        out = []
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall = self.fab(*args)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            out.append((wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime))
        wall, cpu = sorted(out)[len(out) // 2]
        fig.cpu[" ".join(args)] = cpu
        return wall

    def run(self) -> Figures:
        fig = Figures(self.n)
        self.prepare()
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("BOOTED_", "HELLO_"))})
        self.ctx = Booted(Settings.from_env(self.env), say=lambda line: None)
        self.prefix = f"bt{self.ctx.settings.lab_id(ENV)}-"
        say(f"{self.n} hosts on {self.network}: starting")
        start = time.perf_counter()
        report = self.ctx.runs().start_all()
        fig.start_s = time.perf_counter() - start
        if report.failed():
            raise BenchError(f"{len(report.failed())} host(s) did not come up: {report.failed()[:5]}")
        self.verify("1.0")
        say(f"{self.n} hosts serving in {fig.start_s:.1f}s; deploy/start/test")
        for args in (("hello_deploy", "--version", "2.0"), ("hello_start",), ("hello_test",)):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall = self.fab(*args)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            fig.steps[args[0]] = (wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        fig.deploy_s = sum(wall for wall, _ in fig.steps.values())
        self.verify("2.0")
        fig.list_s = self.fab_median(fig, "hosts_list")
        fig.status_s = self.fab_median(fig, "env_status")
        fig.status_ssh_s = self.fab_median(fig, "env_status", "--probe", "ssh")
        monitor = Monitor(self.ctx, ENV)
        fig.interval = monitor.env.monitor.interval
        start = time.perf_counter()
        monitor.pass_once()
        fig.pass_s = time.perf_counter() - start
        fig.hosts_mb = sum(pss_kb(p) for p in lab_pids(self.prefix)) / 1024
        fig.controller_mb = pss_kb(str(os.getpid())) / 1024
        say(f"{self.n} hosts: deploy round {fig.deploy_s:.1f}s, pass {fig.pass_s:.2f}s; stopping")
        fig.stop_s, fig.left = self.stop()
        return fig

    def stop(self) -> tuple[float, list[str]]:
        ctx = self.ctx or Booted(Settings.from_env(self.env), say=lambda line: None)
        try:
            start = time.perf_counter()
            if self.envfile.exists() and self.state.exists():
                ctx.lab().stop_all()
            took = time.perf_counter() - start
            left = namespaces(self.prefix) if self.prefix else []
            return took, left + [f"pid {p}" for p in lab_pids(self.prefix)] if self.prefix else left
        finally:
            ctx.close()
            self.ctx = None


def report(small: Figures, big: Figures) -> str:
    rows = []
    for f in (small, big):
        cli = zip((f.list_s, f.status_s, f.status_ssh_s), f.cpu.values())
        rows.append((f.hosts, f"{f.start_s:.1f}", f"{f.start_s / f.hosts:.3f}", f"{f.deploy_s:.1f}",
                     f"{f.deploy_s / f.hosts:.3f}", *(f"{wall:.2f} ({cpu:.2f})" for wall, cpu in cli),
                     f"{f.pass_s:.2f} (every {f.interval:g}s)", f"{f.hosts_mb / f.hosts:.1f}",
                     f"{f.controller_mb:.0f}", f"{f.stop_s:.1f}", len(f.left)))
    out = [f"scale benchmark: {small.hosts} and {big.hosts} netns hosts; {lib.machine()}",
           lib.table(["hosts", "start s", "s/host", "deploy+start+test s", "s/host", "hosts_list s (cpu)",
                      "env_status s (cpu)", "env_status --probe ssh s (cpu)", "monitor pass s", "host PSS MB",
                      "controller PSS MB", "stop s", "left"], rows)]
    for f in (small, big):
        out.append(f"{f.hosts} hosts, the deploy round's fab runs, wall s (fab's CPU s): " + ", ".join(
            f"{name} {wall:.1f} ({cpu:.1f})" for name, (wall, cpu) in f.steps.items()))
    for f in (small, big):
        if f.left:
            out.append(f"left after env_stop ({f.hosts} hosts): {f.left[:5]}")
    out.append(f"start_per_host_500_over_50={(big.start_s / big.hosts) / (small.start_s / small.hosts):.3f} "
               f"deploy_per_host_500_over_50={(big.deploy_s / big.hosts) / (small.deploy_s / small.hosts):.3f} "
               f"status_s={big.status_s:.2f} pass_s={big.pass_s:.2f}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=500, help="hosts of the big lab (1..1000)")
    parser.add_argument("--small", type=int, default=50, help="hosts of the small lab it is compared with")
    parser.add_argument("--network", default="10.214.0.0/23", help="the big lab's network")
    parser.add_argument("--small-network", default="10.213.168.0/24", help="the small lab's network")
    parser.add_argument("--raise-limits", action="store_true",
                        help="raise the ARP table's limits (net.ipv4.neigh.default.gc_thresh2/3) for this run")
    args = parser.parse_args()
    if not 1 <= args.small <= 250 or not 1 <= args.hosts <= 1000:
        parser.error("--small must be 1..250 and --hosts 1..1000")
    if os.geteuid() != 0:
        print("bench/scale.py needs root (netns lab hosts)", file=sys.stderr)
        return 2
    try:
        restore = neigh_limits(neigh_needed(args.hosts), args.raise_limits)
    except BenchError as exc:
        print(f"bench/scale.py: {exc}", file=sys.stderr)
        return 2
    # PYTHONDONTWRITEBYTECODE in the caller's environment would make every fab run compile booted (0.4 s)
    compileall.compile_dir(str(lib.ROOT / "booted"), quiet=1)
    compileall.compile_dir(str(lib.ROOT / "fabfile"), quiet=1)
    try:
        return measure(args)
    finally:
        for k, v in restore.items():
            (NEIGH / k).write_text(str(v))


def measure(args: argparse.Namespace) -> int:
    figures = []
    for n, net in ((args.small, args.small_network), (args.hosts, args.network)):
        tmp = Path(tempfile.mkdtemp(prefix="booted-bench-scale-"))
        lab = Lab(tmp, n, net)
        try:
            figures.append(lab.run())
        except BenchError as exc:
            print(f"bench/scale.py: {n} hosts: {exc}", file=sys.stderr)
            return 1
        finally:
            if lab.ctx is not None:
                lab.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    print(report(*figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
