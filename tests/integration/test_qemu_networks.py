"""Issue 23 item 1 on qemu: one VM on two networks gets a tap and a virtio NIC on each bridge, and its boot
script configures both addresses (checked inside the guest over SSH); the second network has "gateway": true,
so the controller reaches the VM there too; env_stop leaves no tap or bridge of either network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import LabRun, leftovers

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 not installed")]

ENV = '''ENVIRONMENTS = {
    "qnets": {
        "provider": "qemu",
        "networks": {"mgmt": "10.213.228.0/24", "data": {"network": "10.213.229.0/24", "gateway": True}},
        "hosts": {"vm01": {"networks": ["mgmt", "data"]}},
    },
}
'''


def test_qemu_vm_on_two_networks(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV)
    start = lab_run.fab("env_start_all", timeout=600)
    assert "1 ok, 0 failed" in start.stdout, start.stdout + start.stderr
    row = json.loads(lab_run.fab("hosts_list", "--json").stdout)[0]
    assert row["networks"] == {"mgmt": "10.213.228.2", "data": "10.213.229.2"} and row["ip"] == "10.213.228.2"

    out = lab_run.fab("hosts_run", "ip -o -4 addr", "--hosts", "vm01").stdout
    lines = [line for line in out.splitlines() if "inet " in line]
    assert any(" eth0 " in f" {line} " and "inet 10.213.228.2/24" in line for line in lines), out
    assert any(" eth1 " in f" {line} " and "inet 10.213.229.2/24" in line for line in lines), out

    lab = lab_run.ctx().lab("qnets").lab
    taps = sorted(n for n in os.listdir("/sys/class/net") if n.startswith(f"bq{lab.lab_id}"))
    assert taps == sorted([lab.link("q", "10.213.228.2"), lab.link("q", "10.213.229.2")]), taps
    ping = subprocess.run(["ping", "-n", "-c", "2", "-W", "2", "10.213.229.2"], capture_output=True, text=True,
                          timeout=20)
    assert ping.returncode == 0, ping.stdout  # "gateway": true: the controller is on that network

    lab_run.fab("env_stop")
    assert leftovers(lab_run) == []
    assert [n for n in os.listdir("/sys/class/net") if n.startswith((f"bq{lab.lab_id}", lab.bridge))] == []
