"""Lab snapshots on qemu VMs (real QEMU, TCG here), end to end through `fab`: a snapshot keeps each VM's
memory and disk, so a restore continues the VMs where they were (no boot: the console has no new boot, the
guest's uptime goes on from the snapshot's), their clocks set to the controller's; the same after env_stop."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.integration.conftest import LabRun, leftovers
from tests.integration.test_netns_lab import health, make_hello_repo

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 not installed")]
WEB1, WEB2 = "10.213.195.2", "10.213.195.3"
ENV = '''ENVIRONMENTS = {
    "qsnap": {
        "provider": "qemu",
        "network": "10.213.195.0/24",
        "hosts": {"web[01:02]": {"role": "worker", "service": "hello", "version": "1.0"}},
    },
}
'''


def guest(lab_run: LabRun, host: str, command: str) -> str:
    out = lab_run.fab("hosts_run", command, "--hosts", host).stdout
    return out.split(f"--- {host}\n", 1)[1].strip().splitlines()[0]


def uptime(lab_run: LabRun, host: str) -> float:
    return float(guest(lab_run, host, "cut -d' ' -f1 /proc/uptime"))


def clock_offset(lab_run: LabRun, host: str) -> float:
    """The guest's clock minus ours, measured by `date` inside a hosts_run (so at most its run's length late:
    the result is an upper bound of how far ahead of us the guest is, a lower bound of how far behind)."""
    before = time.time()
    said = float(guest(lab_run, host, "date +%s.%N"))
    after = time.time()
    return said - before if said > after else said - after


def assert_as_snapshot(lab_run: LabRun, uptimes: dict[str, float], boots: dict[str, int]) -> None:
    assert health(WEB1)["version"] == "1.0" and health(WEB2)["version"] == "1.0"
    rows = {r["name"]: r for r in json.loads(lab_run.fab("env_status", "--json").stdout)}
    assert {n: (r["running"], r["deployed"], r["state"]) for n, r in rows.items()} == {
        "web01": (True, "hello 1.0", "ok"), "web02": (True, "hello 1.0", "ok")}
    assert guest(lab_run, "web02", "test -e /root/after && echo present || echo absent") == "absent"
    for host in ("web01", "web02"):
        console = (Path(lab_run.env["BOOTED_STATE_DIR"]) / "labs").glob(f"*/hosts/{host}/console.log")
        text = next(console).read_text(errors="replace")
        assert text.count("phoned home") == boots[host], text[-2000:]  # no boot since the snapshot
        assert "continues from a snapshot" in text
        assert uptime(lab_run, host) >= uptimes[host]  # the guest's own time went on from the snapshot's
        assert abs(clock_offset(lab_run, host)) < 2.0


def test_qemu_snapshot_change_restore_and_after_env_stop(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV)
    lab_run.env["HELLO_REPO"] = str(make_hello_repo(lab_run.tmp))
    lab_run.env.setdefault("BOOTED_BOOT_TIMEOUT", "600")
    lab_run.fab("env_start_all", timeout=1200)
    assert health(WEB1)["version"] == "1.0"

    uptimes = {h: uptime(lab_run, h) for h in ("web01", "web02")}
    taken = lab_run.fab("env_snapshot", "clean", timeout=600)
    assert "2 running host(s) paused together" in taken.stdout, taken.stdout + taken.stderr
    [snap] = json.loads(lab_run.fab("env_snapshots", "--json").stdout)
    assert snap["name"] == "clean" and snap["size"] > 0 and snap["pause_s"] > 0
    assert abs(clock_offset(lab_run, "web01")) < 2.0  # the snapshot's pause was corrected on resume
    boots = {}
    for host in ("web01", "web02"):
        console = next((Path(lab_run.env["BOOTED_STATE_DIR"]) / "labs").glob(f"*/hosts/{host}/console.log"))
        boots[host] = console.read_text(errors="replace").count("phoned home")

    lab_run.fab("hello_deploy", "--version", "1.1", "--hosts", "web01", timeout=600)
    assert health(WEB1)["version"] == "1.1"
    lab_run.fab("hosts_run", "echo later > /root/after", "--hosts", "web02")

    restored = lab_run.fab("env_restore", "clean", timeout=900)
    assert "continued from the snapshot" in restored.stdout, restored.stdout + restored.stderr
    assert_as_snapshot(lab_run, uptimes, boots)

    lab_run.fab("env_stop", timeout=300)
    assert leftovers(lab_run) == []
    again = lab_run.fab("env_restore", "clean", timeout=900)
    assert "continued from the snapshot" in again.stdout, again.stdout + again.stderr
    assert_as_snapshot(lab_run, uptimes, boots)
