"""The lab bridge every tap/veth provider plugs its hosts into: made with the gateway address before any
host boots, removed with its port filter (providers/portfilter.py) when the lab goes."""

from __future__ import annotations

from booted.errors import ProviderError
from booted.providers.lab import Lab
from booted.providers.links import disable_ipv6, ip_batch, ipv4_addresses, link_exists
from booted.providers.portfilter import unguard


def bridge_mac(lab: Lab) -> str:
    """A fixed MAC per lab, so the gateway's address does not change when the bridge is recreated."""
    return "52:54:ff:" + ":".join(lab.lab_id[i:i + 2] for i in (0, 2, 4))


def address_owner(ip: str) -> str | None:
    """The interface that has this IPv4 address on this machine, if any."""
    return next((link for link, addresses in ipv4_addresses().items() if ip in addresses), None)


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
    disable_ipv6(lab.bridge)
    err += ip_batch([f"link set {lab.bridge} up"])
    if not link_exists(lab.bridge):
        raise ProviderError(f"could not create bridge {lab.bridge} for {lab.network}: {err.strip()}")


def remove_bridge(lab: Lab) -> None:
    """The bridge and its port filter (providers/portfilter.py) go together."""
    if link_exists(lab.bridge):
        ip_batch([f"link del {lab.bridge}"])
    unguard(lab)
