"""One environment's lab as a provider sees it: the type every provider module (and the lab handle above
them) shares. It imports nothing of the providers, so no provider module needs another's only for a type."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Options:
    """A provider's own keys of an environment, parsed by the provider (providers/options.py): the base of
    each provider's options type (QemuOptions, LibvirtOptions); a provider with no keys of its own has this."""


def address_on(ip: str, first: ipaddress.IPv4Network, net: ipaddress.IPv4Network) -> str:
    """A host's address on network `net`: its host number on the first network, on `net`."""
    index = int(ipaddress.IPv4Address(ip)) - int(first.network_address)
    return str(ipaddress.IPv4Address(int(net.network_address) + index))


def nowhere(name: str) -> str:
    return ""


@dataclass(frozen=True)
class LabNet:
    """One network of a lab: the first is booted's (its bridge has the gateway address); another has a bridge
    of its own, with its first address on the controller only when `gateway`."""

    name: str
    cidr: ipaddress.IPv4Network
    gateway: bool
    bridge: str


@dataclass(frozen=True)
class Lab:
    """One environment's lab on this machine, as a provider sees it: its network and its hosts' folders."""

    env: str
    lab_id: str
    network: ipaddress.IPv4Network
    dir: Path
    packages: tuple[str, ...] = ()  # extra Debian packages its golden image carries (environment + services)
    init: str = "busybox"  # busybox | systemd
    options: Options = field(default_factory=Options)  # the provider's own keys (its options type)
    # where a host was placed (libvirt: a hypervisor's name), as the database records it; "" not placed
    placed: Callable[[str], str] = nowhere
    nets: tuple[tuple[str, ipaddress.IPv4Network, bool], ...] = ()  # (name, CIDR, gateway); (): `network` only

    @property
    def networks(self) -> tuple[LabNet, ...]:
        """Its networks, booted's first; bridge k > 0 is bt<lab id>x<k>."""
        nets = self.nets or ((self.env, self.network, True),)
        return tuple(LabNet(name, cidr, gateway or not k, self.bridge + (f"x{k}" if k else ""))
                     for k, (name, cidr, gateway) in enumerate(nets))

    @property
    def gateway(self) -> str:
        return str(next(self.network.hosts()))

    @property
    def bridge(self) -> str:
        return f"bt{self.lab_id}"

    @property
    def bridges(self) -> list[str]:
        return [net.bridge for net in self.networks]

    def bridge_of(self, network: str) -> str:
        """The bridge of a network by name (an unknown name: booted's)."""
        return next((n.bridge for n in self.networks if n.name == network), self.bridge)

    def link(self, kind: str, ip: str) -> str:
        """A host's interface on a lab bridge (`ip`: its address on that network): b<kind><lab id><host
        number> on the first network, with x<k> after it on network k, within Linux's 15 characters."""
        address = ipaddress.IPv4Address(ip)
        k, net = next(((k, n.cidr) for k, n in enumerate(self.networks) if address in n.cidr), (0, self.network))
        index = int(address) - int(net.network_address)
        return f"b{kind}{self.lab_id}{index}" + (f"x{k}" if k else "")

    def host_dir(self, name: str) -> Path:
        return self.dir / "hosts" / name
