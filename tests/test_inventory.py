"""The state store: identity leases (lowest free, stable, released on delete), concurrent writers."""

from __future__ import annotations

import ipaddress
import multiprocessing
from pathlib import Path

import pytest

from booted.errors import StateError
from booted.results import HostResult
from booted.state.inventory import Inventory, mac_for

NET = ipaddress.IPv4Network("10.213.40.0/29")  # gateway .1, hosts .2-.6


def lease(inv: Inventory, name: str, env: str = "lab") -> str:
    return inv.lease(name=name, env=env, provider="netns", network=NET, role="worker", service="hello",
                     version="1.0", hostkey="ssh-ed25519 AAAA test").ip


def test_leases_lowest_free_and_stable(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "s.db")
    assert [lease(inv, n) for n in ("a", "b", "c")] == ["10.213.40.2", "10.213.40.3", "10.213.40.4"]
    again = Inventory(tmp_path / "s.db")  # a later run sees the same identities
    image = again.image("b")
    assert image is not None and image.ip == "10.213.40.3" and image.mac == "52:54:0a:d5:28:03"
    with pytest.raises(StateError, match="already exists"):
        lease(again, "b")
    again.release_image("b")
    assert lease(again, "d") == "10.213.40.3"  # b's address went back to the pool


def test_network_full(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "s.db")
    for n in range(5):
        lease(inv, f"h{n}")
    with pytest.raises(StateError, match="no free address left"):
        lease(inv, "h5")


def test_mac_is_unique_per_ip() -> None:
    macs = {mac_for(ip) for ip in ipaddress.IPv4Network("10.0.0.0/22")}
    assert len(macs) == 1024


def _lease_many(db: str, prefix: str, count: int, queue: multiprocessing.Queue) -> None:
    inv = Inventory(Path(db))
    net = ipaddress.IPv4Network("10.213.41.0/24")
    ips = [inv.lease(name=f"{prefix}{i}", env="lab", provider="netns", network=net, role="w", service=None,
                     version=None, hostkey="k").ip for i in range(count)]
    queue.put(ips)


def test_two_processes_never_share_an_address(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    Inventory(Path(db)).close()
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_lease_many, args=(db, p, 40, queue)) for p in ("a", "b")]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    all_ips = results[0] + results[1]
    assert len(all_ips) == 80 and len(set(all_ips)) == 80


def test_deployments_record_per_host(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "s.db")
    dep = inv.open_deployment("hello", "1.1", "deploy", ["a", "b"])
    assert inv.deployment_hosts(dep) == {"a": ("open", ""), "b": ("open", "")}
    inv.finish_deployment(dep, [HostResult("a", True, "switched", 0.1, "1.1"),
                                HostResult("b", False, "unreachable", 0.2)])
    assert inv.deployment_hosts(dep) == {"a": ("done", "switched"), "b": ("failed", "unreachable")}
    assert inv.releases() == {}  # what a host runs is recorded only once it proved it (record_release)
    inv.record_release("a", "hello", "1.1")
    assert inv.releases() == {("a", "hello"): "1.1"}
    status = inv.db.execute("SELECT status FROM deployments WHERE id = ?", (dep,)).fetchone()[0]
    assert status == "failed"
