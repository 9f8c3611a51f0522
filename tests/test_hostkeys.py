"""The host keys of a lab's new hosts are made side by side before their images are leased (real ssh-keygen)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from booted.hosts.identity import Keys
from booted.lab.hostimages import make_host_keys
from booted.state.inventory import Inventory


def test_new_hosts_get_one_key_each_and_existing_keys_stay(tmp_path: Path) -> None:
    inv, keys = Inventory(tmp_path / "state.db"), Keys(tmp_path / "keys")
    old = keys.ensure_host_key("w001")
    inv.lease(name="w009", env="lab", provider="netns", network=ipaddress.IPv4Network("10.213.111.0/24"),
              role="worker", service="hello", version="1.0", hostkey=old)
    make_host_keys(inv, keys, [f"w{i:03d}" for i in range(1, 10)])
    made = {n: keys.host_key(n) for n in [f"w{i:03d}" for i in range(1, 9)]}
    assert all(p.exists() and Path(f"{p}.pub").exists() for p in made.values())
    assert len({Path(f"{p}.pub").read_text() for p in made.values()}) == 8  # a key of its own each
    assert keys.ensure_host_key("w001") == old  # an existing key is kept
    assert not keys.host_key("w009").exists()  # a leased image keeps the key it was leased with
    assert not list(keys.root.glob("hosts/*/.*"))  # no half-made key left
