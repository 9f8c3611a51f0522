"""Issue 23 item 1 on a real netns lab with two networks: the lb and two hello workers are on `mgmt` (booted's)
and `back`, hello listens on `back` (its service.toml says so): the lb serves through `back`, the controller
has no address and no route on `back` (nothing it sends reaches a `back` address), the workers reach each
other there, hosts_list shows both addresses, the port filter holds on the `back` NICs too, and env_stop
leaves no bridge, veth or filter of either network behind.

Every probe is bounded in count and time and goes only to this run's hosts (or to nowhere: a socket bound to
the `back` bridge, which the kernel refuses)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.conftest import LabRun, leftovers

pytestmark = pytest.mark.integration

MGMT, BACK = "10.213.226", "10.213.227"
ENV = f'''ENVIRONMENTS = {{"tiers": {{
    "provider": "netns",
    "networks": {{"mgmt": "{MGMT}.0/24", "back": "{BACK}.0/24"}},
    "hosts": {{
        "lb01": {{"role": "lb", "service": "lb", "networks": ["mgmt", "back"]}},
        "web[01:02]": {{"role": "worker", "service": "hello", "networks": ["mgmt", "back"]}},
    }},
}}}}
'''


def services(tmp: Path) -> Path:
    """booted's services, hello listening on `back`."""
    folder = tmp / "service"
    shutil.copytree(REPO / "service", folder, ignore=shutil.ignore_patterns("__pycache__"))
    toml = folder / "hello" / "service.toml"
    toml.write_text(toml.read_text() + '\nnetwork = "back"\n')
    return folder


def per_host(out: str) -> dict[str, str]:
    """hosts_run's output ('--- host' then its one line) -> host -> that line."""
    lines = out.splitlines()
    return {line[4:]: lines[i + 1].strip() for i, line in enumerate(lines[:-1]) if line.startswith("--- ")}


def links(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(prefix))


def test_two_networks(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV)
    lab_run.env["BOOTED_SERVICES"] = str(services(lab_run.tmp))
    out = lab_run.fab("env_start_all").stdout
    assert "3 ok, 0 failed" in out, out

    # hosts_list --json: both addresses, the same host number on each; ip stays the first network's
    rows = {r["name"]: r for r in json.loads(lab_run.fab("hosts_list", "--json").stdout)}
    assert sorted(rows) == ["lb01", "web01", "web02"]
    for row in rows.values():
        number = row["ip"].rsplit(".", 1)[1]
        assert row["networks"] == {"mgmt": row["ip"], "back": f"{BACK}.{number}"}, row
        assert row["ip"].startswith(MGMT + ".")
    images = {r["name"]: r for r in json.loads(lab_run.fab("image_list", "--json").stdout)}
    assert images["web01"]["networks"] == rows["web01"]["networks"]
    inventory = json.loads(lab_run.fab("inventory", "--format", "json").stdout)
    assert {h["name"]: h["networks"] for h in inventory["hosts"]} == {n: r["networks"] for n, r in rows.items()}
    back = {name: row["networks"]["back"] for name, row in rows.items()}

    # inside the hosts: eth1 has the back address; hello listens there only; the lb sends to back addresses
    got = per_host(lab_run.fab("hosts_run", "ip -o -4 addr show dev eth1").stdout)
    assert all(f"inet {back[h]}/24" in got[h] for h in rows), got
    got = per_host(lab_run.fab("hosts_run", "cat /srv/booted/lb/backends", "--hosts", "lb01").stdout)
    assert sorted(got["lb01"].split(",")) == sorted(f"{back[w]}:8000" for w in ("web01", "web02")), got

    # the lb (on mgmt) serves through back: each worker answers in turn
    seen = set()
    for _ in range(6):
        with urllib.request.urlopen(f"http://{rows['lb01']['ip']}:8080/", timeout=5) as resp:
            seen.add(resp.read().decode())
    assert any("web01" in s for s in seen) and any("web02" in s for s in seen), seen

    # hello's health, asked on each host (the controller has no way to back): what hello_test does
    out = lab_run.fab("hello_test").stdout
    assert "2 ok, 0 failed" in out, out

    # the workers reach each other on back
    got = per_host(lab_run.fab("hosts_run", f"curl -fsS -m 5 http://{back['web02']}:8000/health",
                               "--hosts", "web01").stdout)
    assert '"host": "web02"' in got["web01"], got

    # the controller cannot reach back: no address of back on this machine, no route through a lab bridge,
    # and a socket bound to back's bridge has nowhere to send from
    lab = lab_run.ctx().lab("tiers").lab
    bridge = lab.bridge_of("back")
    assert bridge != lab.bridge and os.path.exists(f"/sys/class/net/{bridge}")
    addrs = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", bridge], capture_output=True, text=True,
                           check=True).stdout
    assert addrs.strip() == "", addrs
    for ip in back.values():
        route = subprocess.run(["ip", "-o", "route", "get", ip], capture_output=True, text=True, check=False)
        assert f"dev {lab.bridge} " not in route.stdout and f"dev {bridge} " not in route.stdout, route.stdout
        # nor does it leave through the machine's default route: refused here, at once
        assert route.returncode != 0 and "no route to host" in route.stderr.lower(), (route.stdout, route.stderr)
        plain = socket.socket()
        plain.settimeout(2)
        with pytest.raises(OSError) as refused:
            plain.connect((ip, 8000))
        plain.close()
        assert refused.value.errno == errno.EHOSTUNREACH, refused.value
        sock = socket.socket()
        sock.settimeout(2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, bridge.encode())
        with pytest.raises(OSError) as refused:
            sock.connect((ip, 8000))
        sock.close()
        assert refused.value.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, None) or "timed out" in str(
            refused.value), refused.value

    # the port filter holds on the back NICs: web01 may not send as another address there
    ns = f"bt{lab.lab_id}-web01"
    nft = subprocess.run(["nft", "list", "table", "bridge", f"booted_{lab.lab_id}"], capture_output=True, text=True,
                         check=True).stdout
    assert lab.link("v", back["web01"]) in nft and f"ip saddr != {back['web01']} drop" in nft
    subprocess.run(["ip", "netns", "exec", ns, "ip", "addr", "add", f"{BACK}.200/24", "dev", "eth1"], check=True)
    forged = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-c", "2", "-W", "1", "-I", f"{BACK}.200",
                             back["web02"]], capture_output=True, text=True, timeout=20)
    real = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-c", "2", "-W", "1", "-I", back["web01"],
                           back["web02"]], capture_output=True, text=True, timeout=20)
    assert forged.returncode != 0 and real.returncode == 0, (forged.stdout, real.stdout)

    # impairments apply per NIC: --network back touches only the back veth
    out = lab_run.fab("net_impair", "--hosts", "web02", "--network", "back", "--delay", "20ms").stdout
    assert lab.link("v", back["web02"]) in out, out
    status = json.loads(lab_run.fab("net_status", "--json").stdout)
    assert [(r["host"], r["network"]) for r in status] == [("web02", "back")], status
    lab_run.fab("net_clear")

    lab_run.fab("env_stop")
    assert leftovers(lab_run) == []
    assert links(lab.bridge) == [] and links(f"bv{lab.lab_id}") == []
    routes = subprocess.run(["ip", "-o", "route", "show", "type", "unreachable"], capture_output=True, text=True,
                            check=True).stdout
    assert f"{BACK}.0/24" not in routes, routes  # back's unreachable route goes with its bridge
