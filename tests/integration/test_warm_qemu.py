"""The monitor's warm pool on qemu VMs (real QEMU, TCG here): an lb VM in front of three hello worker VMs, `min`
one worker and `warm: {"worker": 1}`. The monitor fills the pool (a VM stopped through QMP, outside the lb);
kill -9 of the serving worker's QEMU is healed by the warm VM (resumed, clock set, healthy, in the lb: the
same QEMU process, no boot) and the pool refills in the background; `min` raised in environments.py takes the
warm VM again. No load generator (the VMs sit on a bridge in the main namespace): booted's own health checks
(the monitor's status) and the lb's backend list say who serves. `failures` is 10: a kill is seen by its
process, and the lb's check (an SSH command into a TCG VM) may miss a few on a machine loaded far past its
cores without the lb being healed for it."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from booted.providers.qemuctl import qmp
from tests.integration.conftest import LabRun, leftovers
from tests.integration.test_monitor import status, wait_for
from tests.integration.test_warm import role, taken

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 not installed")]

ENV = '''ENVIRONMENTS = {"wrmq": {"provider": "qemu", "network": "10.213.213.0/24", "hosts": {
    "lb01": {"role": "lb", "service": "lb", "version": "1.0"},
    "web[01:03]": {"role": "worker", "service": "hello", "version": "1.0"}},
    "min": {"lb": 1, "worker": MIN}, "warm": {"worker": 1},
    "monitor": {"interval": 1, "failures": 10}}}
'''
IPS = {"web01": "10.213.213.3", "web02": "10.213.213.4", "web03": "10.213.213.5"}
SLOW = 240  # seconds for a refill: a TCG VM booted, deployed and tested on a machine shared with other tests


def qmp_status(lab_run: LabRun, host: str) -> str:
    """What QEMU itself says of a VM (QMP query-status): "paused" for a warm one, "running" once taken."""
    sock = Path(lab_run.env["BOOTED_STATE_DIR"]) / "labs" / "wrmq" / "hosts" / host / "qmp.sock"
    reply = qmp(sock, "query-status", timeout=5.0)[0] or {}
    return str(reply.get("return", {}).get("status", reply))


def pids(lab_run: LabRun) -> dict[str, int]:
    ctx = lab_run.ctx()
    try:
        return ctx.lab().running()
    finally:
        ctx.close()


def warm_now(lab_run: LabRun) -> list[str]:
    return list(role(lab_run).get("warm", []))


def in_lb(lab_run: LabRun) -> list[str] | None:
    """lb01's backends as the monitor's last pass saw them (None: lb01 did not answer its check then)."""
    lbs = status(lab_run)["last_pass"].get("lbs", {})  # type: ignore[union-attr]
    return sorted(lbs["lb01"]) if "lb01" in lbs else None


def test_the_warm_pool_heals_and_scales_up_qemu_vms_without_a_boot(lab_run: LabRun) -> None:
    envfile = Path(lab_run.env["BOOTED_ENVIRONMENTS"])
    envfile.write_text(ENV.replace("MIN", "1"))
    assert "2 ok, 0 failed" in lab_run.fab("env_start_min", timeout=600).stdout  # lb01, web01: the user's
    assert "started" in lab_run.fab("monitor_start").stdout
    wait_for("the warm pool filled", lambda: warm_now(lab_run) == ["web02"], timeout=SLOW)
    assert qmp_status(lab_run, "web02") == "paused"
    wait_for("only web01 in the lb (the warm VM is not)", lambda: in_lb(lab_run) == [IPS["web01"] + ":8000"],
             timeout=SLOW)
    warm_pid = pids(lab_run)["web02"]

    # the serving worker's QEMU is killed: the warm VM takes its place (the same process, resumed), and the
    # pool refills from a worker not running (web01 again, or web03), in the background
    os.kill(pids(lab_run)["web01"], signal.SIGKILL)
    wait_for("web02 taken from the warm pool", lambda: taken(lab_run, "web02"), timeout=60)
    take = next(a for a in status(lab_run)["actions"] if a["kind"] == "take")  # type: ignore[union-attr]
    assert "clock set" in str(take["detail"]), take  # a VM's clock stood still while it was paused
    wait_for("web02 serves, in the lb", lambda: role(lab_run).get("healthy") == ["web02"]
             and in_lb(lab_run) == [IPS["web02"] + ":8000"], timeout=60)
    assert qmp_status(lab_run, "web02") == "running" and pids(lab_run)["web02"] == warm_pid
    wait_for("the pool refilled", lambda: len(warm_now(lab_run)) == 1, timeout=SLOW)
    refill = warm_now(lab_run)[0]
    assert refill in ("web01", "web03") and qmp_status(lab_run, refill) == "paused"

    # a scale-up (min raised: the monitor reloads environments.py) takes the warm VM
    envfile.write_text(ENV.replace("MIN", "2"))
    wait_for(f"{refill} taken for the scale-up", lambda: taken(lab_run, refill), timeout=60)
    wait_for("two workers serve, both in the lb", lambda: sorted(role(lab_run).get("healthy", [])) ==
             sorted(["web02", refill]) and in_lb(lab_run) == sorted(IPS[h] + ":8000" for h in ("web02", refill)),
             timeout=60)
    assert qmp_status(lab_run, refill) == "running"

    lab_run.fab("env_stop", timeout=SLOW)  # the monitor first (after a refill under way), then every VM
    assert leftovers(lab_run) == []
