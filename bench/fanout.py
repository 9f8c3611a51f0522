"""Fan-out benchmark: deploy + start + test the hello service on N netns lab hosts with booted, Ansible,
pyinfra and bare Fabric, verified, median of --runs.

    sudo .venv/bin/python bench/fanout.py --hosts 50          # the full benchmark (about 5 minutes)
    sudo .venv/bin/python bench/fanout.py --hosts 3 --runs 1  # smoke

Brings up N hosts with booted (in-process, private state directory, the cached golden image), then per run
and per tool deploys a release that no earlier run deployed (a tag of a temporary git repository of
service/hello, set as HELLO_REPO), starts it and checks /health. Each tool's time counts only after every
host's /health served the version just deployed (checked by this script, outside the timing). booted's
bytecode is compiled first (as an installed booted has it, whatever PYTHONDONTWRITEBYTECODE says).
Always tears the lab down. The last line is `booted_over_ansible=X booted_over_pyinfra=Y booted_over_floor=Z`.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _benchlib as lib
import _rivals
from _benchlib import BenchError, say

from booted.config import Settings
from booted.context import Booted
from booted.remote import deploy
from booted.remote.fanout import Target
from booted.remote.services import package

TOOLS = ("floor", "booted", "booted1", "fabric", "pyinfra", "ansible")
LABELS = {
    "floor": "floor: Fabric ThreadingGroup `true` (own process)",
    "booted": "booted: fab hello_deploy; fab hello_start; fab hello_test",
    "booted1": "booted: fab hello_deploy hello_start hello_test (one fab)",
    "fabric": "floor + work: bare Fabric script, same 3 steps (one process)",
    "pyinfra": "pyinfra: put + shell + shell + python.call GET",
    "ansible": "Ansible: copy + shell + shell + uri (delegate_to localhost)",
}
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n = args.hosts
        self.tmp = Path(tempfile.mkdtemp(prefix="booted-bench-fanout-"))
        self.state = self.tmp / "state"
        self.envfile = self.tmp / "environments.py"
        self.repo = self.tmp / "hello-repo"
        self.tags = ["1.0", "prof-booted", "prof-fabric"] + [f"r{r}-{t}" for r in range(1, args.runs + 1)
                                                             for t in TOOLS if t != "floor"]
        self.profiles: list[str] = []
        self.env = lib.booted_env(self.state, self.envfile, HELLO_REPO=str(self.repo))
        self.ctx: Booted | None = None
        self.hosts: list[Target] = []
        self.times: dict[str, list[float]] = {t: [] for t in TOOLS}
        self.steps: dict[str, list[float]] = {"hello_deploy": [], "hello_start": [], "hello_test": []}
        self.startup: list[float] = []
        self.bringup = 0.0

    # setup ---------------------------------------------------------------------------------------
    def write_environments(self) -> None:
        last = f"{self.n:03d}"
        self.envfile.write_text(
            "ENVIRONMENTS = " + repr({"bench": {"provider": "netns", "network": self.args.network, "hosts": {
                f"w[001:{last}]" if self.n > 1 else "w001": {"role": "worker", "service": "hello",
                                                           "version": "1.0"}}}}) + "\n")

    def make_repo(self) -> None:
        """A git repository of service/hello with one tag per release this benchmark deploys."""
        src = lib.ROOT / "service" / "hello"
        shutil.copytree(src, self.repo, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        git = ["git", "-C", str(self.repo), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "hello"]):
            subprocess.run(git + cmd, check=True, capture_output=True)
        for tag in self.tags:
            subprocess.run(git + ["tag", tag], check=True, capture_output=True)

    def bring_up(self) -> None:
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("BOOTED_", "HELLO_"))})
        os.environ.pop("BOOTED_ENV", None)
        self.ctx = Booted(Settings.from_env(self.env), say=lambda line: say(f"booted: {line}"))
        start = time.perf_counter()
        report = self.ctx.runs().start_all()
        self.bringup = time.perf_counter() - start
        bad = [f"{h}: {[s[h].detail for s in report.steps.values() if h in s]}" for h in report.failed()]
        if bad:
            raise BenchError(f"{len(bad)} host(s) did not come up: " + "; ".join(bad[:5]))
        self.hosts = [Target(h.name, h.ip) for h in self.ctx.inventory.hosts()]
        if len(self.hosts) != self.n:
            raise BenchError(f"expected {self.n} listed hosts, found {len(self.hosts)}")
        self.verify("1.0")

    # verification ----------------------------------------------------------------------------------
    def verify(self, version: str) -> None:
        """Every host's /health serves `version` with its own name (outside the timing)."""
        def one(t: Target) -> str | None:
            try:
                with urllib.request.urlopen(f"http://{t.ip}:8000/health", timeout=5) as resp:
                    data = json.loads(resp.read(65536))
            except (OSError, ValueError) as exc:
                return f"{t.name}: {exc}"
            if data.get("host") != t.name or data.get("version") != version:
                return f"{t.name}: serves {data.get('host')!r} {data.get('version')!r}, expected {version!r}"
            return None
        with ThreadPoolExecutor(max_workers=min(32, len(self.hosts))) as pool:
            problems = [p for p in pool.map(one, self.hosts) if p]
        if problems:
            raise BenchError(f"verification of {version} failed on {len(problems)} host(s): {problems[:5]}")

    # per-tool inputs -------------------------------------------------------------------------------
    def release_inputs(self, version: str) -> list[dict[str, str]]:
        """Per host: the release tarball of `version` on disk and booted's remote scripts for it."""
        assert self.ctx is not None
        service = self.ctx.service("hello")
        release = package(service, version, str(self.repo))
        tarball = self.tmp / "releases" / f"{release.id}.tar.gz"
        tarball.parent.mkdir(exist_ok=True)
        tarball.write_bytes(release.data)
        incoming = f"{deploy.ROOT}/.incoming-{service.name}-{release.id}.tar.gz"
        backends = deploy.backends(self.ctx, service, self.hosts)
        return [{"name": t.name, "ip": t.ip, "tarball": str(tarball), "incoming": incoming, "version": version,
                 # booted's own scripts; the other tools restart in their start step, not in deploy
                 "deploy_script": deploy.deploy_script(service, t, release, incoming, backends[t.name], restart=False),
                 "start_script": deploy.start_script(service, t)} for t in self.hosts]

    def log(self, version: str, suffix: str = "") -> Path:
        return self.tmp / "logs" / f"{version}{suffix}.log"

    @property
    def key(self) -> str:
        return str(self.state / "keys" / "lab_ed25519")

    @property
    def known_hosts(self) -> str:
        return str(self.state / "keys" / "known_hosts")

    # the tools ------------------------------------------------------------------------------------
    def run_floor(self, version: str) -> float:
        job = self.tmp / "floor.json"
        job.write_text(json.dumps({"key": self.key, "known_hosts": self.known_hosts,
                                   "hosts": [{"name": t.name, "ip": t.ip} for t in self.hosts]}))
        seconds, _ = lib.timed([lib.PYTHON, str(lib.ROOT / "bench" / "_fabric_run.py"), "true", str(job)])
        return seconds

    def fabric_job(self, version: str) -> Path:
        job = self.tmp / "fabric.json"
        job.write_text(json.dumps({"key": self.key, "known_hosts": self.known_hosts,
                                   "hosts": self.release_inputs(version)}))
        return job

    def run_fabric(self, version: str) -> float:
        job = self.fabric_job(version)
        seconds, _ = lib.timed([lib.PYTHON, str(lib.ROOT / "bench" / "_fabric_run.py"), "deploy", str(job)])
        return seconds

    def run_booted(self, version: str) -> float:
        total = 0.0
        for cmd in (["hello_deploy", "--version", version], ["hello_start"], ["hello_test"]):
            seconds, _ = lib.timed([lib.FAB, *cmd], env=self.env)
            self.steps[cmd[0]].append(seconds)
            total += seconds
        return total

    def run_booted1(self, version: str) -> float:
        seconds, _ = lib.timed([lib.FAB, "hello_deploy", "--version", version, "hello_start", "hello_test"],
                               env=self.env)
        return seconds

    def run_ansible(self, version: str) -> float:
        return _rivals.ansible(self.tmp / "ansible", self.release_inputs(version), version, self.key,
                               self.known_hosts, self.env, self.log(version))

    def run_pyinfra(self, version: str) -> float:
        return _rivals.pyinfra(self.tmp / "pyinfra", self.release_inputs(version), version, self.key,
                               self.known_hosts, self.env, self.log(version))

    # the benchmark ----------------------------------------------------------------------------------
    def run(self) -> None:
        self.write_environments()
        self.make_repo()
        say(f"bringing up {self.n} host(s) on {self.args.network} (state {self.state})")
        self.bring_up()
        say(f"{self.n} host(s) up and serving 1.0 in {self.bringup:.1f}s")
        for _ in range(self.args.runs):
            self.startup.append(lib.timed([lib.FAB, "--list"], env=self.env)[0])
        for r in range(1, self.args.runs + 1):
            for tool in self.args.tools:
                version = f"r{r}-{tool}"
                seconds = getattr(self, f"run_{tool}")(version)
                if tool != "floor":
                    self.verify(version)
                self.times[tool].append(seconds)
                say(f"run {r}/{self.args.runs} {tool}: {seconds:.2f}s (verified)")
        if self.args.profile:
            import _profile
            self.profiles = _profile.profile(self)

    def stop_ssh_masters(self) -> None:
        """Ansible's ControlPersist masters are ours: close them before their hosts go away."""
        for sock in (self.tmp / "ansible" / "cp").glob("*") if (self.tmp / "ansible" / "cp").exists() else []:
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench"], capture_output=True,
                           check=False, timeout=10)

    def teardown(self) -> None:
        self.stop_ssh_masters()
        if self.args.keep_up:
            say(f"--keep-up: hosts still run; stop them with BOOTED_STATE_DIR={self.state} "
                f"BOOTED_ENVIRONMENTS={self.envfile} BOOTED_CACHE_DIR={self.env['BOOTED_CACHE_DIR']} fab env_stop")
            return
        ctx = self.ctx or Booted(Settings.from_env(self.env), say=lambda line: say(f"booted: {line}"))
        try:
            if self.envfile.exists() and self.state.exists():
                start = time.perf_counter()
                outcomes = ctx.lab().stop_all()
                bad = [o for o in outcomes if not o.ok]
                say(f"teardown: stopped {len(outcomes)} host(s) in {time.perf_counter() - start:.1f}s"
                    + (f", {len(bad)} failed: {bad[:3]}" if bad else ""))
                prefix = f"bt{ctx.settings.lab_id('bench')}-"
                left = [n for n in os.listdir("/run/netns") if n.startswith(prefix)] \
                    if os.path.isdir("/run/netns") else []
                if left:
                    say(f"WARNING: {len(left)} namespace(s) left: {left[:5]}")
        finally:
            ctx.close()
            if not self.args.keep_tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def report(self) -> str:
        booted = lib.median(self.times["booted"])
        rows = []
        for tool in self.args.tools:
            t = lib.median(self.times[tool])
            if not self.times[tool]:
                continue
            rows.append((LABELS[tool], f"{t:.2f}", " ".join(f"{x:.2f}" for x in self.times[tool]),
                         f"{booted / t:.3f}" if t else "-"))
        out = [f"fan-out benchmark: {self.n} netns hosts, median of {self.args.runs} run(s); {lib.machine()}",
               f"bring-up (booted env_start_all in-process, incl. first deploy/start/test): {self.bringup:.2f}s",
               lib.table(["tool", "median s", "runs s", "booted / this"], rows)]
        if self.steps["hello_deploy"]:
            out.append("booted per step (median s): " + ", ".join(
                f"{k} {lib.median(v):.2f}" for k, v in self.steps.items())
                       + f"; fab start-up (fab --list) {lib.median(self.startup):.2f}")
        ratios = {k: booted / lib.median(self.times[k]) if self.times[k] else float("nan")
                  for k in ("ansible", "pyinfra", "floor")}
        out.append(f"booted_over_ansible={ratios['ansible']:.3f} booted_over_pyinfra={ratios['pyinfra']:.3f} "
                   f"booted_over_floor={ratios['floor']:.3f}")
        return "\n".join(self.profiles + out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=50, help="number of lab hosts (1..250)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool; the median counts")
    parser.add_argument("--network", default="10.213.150.0/24", help="lab network (a /24 of 10.213.150-199)")
    parser.add_argument("--tools", default="", help=f"comma list (default all): {','.join(TOOLS)}")
    parser.add_argument("--profile", action="store_true", help="then where booted's time goes (bench/README.md)")
    parser.add_argument("--keep-up", action="store_true", help="debugging: leave the hosts running (no teardown)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (debugging)")
    args = parser.parse_args()
    args.tools = [t for t in args.tools.split(",") if t] if args.tools else list(TOOLS)
    if any(t not in TOOLS for t in args.tools) or "booted" not in args.tools:
        parser.error(f"--tools: a comma list of {', '.join(TOOLS)} that includes booted")
    if not 1 <= args.hosts <= 250 or args.runs < 1:
        parser.error("--hosts must be 1..250 and --runs at least 1")
    if os.geteuid() != 0:
        print("bench/fanout.py needs root (netns lab hosts)", file=sys.stderr)
        return 2
    missing = [t for t in ("ansible-playbook", "pyinfra", "fab") if not (lib.BIN / t).exists()]
    if missing:
        print(f"missing {', '.join(missing)} in {lib.BIN}: {lib.BIN}/pip install -e '.[bench]'", file=sys.stderr)
        return 2
    # PYTHONDONTWRITEBYTECODE in the caller's environment would make every fab run compile booted (0.4 s)
    compileall.compile_dir(str(lib.ROOT / "booted"), quiet=1)
    compileall.compile_dir(str(lib.ROOT / "fabfile"), quiet=1)
    bench = Bench(args)
    try:
        bench.run()
    except BenchError as exc:
        print(f"bench/fanout.py: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.teardown()
    print(bench.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
