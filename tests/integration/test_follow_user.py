"""The monitor follows the user, and booted watches its own parts (issue 19, items 5 and 6; issue 20, item 1),
on a real netns lab: after env_stop + env_start_min the pool still grows; a host the user starts above min is
kept; a user's deploy is kept (pinned) until
environments.py's version changes, and the monitor follows an edited file (a broken edit is reported, the last
good one kept); a host that runs and serves but is off the host list (a monitor killed mid-heal) is listed
again; booted's nginx and apt proxy killed: env_status warns, the monitor restarts them; a frozen host is
"frozen/unreachable" in env_status."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from booted.discovery.aptproxy import AptProxy
from booted.discovery.nginx import Nginx
from booted.monitor.process import files
from tests.integration.conftest import LabRun, leftovers
from tests.integration.test_monitor import passes, wait_for
from tests.integration.test_netns_lab import health, make_hello_repo

pytestmark = pytest.mark.integration

NET = "10.213.94"
ENV = '''ENVIRONMENTS = {{"fu": {{"provider": "netns", "network": "{net}.0/24", "hosts": {{
    "web[01:03]": {{"role": "worker", "service": "hello", "version": "{version}"}}}},
    "min": {{"worker": 2}}, "monitor": {{"interval": 0.5, "failures": 2}}}}}}
'''


def write_env(lab_run: LabRun, version: str) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(net=NET, version=version))


def ips(lab_run: LabRun) -> dict[str, str]:
    return {h["name"]: h["ip"] for h in json.loads(lab_run.fab("hosts_list", "--json").stdout)}


def serves(ip: str) -> str | None:
    try:
        return health(ip)["version"]
    except OSError:
        return None


def log(lab_run: LabRun) -> str:
    ctx = lab_run.ctx()
    text = files(ctx, "fu")[1].read_text(errors="replace")
    ctx.close()
    return text


def images(lab_run: LabRun) -> list[dict[str, object]]:
    with sqlite3.connect(Path(lab_run.env["BOOTED_STATE_DIR"]) / "state.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT name, held FROM images ORDER BY name")]


def status(lab_run: LabRun) -> dict[str, dict[str, object]]:
    return {r["host"]: r for r in json.loads(lab_run.fab("env_status", "--json").stdout)}


def test_the_monitor_follows_the_user(lab_run: LabRun) -> None:
    write_env(lab_run, "1.0")
    lab_run.env["HELLO_REPO"] = str(make_hello_repo(lab_run.tmp))
    assert "3 ok, 0 failed" in lab_run.fab("env_start_all").stdout
    lab_run.fab("env_stop")
    assert "2 ok, 0 failed" in lab_run.fab("env_start_min").stdout
    lab_run.fab("monitor_start")
    # a user's stop of one host is respected, and the pool (web03, stopped by env_stop) still fills min
    lab_run.fab("image_stop", "web02")
    wait_for("web03 started to keep min 2", lambda: serves(f"{NET}.4") == "1.0")
    assert "pool exhausted" not in log(lab_run)
    assert "web02" not in ips(lab_run)

    # a user's deploy is kept: pinned, shown, never reverted
    out = lab_run.fab("hello_deploy", "--version", "1.1", "--hosts", "web01")
    assert "web01: hello 1.1 pinned (environments.py: 1.0)" in out.stderr, out.stderr
    # the user starts web02 again: above min (2), within the pool: the monitor keeps it (no max, no target)
    assert "1 ok, 0 failed" in lab_run.fab("env_start_worker", "web02").stdout
    passes(lab_run, "fu", 6)  # six whole passes of the monitor after the user's start
    assert serves(f"{NET}.2") == "1.1" and serves(f"{NET}.4") == "1.0" and serves(f"{NET}.3") == "1.0"
    assert "stop web02" not in log(lab_run) and "stop web0" not in log(lab_run)
    row = status(lab_run)["web01"]
    assert (row["want"], row["deployed"], row["state"]) == ("hello 1.1 (pinned)", "hello 1.1", "ok"), row
    assert json.loads(lab_run.fab("monitor_status", "--json").stdout)["pinned"] == {"web01": "1.1"}
    assert "deploy web01" not in log(lab_run)

    # the user edits environments.py: the monitor follows it (web03 gets 1.1; web01's pin is over)
    write_env(lab_run, "1.1")
    wait_for("web03 redeployed to 1.1", lambda: serves(f"{NET}.4") == "1.1")
    assert "changed: following it" in log(lab_run)
    wait_for("the pin is gone", lambda: json.loads(lab_run.fab("monitor_status", "--json").stdout)["pinned"] == {})
    # a broken edit is reported and the last good environment kept
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text("ENVIRONMENTS = {'fu': {'network': 7}}\n")
    wait_for("the broken edit reported", lambda: "does not validate; keeping the last good one" in log(lab_run))
    write_env(lab_run, "1.1")

    # a host that runs and serves but is off the list (the window a kill -9 mid-heal leaves) is listed again
    lab_run.fab("monitor_stop")

    def unlist() -> None:
        with sqlite3.connect(Path(lab_run.env["BOOTED_STATE_DIR"]) / "state.db") as db:
            db.execute("DELETE FROM hosts WHERE name = 'web03'")
        assert "web03" not in ips(lab_run)
    unlist()  # a service task lists it again (says so) instead of skipping it
    tested = lab_run.fab("hello_test")
    assert "web03: runs but was not in the host list: already running (listed again)" in tested.stderr, tested
    assert "3 ok, 0 failed" in tested.stdout, tested.stdout
    unlist()  # and so does the monitor
    lab_run.fab("monitor_start")
    wait_for("web03 listed again", lambda: "web03" in ips(lab_run))
    assert "web03 runs and serves but was not listed" in log(lab_run)

    # booted's own parts: killed, warned about, restarted by the monitor
    ctx = lab_run.ctx()
    nginx, apt = Nginx(ctx.settings), AptProxy(ctx.settings)
    lab_run.fab("monitor_stop")
    for pid in (nginx.pid(), apt.pid()):
        assert pid
        os.kill(pid, signal.SIGKILL)
    wait_for("both gone", lambda: nginx.pid() is None and apt.pid() is None)
    warned = lab_run.fab("env_status").stderr
    assert "WARNING: booted's nginx is down" in warned and "apt proxy (apt-cacher-ng) is down" in warned, warned
    lab_run.fab("monitor_start")
    wait_for("the monitor says it restarted them", lambda: "monitor: restarted booted's gateway" in log(lab_run))
    assert nginx.pid() is not None and apt.pid() is not None
    assert "WARNING" not in lab_run.fab("env_status").stderr
    lab_run.fab("monitor_stop")

    # a frozen host: env_status says so, at once
    ns = f"bt{ctx.lab().lab.lab_id}-web03"
    ctx.close()
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True).stdout.split()
    for pid in pids:
        os.kill(int(pid), signal.SIGSTOP)
    try:
        rows = status(lab_run)
        assert rows["web03"]["state"] == "frozen/unreachable" and rows["web03"]["reachable"] is False, rows
        assert rows["web01"]["state"] == "ok" and rows["web01"]["reachable"] is True
    finally:
        for pid in pids:
            os.kill(int(pid), signal.SIGCONT)
    lab_run.fab("monitor_start")
    stopped = lab_run.fab("env_stop")
    assert "3 ok, 0 failed" in stopped.stdout and "stopped the monitor of fu" in stopped.stderr
    assert leftovers(lab_run) == []
    assert "monitor of fu: not running" in lab_run.fab("monitor_status").stdout
    assert [i["held"] for i in images(lab_run)] == [0, 0, 0]  # env_stop leaves no host held


def test_a_full_state_dir_is_a_message_and_nothing_half_written(lab_run: LabRun) -> None:
    """The state dir on a 3 MB tmpfs, filled up: every task says so (exit 1, no traceback); once there is room
    again the same database works, with nothing half-recorded."""
    small = lab_run.tmp / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    try:
        lab_run.env["BOOTED_STATE_DIR"] = str(small / "state")
        write_env(lab_run, "1.0")
        assert lab_run.fab("image_list").returncode == 0
        filler = small / "filler"
        with open(filler, "wb") as out:  # fill the tmpfs to the last byte
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass
        for args in (["image_build", "--name", "web01"], ["hosts_list"], ["env_status"], ["image_list", "--json"],
                     ["hello_deploy"]):
            proc = lab_run.fab(*args, check=False)
            assert "Traceback" not in proc.stderr, (args, proc.stderr)
            assert proc.returncode in (0, 1, 2), (args, proc.returncode, proc.stderr)
        built = lab_run.fab("image_build", "--name", "web01", check=False)
        assert built.returncode == 1, built.stdout + built.stderr
        assert (f"the state directory {small / 'state'}" in built.stderr and "is full" in built.stderr) \
            or "cannot be written" in built.stderr, built.stderr
        filler.unlink()
        assert json.loads(lab_run.fab("image_list", "--json").stdout) == []  # nothing half-recorded
        lab_run.fab("image_build", "--name", "web01")
        assert [i["name"] for i in json.loads(lab_run.fab("image_list", "--json").stdout)] == ["web01"]
        lab_run.fab("image_del", "web01")
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_lab_traffic_never_goes_through_a_proxy(lab_run: LabRun) -> None:
    """A company proxy in the user's environment (here a dead one on loopback): start, test and status still
    reach the lab directly (issue 20, item 2)."""
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(net="10.213.98", version="1.0"))
    dead = "http://127.0.0.1:9"  # nothing listens there: every proxied request would fail
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        lab_run.env[name] = lab_run.env[name.upper()] = dead
    lab_run.env.pop("no_proxy", None)
    lab_run.env.pop("NO_PROXY", None)
    assert "3 ok, 0 failed" in lab_run.fab("env_start_all").stdout
    assert "3 ok, 0 failed" in lab_run.fab("hello_test").stdout
    assert {r["state"] for r in status(lab_run).values()} == {"ok"}
