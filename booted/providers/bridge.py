"""The lab bridge every tap/veth provider plugs its hosts into, and `ip -batch` for bulk link changes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from booted.errors import ProviderError
from booted.providers.portfilter import unguard

if TYPE_CHECKING:
    from booted.providers.base import Lab


def ip_batch(lines: list[str]) -> str:
    """Run `ip -force -batch -`; returns stderr (errors of single lines do not stop the others)."""
    if not lines:
        return ""
    proc = subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, check=False)
    return proc.stderr


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def bridge_mac(lab: Lab) -> str:
    """A fixed MAC per lab, so the gateway's address does not change when the bridge is recreated."""
    return "52:54:ff:" + ":".join(lab.lab_id[i:i + 2] for i in (0, 2, 4))


def address_owner(ip: str) -> str | None:
    """The interface that has this IPv4 address on this machine, if any."""
    out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=False).stdout
    try:
        links = json.loads(out or "[]")
    except ValueError:
        return None
    for link in links:
        if any(a.get("local") == ip for a in link.get("addr_info", [])):
            return str(link.get("ifname"))
    return None


def ensure_bridge(lab: Lab) -> None:
    """The lab bridge with the gateway address, IPv6 off (no router solicitations, no SLAAC noise)."""
    if link_exists(lab.bridge):
        return
    owner = address_owner(lab.gateway)
    if owner is not None:
        raise ProviderError(f"the gateway {lab.gateway} of network {lab.network} is already on interface {owner} "
                            "(another lab of another state directory, or this machine's own network): choose "
                            "another 'network' for environment " + repr(lab.env))
    err = ip_batch([f"link add {lab.bridge} address {bridge_mac(lab)} type bridge",
                    f"addr add {lab.gateway}/{lab.network.prefixlen} dev {lab.bridge}"])
    try:
        Path(f"/proc/sys/net/ipv6/conf/{lab.bridge}/disable_ipv6").write_text("1")
    except OSError:
        pass
    err += ip_batch([f"link set {lab.bridge} up"])
    if not link_exists(lab.bridge):
        raise ProviderError(f"could not create bridge {lab.bridge} for {lab.network}: {err.strip()}")


def remove_bridge(lab: Lab) -> None:
    """The bridge and its port filter (providers/portfilter.py) go together."""
    if link_exists(lab.bridge):
        ip_batch([f"link del {lab.bridge}"])
    unguard(lab)
