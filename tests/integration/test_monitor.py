"""The monitor on a real netns lab (lb + a pool of hello workers): a killed worker is healed with no failed
request, load grows the pool to max and its end shrinks it after the (short) window, a user's stop is
respected, kill -9 of the daemon and a restart leave nothing behind, env_stop stops the daemon."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from booted.context import Booted
from booted.discovery.nginx import Nginx
from booted.monitor.process import running
from booted.monitor.statusfile import status_file
from booted.providers.procs import alive, processes
from tests.integration.conftest import LabRun, leftovers

pytestmark = pytest.mark.integration

ENV = '''ENVIRONMENTS = {"mon": {"provider": "netns", "network": "10.213.32.0/24", "hosts": {
    "lb01": {"role": "lb", "service": "lb", "version": "1.0"},
    "web[01:03]": {"role": "worker", "service": "hello", "version": "1.0"}},
    "min": {"lb": 1, "worker": 2}, "max": {"worker": 3}, "target": {"worker": 5},
    "monitor": {"interval": 1, "window": 8}}}
'''
LB = "http://10.213.32.2:8080/"


class Load:
    """Requests at a steady rate against the lb (a lab address) from 4 threads (so the rate holds while a busy
    machine makes each request slow: one thread at 25/s needs answers within 40 ms); counts failures."""

    THREADS = 4

    def __init__(self, rate: float, url: str = LB) -> None:
        self.rate, self.url, self.ok, self.failed = rate, url, 0, 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(self.THREADS)]

    def run(self) -> None:
        due = time.monotonic()
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as resp:
                    resp.read()
                ok = True
            except OSError:
                ok = False
            with self.lock:
                self.ok += ok
                self.failed += not ok
            due += self.THREADS / self.rate
            time.sleep(max(0.0, due - time.monotonic()))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def status(lab_run: LabRun) -> dict[str, object]:
    return json.loads(lab_run.fab("monitor_status", "--json").stdout)


def wait_for(what: str, check: object, timeout: float = 45, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(every)
    raise AssertionError(f"not within {timeout}s: {what}")


def passes(lab_run: LabRun, env: str, count: int) -> None:
    """Wait until the monitor of `env` has made `count` whole passes that began after this call (a pass writes
    its status file when it ends, so the one under way now is not counted)."""
    path = status_file(Path(lab_run.env["BOOTED_STATE_DIR"]), env)

    def ended() -> float:
        try:
            return float(json.loads(path.read_text())["at"])
        except (OSError, ValueError, KeyError):
            return 0.0
    last = time.time()
    for n in range(count + 1):
        wait_for(f"pass {n} of {count} of the monitor of {env}", lambda after=last: ended() > after)
        last = ended()


@contextmanager
def gateway_frozen(lab_run: LabRun) -> Iterator[None]:
    """booted's nginx (master and workers) stopped with SIGSTOP while the block runs: a host booting now can
    neither fetch its release nor phone home, so its start stays in progress until the block ends (a test can
    then act in the middle of that start, e.g. kill the monitor, without catching a short state by polling)."""
    ctx = lab_run.ctx()
    master = Nginx(ctx.settings).pid()
    ctx.close()
    assert master, "booted's nginx is not running"
    pids = [master] + [int(p) for p in subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True,
                                                      check=False).stdout.split()]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def host_trees(ctx: Booted) -> list[str]:
    """The lab host each netns host process (`unshare ... booted-host <root>`) belongs to, once per process."""
    lab = ctx.lab().lab
    provider = ctx.lab().provider
    return [name for _, argv in processes() if (name := provider.host_of(lab, argv)) is not None]


def workers(lab_run: LabRun) -> list[str]:
    roles = status(lab_run)["last_pass"]["roles"]  # type: ignore[index]
    return roles["worker"]["healthy"]  # type: ignore[no-any-return]


def api(url: str, path: str, token: str | None, method: str = "GET") -> tuple[int, str]:
    base = url.split("/?token=")[0]
    req = urllib.request.Request(base + path, method=method,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def check_api_and_page(lab_run: LabRun) -> None:
    """The local API (token from the state directory), its metrics, one action per host, and the status page
    in a real headless browser."""
    url = (Path(lab_run.env["BOOTED_STATE_DIR"]) / "monitor" / "mon.url").read_text().strip()
    assert url.startswith("http://127.0.0.1:")
    token = url.split("token=")[1]
    assert api(url, "/api/status", None)[0] == 401
    code, text = api(url, "/metrics", token)
    assert code == 200 and 'booted_hosts{env="mon",role="worker",state="healthy"} 2' in text
    assert api(url, "/api/hosts/web02/reprovision", token, "POST")[0] == 202
    code, text = api(url, "/api/hosts/web02/reprovision", token, "POST")
    assert code == 409 and "one action per host" in text
    assert api(url, "/api/hosts/nosuch/reprovision", token, "POST")[0] == 404
    wait_for("the reprovision done", lambda: any(a["reason"] == "reprovision requested through the API"
                                                 and a["status"] == "done" for a in status(lab_run)["actions"]))
    chromium = shutil.which("chromium")
    if chromium is None:
        return  # the rest needs Debian's chromium (CI installs it)
    dom = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert 'id="env">mon<' in dom and "web02, web03" in dom, dom[-2000:]
    assert 'class="load" data-role="worker"' in dom and 'class="healthy" data-role="worker"' in dom
    assert 'class="event heal"' in dom  # the reprovision, marked on the plot


def test_the_monitor_heals_scales_and_respects_the_user(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV)
    assert "3 ok, 0 failed" in lab_run.fab("env_start_min").stdout
    assert "started" in lab_run.fab("monitor_start").stdout
    again = lab_run.fab("monitor_start", check=False)
    assert again.returncode == 1 and "already runs" in again.stderr
    wait_for("a first pass", lambda: status(lab_run)["last_pass"])

    # a worker dies: the lb retries on the other at once, the monitor brings it back; no request fails
    with Load(6) as load:
        wait_for("the load flows", lambda: load.ok >= 5)
        ctx = lab_run.ctx()
        os.kill(ctx.lab().running()["web02"], signal.SIGKILL)
        ctx.close()
        wait_for("web02 healed", lambda: sorted(workers(lab_run)) == ["web01", "web02"])
        healed = load.ok
        wait_for("12 more requests served after the heal", lambda: load.ok >= healed + 12)  # and keeps serving
    assert load.failed == 0 and load.ok >= 15, (load.ok, load.failed)
    # HAProxy's per-backend counters, read by the monitor through the lb's `stats` command
    servers = status(lab_run)["last_pass"]["lbs"]["lb01"]  # type: ignore[index]
    assert sorted(servers) == ["10.213.32.3:8000", "10.213.32.4:8000"], servers
    assert all(c["requests"] > 0 and c["status"].startswith("UP") for c in servers.values()), servers
    assert "10.213.32.4:8000" in lab_run.fab("monitor_status").stdout

    # load above the target grows the pool to max, also when the daemon is killed (-9) in the middle of the
    # scale-up: the next daemon marks that action failed and converges, each host running once, no lock left.
    # The middle is held open: with booted's nginx stopped, the new host boots but cannot phone home.
    with Load(25):
        ctx = lab_run.ctx()
        daemon = running(ctx, "mon")
        with gateway_frozen(lab_run):
            # held open (the gateway frozen) until the daemon is killed: no short-lived state to catch, so the
            # wait's margin is only how long a busy machine takes to decide and begin (45 s once fell short)
            wait_for("a scale-up under way, its host booting", lambda: "web03" in host_trees(ctx) and any(
                a["kind"] == "start" and a["status"] == "in progress" for a in ctx.inventory.actions("mon")),
                timeout=120)
            os.kill(daemon, signal.SIGKILL)  # type: ignore[arg-type]
        assert "started" in lab_run.fab("monitor_start").stdout
        wait_for("scaled up to 3", lambda: len(workers(lab_run)) == 3, timeout=120)
        assert any(a["kind"] == "start" and a["status"] == "failed" and "interrupted" in str(a["detail"])
                   for a in ctx.inventory.actions("mon"))
        assert sorted(host_trees(ctx)) == ["lb01", "web01", "web02", "web03"]  # one process tree per host
        ctx.close()
    ended = time.monotonic()
    wait_for("scaled down to 2", lambda: len(workers(lab_run)) == 2, timeout=40)
    assert time.monotonic() - ended >= 6, "scaled down before the stabilization window"

    # a user's stop wins: web01 is not restarted; another pool host keeps the minimum
    lab_run.fab("image_stop", "web01")
    wait_for("web03 replaces web01", lambda: sorted(workers(lab_run)) == ["web02", "web03"])
    passes(lab_run, "mon", 3)
    assert "web01" not in workers(lab_run)
    kinds = [(a["kind"], a["host"], a["status"]) for a in status(lab_run)["actions"]]  # type: ignore[index]
    assert ("start", "web03", "done") in kinds and ("start", "web01", "done") not in kinds[:2]

    check_api_and_page(lab_run)

    # kill -9 of the daemon; a restart reconciles; env_stop stops it and leaves nothing
    pid = status(lab_run)["pid"]
    os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
    assert "started" in lab_run.fab("monitor_start").stdout
    wait_for("a pass of the new daemon", lambda: status(lab_run)["pid"] not in (None, pid)
             and sorted(workers(lab_run)) == ["web02", "web03"])
    stop = lab_run.fab("env_stop")
    assert "stopped the monitor" in stop.stderr
    assert leftovers(lab_run) == []
    assert "not running" in lab_run.fab("monitor_status").stdout


QEMU_ENV = '''ENVIRONMENTS = {"qmon": {"provider": "qemu", "network": "10.213.63.0/24", "hosts": {
    "v[1:2]": {"role": "worker", "service": "hello", "version": "1.0"}},
    "min": {"worker": 1}, "monitor": {"interval": 1}}}
'''


def test_a_killed_vm_is_healed(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(QEMU_ENV)
    assert "1 ok, 0 failed" in lab_run.fab("env_start_min", timeout=600).stdout
    lab_run.fab("monitor_start")
    wait_for("a first pass", lambda: status(lab_run)["last_pass"])
    ctx = lab_run.ctx()
    # kill -9 of the daemon while it boots the replacement VM; the next daemon marks that action failed and
    # reconciles: one VM for v1 in the end, none orphaned, no lock left behind. Both boots are held open until
    # the next daemon acts: with booted's nginx stopped, a VM can neither fetch its release nor phone home
    lab_id = ctx.lab().lab.lab_id

    def v1(*states: str) -> bool:
        return any(a["host"] == "v1" and a["status"] in states for a in status(lab_run)["actions"])  # type: ignore[union-attr]
    with gateway_frozen(lab_run):
        killed = ctx.lab().running()["v1"]
        os.kill(killed, signal.SIGKILL)
        wait_for("the heal in progress, its VM booting", lambda: v1("in progress") and any(
            alive(p) and p != killed for p, argv in processes() if f"booted-{lab_id}-v1" in argv), timeout=60)
        os.kill(status(lab_run)["pid"], signal.SIGKILL)  # type: ignore[arg-type]
        lab_run.fab("monitor_start")
        wait_for("the heal interrupted and the next daemon's action under way", lambda: v1("failed")
                 and v1("in progress"), timeout=60)
    wait_for("the VM healed", lambda: v1("done"), timeout=180)
    actions = status(lab_run)["actions"]
    assert any(a["status"] == "failed" and "interrupted" in a["detail"] for a in actions), actions  # type: ignore[union-attr]
    assert "1 ok" in lab_run.fab("hello_test").stdout
    assert len([p for p, argv in processes() if f"booted-{lab_id}-v1" in argv]) == 1
    ctx.close()
    lab_run.fab("env_stop")
    assert leftovers(lab_run) == []
