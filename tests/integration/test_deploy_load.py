"""Deploys that hold under load (issue 19): a netns lab (lb + 3 hello workers) with 20 clients on the lb,
bounded in count and time. A deploy under that load ends with every host serving what the database says,
exactly one supervisor per host, no request lost through the lb; a stop is verified; and two deploys of
different versions at once run one after the other (the second says it waits), ending on one version."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.conftest import FAB, LabRun
from tests.integration.test_netns_lab import git, health

pytestmark = pytest.mark.integration

NET = "10.213.91"
ENV = '''ENVIRONMENTS = {{"dl": {{"provider": "netns", "network": "{net}.0/24", "hosts": {{
    "lb01": {{"role": "lb", "service": "lb"}},
    "web[01:03]": {{"role": "worker", "service": "hello", "version": "1.0"}}}}}}}}
'''
LB = f"http://{NET}.2:8080/"
CLIENTS, MAX_SECONDS = 20, 30
SUPERVISORS = "pgrep -fxc 'sh /srv/booted/hello/run.sh' || true"


class Load:
    """CLIENTS threads GETting the lb back to back until stopped (at most MAX_SECONDS); counts failures."""

    def __init__(self) -> None:
        self.ok, self.errors, self.stop = 0, [], threading.Event()
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + MAX_SECONDS
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(CLIENTS)]

    def client(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                with urllib.request.urlopen(LB, timeout=5) as resp:
                    resp.read()
                with self.lock:
                    self.ok += 1
            except OSError as exc:
                with self.lock:
                    self.errors.append(str(exc))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + 20
        while self.ok < CLIENTS:  # the load is on before the deploy starts: as many answers as clients
            if time.monotonic() >= deadline:
                self.__exit__()
                raise AssertionError(f"the load did not start: {self.ok} answers in 20 s, {self.errors[:3]}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


def make_repo(tmp: Path) -> Path:
    """hello at 1.0, 1.1 and 2.0; 2.0 takes 3 s to start listening (a deploy of it holds its lock that long)."""
    repo = tmp / "hello-repo"
    repo.mkdir()
    git(repo, "init", "-q")
    app = (REPO / "service" / "hello" / "app.py").read_text()
    for version in ("1.0", "1.1", "2.0"):
        text = app if version != "2.0" else app.replace("def main() -> None:\n",
                                                        "def main() -> None:\n    import time\n    time.sleep(3)\n")
        assert version != "2.0" or text != app
        (repo / "app.py").write_text(text)
        (repo / "service.toml").write_text((REPO / "service" / "hello" / "service.toml").read_text())
        (repo / "CHANGES").write_text(f"release {version}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", version)
        git(repo, "tag", version)
    return repo


def per_host(out: str) -> dict[str, str]:
    """hosts_run's output ('--- web01' then its one line) -> host -> that line."""
    lines = out.splitlines()
    return {line[4:]: lines[i + 1].strip() for i, line in enumerate(lines[:-1]) if line.startswith("--- ")}


def consistent(lab_run: LabRun) -> str:
    """Every hello host serves the version the database records for it (hosts_list and env_status), all the
    same one, with exactly one supervisor; returns that version."""
    listed = {h["name"]: h for h in json.loads(lab_run.fab("hosts_list", "--json").stdout) if h["service"] == "hello"}
    serving = {name: health(h["ip"]) for name, h in listed.items()}
    assert {n: s["host"] for n, s in serving.items()} == {n: n for n in listed}
    assert {n: s["version"] for n, s in serving.items()} == {n: h["version"] for n, h in listed.items()}, listed
    status = {r["host"]: r["deployed"] for r in json.loads(lab_run.fab("env_status", "--json").stdout)}
    assert {n: status[n] for n in listed} == {n: f"hello {s['version']}" for n, s in serving.items()}
    counts = per_host(lab_run.fab("hosts_run", SUPERVISORS, "--hosts", ",".join(sorted(listed))).stdout)
    assert counts == {n: "1" for n in listed}, counts
    versions = {s["version"] for s in serving.values()}
    assert len(versions) == 1, serving  # never a mixed fleet
    return versions.pop()


def start(lab_run: LabRun, net: str) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(net=net))
    lab_run.env["HELLO_REPO"] = str(make_repo(lab_run.tmp))
    out = lab_run.fab("env_start_all").stdout
    assert "4 ok, 0 failed" in out, out
    assert consistent(lab_run) == "1.0"


