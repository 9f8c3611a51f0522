"""The monitor's warm pool on a real netns lab (HAProxy lb + 4 hello workers, `warm: {"worker": 1}`): the
monitor fills the pool (a frozen host, not in the lb, shown by env_status and monitor_status), a kill -9 of a
serving worker is healed by the warm host under load with no failed request and the pool refills, a scale-up
(the role's `min` raised in environments.py) takes the warm host first, a user's env_start_worker of a warm
host resumes it, and env_stop leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import LabRun, leftovers
from tests.integration.test_monitor import Load, status, wait_for

pytestmark = pytest.mark.integration

ENV = '''ENVIRONMENTS = {"wrm": {"provider": "netns", "network": "10.213.185.0/24", "hosts": {
    "lb01": {"role": "lb", "service": "lb", "version": "1.0"},
    "web[01:04]": {"role": "worker", "service": "hello", "version": "1.0"}},
    "min": {"lb": 1, "worker": MIN}, "warm": {"worker": 1},
    "monitor": {"interval": 1, "failures": 2}}}
'''
LB = "http://10.213.185.2:8080/"
IPS = {"web01": "10.213.185.3", "web02": "10.213.185.4", "web03": "10.213.185.5", "web04": "10.213.185.6"}


def role(lab_run: LabRun) -> dict[str, list[str]]:
    return status(lab_run)["last_pass"].get("roles", {}).get("worker", {})  # type: ignore[no-any-return,union-attr]


def backends(lab_run: LabRun) -> list[str]:
    return sorted(status(lab_run)["last_pass"]["lbs"]["lb01"])  # type: ignore[index]


def answers(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:8000/health", timeout=1.5) as resp:
            return resp.status == 200
    except OSError:
        return False


def taken(lab_run: LabRun, host: str) -> bool:
    return any(a["kind"] == "take" and a["host"] == host and a["status"] == "done"
               for a in status(lab_run)["actions"])  # type: ignore[union-attr]


def test_the_warm_pool_heals_and_scales_up_without_a_boot(lab_run: LabRun) -> None:
    envfile = Path(lab_run.env["BOOTED_ENVIRONMENTS"])
    envfile.write_text(ENV.replace("MIN", "2"))
    assert "3 ok, 0 failed" in lab_run.fab("env_start_min").stdout  # lb01, web01, web02: the user's
    assert "started" in lab_run.fab("monitor_start").stdout
    wait_for("the warm pool filled", lambda: role(lab_run).get("warm") == ["web03"], timeout=90)
    assert not answers(IPS["web03"])  # frozen: its service does not answer
    assert IPS["web03"] + ":8000" not in backends(lab_run)
    rows = {r["host"]: r for r in json.loads(lab_run.fab("env_status", "--json").stdout)}
    assert rows["web03"]["state"] == "warm (paused by the monitor)" and rows["web03"]["running"] is True
    assert rows["web04"]["running"] is False  # one warm host, as asked
    assert "warm (paused)" in lab_run.fab("monitor_status").stdout

    # a serving worker dies: the warm host takes its place (resumed, health-checked, in the lb), no request
    # fails with two serving, and the pool refills from a host not running
    with Load(6, LB) as load:
        wait_for("the load flows", lambda: load.ok >= 5)
        ctx = lab_run.ctx()
        os.kill(ctx.lab().running()["web02"], signal.SIGKILL)
        ctx.close()
        wait_for("web03 taken from the warm pool", lambda: taken(lab_run, "web03"))
        wait_for("web01 and web03 serve", lambda: sorted(role(lab_run)["healthy"]) == ["web01", "web03"])
        served = load.ok
        wait_for("12 more requests served after the heal", lambda: load.ok >= served + 12)
    assert load.failed == 0, (load.ok, load.failed)
    assert backends(lab_run) == [IPS["web01"] + ":8000", IPS["web03"] + ":8000"]
    wait_for("the pool refilled", lambda: len(role(lab_run).get("warm", [])) == 1, timeout=90)
    refill = role(lab_run)["warm"][0]
    assert refill in ("web02", "web04") and not answers(IPS[refill])

    # a scale-up (min raised: the monitor reloads environments.py) takes the warm host first
    envfile.write_text(ENV.replace("MIN", "3"))
    wait_for(f"{refill} taken for the scale-up", lambda: taken(lab_run, refill), timeout=60)
    wait_for("three workers serve", lambda: len(role(lab_run)["healthy"]) == 3)
    assert refill in role(lab_run)["healthy"] and answers(IPS[refill])

    # a user's env_start_worker of a warm host takes it: resumed (the same process, no boot) and tested
    wait_for("the pool refilled again", lambda: len(role(lab_run).get("warm", [])) == 1, timeout=90)
    last = role(lab_run)["warm"][0]
    ctx = lab_run.ctx()
    pid = ctx.lab().running()[last]
    ctx.close()
    out = json.loads(lab_run.fab("env_start_worker", last, "--json").stdout)
    assert "resumed from the monitor's warm pool" in json.dumps(out) and answers(IPS[last])
    ctx = lab_run.ctx()
    assert ctx.lab().running()[last] == pid
    ctx.close()
    wait_for(f"{last} serves as a user's host", lambda: last in role(lab_run)["healthy"])

    # env_stop stops the warm hosts too (thawed, then killed) and leaves nothing
    lab_run.fab("env_stop")
    assert leftovers(lab_run) == []
