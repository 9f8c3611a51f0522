"""The lab bridges every tap/veth provider plugs its hosts into: booted's (the first network's) made with the
gateway address before any host boots, one per other network (its first address on the controller only
with "gateway": true, else none: the controller cannot reach that network), removed with their port filter
(providers/portfilter.py) when the lab goes."""

from __future__ import annotations

from booted.errors import ProviderError
from booted.providers.lab import Lab, LabNet
from booted.providers.links import disable_ipv6, ip_batch, ipv4_addresses, link_exists
from booted.providers.portfilter import unguard


def bridge_mac(lab: Lab, k: int = 0) -> str:
    """A fixed MAC per lab and network, so the gateway's address does not change when a bridge is recreated."""
    return f"52:5{k}:ff:" + ":".join(lab.lab_id[i:i + 2] for i in (0, 2, 4))


def address_owner(ip: str) -> str | None:
    """The interface that has this IPv4 address on this machine, if any."""
    return next((link for link, addresses in ipv4_addresses().items() if ip in addresses), None)


UNREACHABLE = 4242  # the metric of a network's `unreachable` route: below any connected route of the same prefix


def unreachable(net: LabNet, verb: str) -> str:
    """The `ip route` line that makes (or removes) a network without a gateway unreachable from the controller:
    refused here at once, never sent out through the machine's default route."""
    return f"route {verb} unreachable {net.cidr} metric {UNREACHABLE}"


def ensure_bridge(lab: Lab) -> None:
    """The lab bridges, booted's with the gateway address, IPv6 off (no router solicitations, no SLAAC noise)."""
    ip_batch([unreachable(net, "replace") for net in lab.networks[1:] if not net.gateway])
    for k, net in enumerate(lab.networks[1:], 1):
        if link_exists(net.bridge):
            continue
        gateway = next(net.cidr.hosts())
        err = ip_batch([f"link add {net.bridge} address {bridge_mac(lab, k)} type bridge",
                        *([f"addr add {gateway}/{net.cidr.prefixlen} dev {net.bridge}"] if net.gateway else [])])
        disable_ipv6(net.bridge)
        err += ip_batch([f"link set {net.bridge} up"])
        if not link_exists(net.bridge):
            raise ProviderError(f"could not create bridge {net.bridge} for network {net.name!r} ({net.cidr}): "
                                f"{err.strip()}")
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
    """The bridges and their port filter (providers/portfilter.py) go together."""
    ip_batch([f"link del {net.bridge}" for net in lab.networks if link_exists(net.bridge)]
             + [unreachable(net, "del") for net in lab.networks[1:] if not net.gateway])
    unguard(lab)