def test_deploys_under_load_end_consistent(lab_run: LabRun) -> None:
    start(lab_run, NET)

    with Load() as load:  # a deploy under 20 clients: every host proves the new version, nothing lost
        took = time.monotonic()
        out = lab_run.fab("hello_deploy", "--version", "1.1", timeout=200).stdout
        took = time.monotonic() - took
        assert "3 ok, 0 failed" in out, out
    print(f"deploy under {CLIENTS} clients: {took:.1f}s, {load.ok} requests through the lb")
    assert load.ok > 0 and not load.errors, f"{len(load.errors)} failed: {load.errors[:3]}"
    assert consistent(lab_run) == "1.1"

    # a stop is verified: no supervisor left, nothing listens; a start brings back exactly one
    stop = lab_run.fab("hello_stop", "--hosts", "web01").stdout
    assert "verified gone" in stop, stop
    web01 = {h["name"]: h["ip"] for h in json.loads(lab_run.fab("hosts_list", "--json").stdout)}["web01"]
    with pytest.raises(OSError):
        health(web01)
    assert per_host(lab_run.fab("hosts_run", SUPERVISORS, "--hosts", "web01").stdout) == {"web01": "0"}
    assert "1 ok, 0 failed" in lab_run.fab("hello_start", "--hosts", "web01").stdout
    assert consistent(lab_run) == "1.1"

    # two deploys of different versions at once: the second waits for the first and says so
    lock = Path(lab_run.env["BOOTED_STATE_DIR"]) / "locks" / "service-dl-hello.lock"
    env = {**lab_run.env}
    with Load() as load:
        first = subprocess.Popen([FAB, "hello_deploy", "--version", "2.0"], cwd=REPO, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not held(lock, first.pid):  # the first holds the service's lock before the second starts
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        # the first stays paused while the second starts (however slow its start on a busy machine), until the
        # second says it waits for the first: the two overlap for sure, then the first goes on
        os.kill(first.pid, signal.SIGSTOP)
        try:
            second = subprocess.Popen([FAB, "hello_deploy", "--version", "1.1"], cwd=REPO, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            said = said_waiting(second, 120)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        outs = [(p.wait(timeout=300), *p.communicate()) for p in (first, second)]
        outs[1] = (outs[1][0], outs[1][1], said + outs[1][2])
    assert [code for code, _, _ in outs] == [0, 0], outs
    assert all("3 ok, 0 failed" in out for _, out, _ in outs), outs
    assert "waiting" not in outs[0][2], outs[0][2]
    assert re.search(r"another booted run \(pid \d+\) is running hello_deploy 2\.0 in environment 'dl': waiting",
                     outs[1][2]), outs[1][2]
    assert not load.errors, f"{len(load.errors)} failed: {load.errors[:3]}"
    assert consistent(lab_run) == "1.1"  # the second ran last: the whole fleet, and the database, say 1.1


def said_waiting(proc: subprocess.Popen[str], seconds: float) -> str:
    """`proc`'s stderr up to its line that says it waits for another run (within `seconds`)."""
    assert proc.stderr is not None
    said, deadline = "", time.monotonic() + seconds
    while "waiting" not in said:
        assert time.monotonic() < deadline and proc.poll() is None, said
        if select.select([proc.stderr], [], [], 1.0)[0]:
            said += proc.stderr.readline()
    return said


def held(lock: Path, pid: int) -> bool:
    """Whether process `pid` holds the flock on `lock` now and has written so into it (a holder writes "pid
    what" just after taking the flock; the file keeps the last holder's line after it is released)."""
    if not lock.exists() or not lock.read_text().startswith(f"{pid} "):
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def deploying(ns: str) -> bool:
    """Whether booted's deploy script runs in the host's network namespace (until it has switched and the old
    version is gone, both versions may answer)."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    return any(b"# booted: deploy" in cmdline(pid) for pid in pids)


def test_a_deploy_cut_by_a_freeze_never_leaves_the_database_wrong(lab_run: LabRun) -> None:
    """web02 freezes while its deploy script runs: booted gives up on it (its timeout), so the database no
    longer claims a version there; the host finishes the deploy when it thaws (the script does not die with
    the connection) and serves 2.0 beside one supervisor; the next test proves it, and the database follows."""
    start(lab_run, "10.213.96")
    ctx = lab_run.ctx()
    handle = ctx.lab()
    ns = f"bt{handle.lab.lab_id}-web02"
    deploy = subprocess.Popen([FAB, "hello_deploy", "--version", "2.0"], cwd=REPO, text=True,
                              env={**lab_run.env, "BOOTED_TIMEOUT": "5"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    frozen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not frozen:  # freeze the whole host once its deploy script runs (2.0 takes 3 s to listen)
            assert deploy.poll() is None and time.monotonic() < deadline, deploy.communicate()
            if deploying(ns):
                # the host's freezer cgroup: every process of it at once, also one its script forks meanwhile
                # (a SIGSTOP per listed pid missed a hello 2.0 started in between, which then served)
                assert handle.provider.pause(handle.lab, ["web02"]) == {}
                frozen = [ns]
            time.sleep(0.05)
        code, out, err = deploy.wait(timeout=120), *deploy.communicate()
        assert code == 1 and "2 ok, 1 failed" in out, out + err
        versions = {h["name"]: h["version"] for h in json.loads(lab_run.fab("hosts_list", "--json").stdout)}
        assert versions["web02"] is None, versions  # unknown: not the 1.0 it ran before
    finally:
        if frozen:
            handle.provider.resume(handle.lab, ["web02"])
        ctx.close()
    ip = {h["name"]: h["ip"] for h in json.loads(lab_run.fab("hosts_list", "--json").stdout)}["web02"]
    deadline = time.monotonic() + 30
    while deploying(ns) or health(ip)["version"] != "2.0":  # the host finishes the deploy on its own
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "3 ok, 0 failed" in lab_run.fab("hello_test", "--version", "2.0").stdout
    assert consistent(lab_run) == "2.0"


def cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
