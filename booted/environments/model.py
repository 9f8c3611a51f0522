"""What a validated environment is: hosts as the user wants them, and the rules of names, ranges and
package lists (shared with service.toml)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from booted.environments.impairment import Impairment
from booted.environments.monitor import MonitorSpec
from booted.environments.networks import Net, address_on
from booted.errors import ConfigError
from booted.providers.lab import Options
from booted.providers.options import env_keys, host_keys
from booted.rules import DEBIAN_PACKAGE

# the keys every provider reads, and (providers/options.py) those one provider reads and checks itself
HOST_KEYS = {"role", "service", "version", "memory", "cpus", "impair", "networks"} | host_keys()
ENV_KEYS = {"provider", "network", "networks", "hosts", "min", "packages", "init", "max", "target", "monitor",
            "impair"} | env_keys()
INITS = ("busybox", "systemd")
RANGE_RE = re.compile(r"^([a-z][a-z0-9-]*)\[(\d+):(\d+)\]([a-z0-9-]*)\Z")


@dataclass(frozen=True)
class HostSpec:
    """One host as the user wants it."""

    name: str
    role: str
    service: str | None
    version: str | None
    memory: int = 256
    cpus: int = 1
    impair: Impairment | None = None  # its link's impairment (None: the environment's)
    networks: tuple[str, ...] = ()  # the networks it has a NIC on, in the environment's order (): the first
    where: str = ""  # file:line of its key, for errors found later (its service's network)


@dataclass(frozen=True)
class Environment:
    """One validated environment."""

    name: str
    provider: str
    network: ipaddress.IPv4Network
    hosts: tuple[HostSpec, ...]
    minimum: dict[str, int] = field(default_factory=dict)
    source: str = ""
    packages: tuple[str, ...] = ()  # extra Debian packages baked into its golden image
    init: str = "busybox"  # what hosts boot: busybox init (fast) or Debian's systemd
    monitor: MonitorSpec = field(default_factory=MonitorSpec)  # max, target and the monitor's settings
    options: Options = field(default_factory=Options)  # its provider's own keys (qemu: boot; libvirt: hypervisors...)
    where_network: str = ""  # file:line of its 'network' key, for errors found later (on this machine)
    impair: Impairment = field(default_factory=Impairment)  # its hosts' links' impairment, unless a host says
    nets: tuple[Net, ...] = ()  # its networks, the first booted's (): one, `network`, named after it

    @property
    def networks(self) -> tuple[Net, ...]:
        return self.nets or (Net(self.name, self.network, True, self.where_network),)

    @property
    def lab_nets(self) -> tuple[tuple[str, ipaddress.IPv4Network, bool], ...]:
        """Its networks as a provider's Lab has them: (name, CIDR, gateway)."""
        return tuple((n.name, n.cidr, n.gateway) for n in self.networks)

    def net(self, name: str | None) -> Net:
        """A network by name (None: the first)."""
        for net in self.networks:
            if name is None or net.name == name:
                return net
        raise ConfigError(f"{self.source}: environment {self.name!r} has no network {name!r} "
                          f"(networks: {', '.join(n.name for n in self.networks)})")

    def host_nets(self, name: str) -> tuple[Net, ...]:
        """The networks a host has a NIC on, the first first (a host not in the file: the first only)."""
        names = next((h.networks for h in self.hosts if h.name == name), ())
        return tuple(n for n in self.networks if n.name in names) or self.networks[:1]

    def address(self, ip: str, network: str | None) -> str:
        """A host's address on a network (None: the first), from its address on the first."""
        return address_on(ip, self.network, self.net(network).cidr)

    def host(self, name: str) -> HostSpec:
        for spec in self.hosts:
            if spec.name == name:
                return spec
        raise ConfigError(f"{self.source}: environment {self.name!r} has no host {name!r} "
                          f"(hosts: {', '.join(h.name for h in self.hosts)})")

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return next(self.network.hosts())


def expand_range(key: str) -> list[str]:
    """`web[01:03]` -> web01 web02 web03; a plain name -> [name]. Raises ValueError on a bad range."""
    match = RANGE_RE.match(key)
    if not match:
        if "[" in key or "]" in key:
            raise ValueError("a range is written like web[01:04] or web[1:4] (first <= last)")
        return [key]
    prefix, first, last, suffix = match.groups()
    low, high = int(first), int(last)
    if low > high:
        raise ValueError(f"range start {first} is after its end {last}")
    if high - low >= 1000:
        raise ValueError("a range may name at most 1000 hosts")
    width = len(first) if first.startswith("0") and len(first) > 1 else 0
    return [f"{prefix}{str(n).zfill(width)}{suffix}" for n in range(low, high + 1)]


def packages_of(raw: Any, where: str) -> tuple[str, ...]:
    """A list of Debian package names, checked (they reach debootstrap's and apt's command lines)."""
    if not isinstance(raw, list | tuple) or not all(isinstance(p, str) for p in raw):
        raise ConfigError(f"{where}: 'packages' must be a list of Debian package names, e.g. ['redis-server']")
    bad = [p for p in raw if not DEBIAN_PACKAGE.match(p)]
    if bad:
        raise ConfigError(f"{where}: package name {bad[0]!r}: Debian package names are lowercase letters, digits "
                          "and + . -")
    return tuple(sorted(set(raw)))
