"""A qemu VM with user-mode networking (what a user without root gets): no bridge, no tap; SSH and the
service reached through ports forwarded on 127.0.0.1, the boot call relayed to nginx on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from booted.discovery.nginx import Nginx
from booted.hosts.identity import fingerprint
from tests.integration.conftest import LabRun, leftovers

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 not installed")]

ENV = '''ENVIRONMENTS = {
    "qutest": {
        "provider": "qemu",
        "network": "10.213.61.0/24",
        "hosts": {"web01": {"role": "worker", "service": "hello", "version": "1.0"}},
    },
}
'''


def test_user_mode_vm_serves_through_forwarded_ports(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV)
    lab_run.env["BOOTED_QEMU_NET"] = "user"
    start = lab_run.fab("env_start_all", timeout=600)
    assert "1 ok, 0 failed" in start.stdout, start.stdout + start.stderr
    assert "user-mode, ports forwarded on 127.0.0.1" in start.stderr
    # it fetched its release through the relay to booted's nginx and served at first boot
    assert "hello: served at first boot, verified: web01; deploying over SSH: none" in start.stderr

    ctx = lab_run.ctx()
    handle = ctx.lab()
    assert not os.path.exists(f"/sys/class/net/{handle.lab.bridge}"), "user-mode networking makes no bridge"
    forwards = handle.endpoints("web01")
    assert set(forwards) == {22, 8000} and all(addr == "127.0.0.1" for addr, _ in forwards.values())
    known = (Path(lab_run.env["BOOTED_STATE_DIR"]) / "keys" / "known_hosts").read_text()
    assert f"[127.0.0.1]:{forwards[22][1]} ssh-ed25519 " in known  # the forwarded SSH port is pinned too
    ctx.close()

    listed = json.loads(lab_run.fab("hosts_list", "--json").stdout)
    assert [(h["name"], h["ip"], h["reachable"]) for h in listed] == [("web01", "10.213.61.2", True)]

    # nginx listens on loopback here: a local non-root user claiming to be web01 (its name, IP, MAC and
    # host key are no secret) without its boot token is rejected and changes nothing
    image = lab_run.ctx().inventory.image("web01")
    assert image is not None
    spoof = urllib.parse.urlencode({"host": "web01", "mac": image.mac, "ip": image.ip,
                                    "hostkey": fingerprint(image.hostkey), "token": "0" * 32})
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "curl", "-fsS", "-o", "/dev/null",
                    f"http://127.0.0.1:8470/booted?{spoof}"], check=True, timeout=10)
    assert "0 boot(s)" in lab_run.fab("hosts_logged").stdout
    assert json.loads(lab_run.fab("hosts_list", "--json").stdout) == listed
    assert "1 ok, 0 failed" in lab_run.fab("hello_test").stdout
    out = lab_run.fab("hosts_run", "hostname; ip -4 -o addr show eth0").stdout
    assert "--- web01\nweb01\n" in out and "10.213.61.2/24" in out
    assert "1 ok, 0 failed" in lab_run.fab("hosts_filter").stdout

    assert "1 ok, 0 failed" in lab_run.fab("env_stop").stdout
    assert leftovers(lab_run) == []
    assert Nginx(lab_run.ctx().settings).pid() is None
