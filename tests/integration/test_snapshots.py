"""Lab snapshots on netns hosts, end to end through `fab`: real namespaces, sshd, nginx, hello and HAProxy.
A snapshot is taken, the lab is changed (another version deployed, a file written, a host stopped), the
snapshot is restored; the same after env_stop; a snapshot run killed while the lab is paused."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from booted.providers.netns_snapshot import freezer
from tests.integration.conftest import FAB, LabRun, leftovers
from tests.integration.test_netns_lab import ENV3, health, make_hello_repo

pytestmark = pytest.mark.integration
NET = "10.213.200.0/24"
LB, WEB1, WEB2 = "10.213.200.2", "10.213.200.3", "10.213.200.4"


def status(lab_run: LabRun) -> dict[str, dict[str, object]]:
    return {r["name"]: r for r in json.loads(lab_run.fab("env_status", "--json").stdout)}


def lb_answers(count: int = 20) -> set[str]:
    answers = set()
    for _ in range(count):
        with urllib.request.urlopen(f"http://{LB}:8080/", timeout=5) as resp:
            answers.add(resp.read().decode().strip())
    return answers


def assert_as_snapshot(lab_run: LabRun) -> None:
    """The lab as it was at the snapshot: every host runs and serves 1.0, nothing held, no file of later."""
    assert health(WEB1)["version"] == "1.0" and health(WEB2)["version"] == "1.0"
    rows = status(lab_run)
    assert {n: (r["running"], r["deployed"], r["state"]) for n, r in rows.items()} == {
        "lb01": (True, "lb 1.0", "ok"), "web01": (True, "hello 1.0", "ok"), "web02": (True, "hello 1.0", "ok")}
    gone = lab_run.fab("hosts_run", "test -e /root/after && echo present || echo absent", "--hosts", "web02")
    assert "absent" in gone.stdout
    ctx = lab_run.ctx()
    assert {i.name: i.held for i in ctx.inventory.images("itest")} == {"lb01": 0, "web01": 0, "web02": 0}
    ctx.close()
    # HAProxy sends to both workers again (it takes a worker in when its health check passes: a few seconds)
    deadline = time.monotonic() + 30
    answers: set[str] = set()
    while len(answers) < 2 and time.monotonic() < deadline:
        answers |= lb_answers(4)
    assert answers == {"hello from web01 (version 1.0)", "hello from web02 (version 1.0)"}


def change(lab_run: LabRun) -> None:
    """Another version on web01, a file on web02, then web02 stopped by the user."""
    lab_run.fab("hello_deploy", "--version", "1.1", "--hosts", "web01")
    assert health(WEB1)["version"] == "1.1"
    lab_run.fab("hosts_run", "echo later > /root/after", "--hosts", "web02")
    lab_run.fab("image_stop", "web02")
    assert status(lab_run)["web02"]["running"] is False


def test_snapshot_change_restore_and_after_env_stop(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV3.format(net=NET, lb="lb"))
    lab_run.env["HELLO_REPO"] = str(make_hello_repo(lab_run.tmp))
    lab_run.fab("env_start_all")

    bad = lab_run.fab("env_snapshot", "Bad/Name", check=False)
    assert bad.returncode == 2 and "snapshot name 'Bad/Name'" in bad.stderr and "Traceback" not in bad.stderr
    taken = lab_run.fab("env_snapshot", "clean").stdout
    assert "3 running host(s) paused together" in taken, taken
    again = lab_run.fab("env_snapshot", "clean", check=False)
    assert again.returncode == 1 and "already has a snapshot 'clean'" in again.stderr
    [snap] = json.loads(lab_run.fab("env_snapshots", "--json").stdout)
    assert snap["name"] == "clean" and snap["size"] > 0 and snap["pause_s"] > 0
    assert {h["name"]: h["ran"] for h in snap["hosts"]} == {"lb01": "lb 1.0", "web01": "hello 1.0",
                                                            "web02": "hello 1.0"}
    state = Path(lab_run.env["BOOTED_STATE_DIR"])
    assert (state / "snapshots" / "itest" / "clean" / "golden.ref").read_text().strip()

    change(lab_run)
    restored = lab_run.fab("env_restore", "clean")
    assert "3 ok, 0 failed" in restored.stdout, restored.stdout + restored.stderr
    assert_as_snapshot(lab_run)

    # after env_stop (every host's disk discarded), the snapshot brings the lab back
    change(lab_run)
    lab_run.fab("env_stop")
    assert leftovers(lab_run) == []
    assert [s["name"] for s in json.loads(lab_run.fab("env_snapshots", "--json").stdout)] == ["clean"]
    assert "3 ok, 0 failed" in lab_run.fab("env_restore", "clean").stdout
    assert_as_snapshot(lab_run)
    with sqlite3.connect(state / "state.db") as db:
        kinds = [tuple(r) for r in db.execute("SELECT kind, status FROM snapshot_events ORDER BY id")]
    assert kinds == [("snapshot", "done"), ("restore", "done"), ("restore", "done")]

    # environments.py no longer matches: refused (exit 2), naming the differences, nothing touched
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(
        ENV3.format(net=NET, lb="lb").replace("web[01:02]", "web[01:03]"))
    refused = lab_run.fab("env_restore", "clean", check=False)
    assert refused.returncode == 2, refused.stderr
    assert "host web03: in environments.py, not in the snapshot" in refused.stderr
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV3.format(net=NET, lb="lb"))

    deleted = lab_run.fab("env_snapshot_del", "clean").stdout
    assert "freed" in deleted and not (state / "snapshots" / "itest" / "clean").exists()
    assert json.loads(lab_run.fab("env_snapshots", "--json").stdout) == []


def frozen(lab_run: LabRun, host: str) -> bool:
    ctx = lab_run.ctx()
    handle = ctx.lab()
    group = freezer(handle.provider.netns(handle.lab, host))  # type: ignore[attr-defined]
    ctx.close()
    assert group is not None
    return (group / "freezer.state").read_text().strip() != "THAWED" if (group / "freezer.state").exists() \
        else "frozen 1" in (group / "cgroup.events").read_text()


def test_kill_during_a_snapshot_leaves_the_lab_running(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV3.format(net=NET, lb="lb"))
    lab_run.fab("env_start_all")
    state = Path(lab_run.env["BOOTED_STATE_DIR"])
    # the run holds the lab paused after saving (BOOTED_SNAPSHOT_HOLD) and is killed then
    proc = subprocess.Popen([FAB, "env_snapshot", "half"], cwd=Path(__file__).parents[2],
                            env={**lab_run.env, "BOOTED_SNAPSHOT_HOLD": "120"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(frozen(lab_run, h) for h in ("lb01", "web01", "web02")):
            time.sleep(0.1)
        assert all(frozen(lab_run, h) for h in ("lb01", "web01", "web02"))
        with sqlite3.connect(state / "state.db") as db:
            assert len(db.execute("SELECT * FROM snapshot_paused").fetchall()) == 3
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # the watchdog resumes the hosts the moment the run dies
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(frozen(lab_run, h) for h in ("lb01", "web01", "web02")):
        time.sleep(0.05)
    assert not any(frozen(lab_run, h) for h in ("lb01", "web01", "web02"))
    assert health(WEB1)["status"] == "ok"
    assert all(r["reachable"] and r["state"] == "ok" for r in status(lab_run).values())
    # no half snapshot is listed; the next snapshot run clears the recorded pause and the half folder
    assert json.loads(lab_run.fab("env_snapshots", "--json").stdout) == []
    assert list((state / "snapshots" / "itest").glob(".partial-*"))
    out = lab_run.fab("env_snapshot", "whole")
    assert "removed .partial-half-" in out.stderr
    assert not list((state / "snapshots" / "itest").glob(".partial-*"))
    with sqlite3.connect(state / "state.db") as db:
        assert db.execute("SELECT * FROM snapshot_paused").fetchall() == []
    assert [s["name"] for s in json.loads(lab_run.fab("env_snapshots", "--json").stdout)] == ["whole"]
