"""An environment's networks: `"network": CIDR` (one network named after the environment) or `"networks":
{NAME: CIDR or {"network": CIDR, "gateway": bool}}`. The first is booted's (the gateway, nginx, the apt
proxy, SSH: every host is on it); the others are bridges with no address on the controller unless
`"gateway": true`. A host has one NIC per network it names, and on each the address with its index on the
first network (10.0.0.7 on 10.0.0.0/24 is 10.0.1.7 on 10.0.1.0/24): no second lease to keep."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from booted.errors import ConfigError
from booted.providers.lab import address_on
from booted.rules import HOST_NAME

PRIVATE = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))  # RFC 1918
__all__ = ["MAX_NETWORKS", "Net", "address_on", "host_networks", "parse_networks"]
MAX_NETWORKS = 8  # NICs per host: link names carry the network's number in one digit


@dataclass(frozen=True)
class Net:
    """One network of an environment."""

    name: str
    cidr: ipaddress.IPv4Network
    gateway: bool = True  # the controller has its first address (always for the first network)
    where: str = ""  # file:line of its key, for errors found later (on this machine)


def parse_networks(env: str, value: dict[str, Any], at: Callable[..., str]) -> tuple[Net, ...]:
    """The environment's networks, checked: names, CIDRs, no overlap, each as large as the first."""
    if "network" in value and "networks" in value:
        raise ConfigError(f"{at(env, 'networks')}: environment {env!r}: give either 'network' (one network) or "
                          "'networks' (several), not both")
    if "networks" not in value:
        return (Net(env, _cidr(env, value.get("network"), at(env, "network"), "network"), True, at(env, "network")),)
    raw = value["networks"]
    where = at(env, "networks")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: environment {env!r}: 'networks' must be a non-empty dict NAME -> CIDR "
                          "(or NAME -> {'network': CIDR, 'gateway': True}), e.g. {'mgmt': '10.77.0.0/24'}")
    if len(raw) > MAX_NETWORKS:
        raise ConfigError(f"{where}: environment {env!r}: at most {MAX_NETWORKS} networks, {len(raw)} are given")
    nets: list[Net] = []
    for name, spec in raw.items():
        here = at(env, "networks", str(name))
        if not isinstance(name, str) or not HOST_NAME.match(name):
            raise ConfigError(f"{here}: environment {env!r}: network name {name!r}: use lowercase letters, digits "
                              "and -, starting with a letter")
        gateway = False  # only the first network has the controller on it, unless "gateway": True
        if isinstance(spec, dict):
            unknown = sorted(set(map(str, spec)) - {"network", "gateway"})
            if unknown:
                raise ConfigError(f"{here}: environment {env!r}: network {name!r}: unknown key(s) {unknown} "
                                  "(allowed: ['gateway', 'network'])")
            gateway = spec.get("gateway", False)
            if not isinstance(gateway, bool):
                raise ConfigError(f"{here}: environment {env!r}: network {name!r}: 'gateway' is True or False")
            spec = spec.get("network")
        cidr = _cidr(env, spec, here, f"network {name!r}")
        first = nets[0].cidr if nets else cidr
        for other in nets:
            if cidr.overlaps(other.cidr):
                raise ConfigError(f"{here}: environment {env!r}: network {name!r} ({cidr}) overlaps network "
                                  f"{other.name!r} ({other.cidr}): give each network its own range")
        if cidr.prefixlen > first.prefixlen:
            raise ConfigError(f"{here}: environment {env!r}: network {name!r} ({cidr}) is smaller than the first "
                              f"network ({first}): a host has the same host number on each, use a /{first.prefixlen} "
                              "or larger")
        nets.append(Net(name, cidr, gateway or not nets, here))
    return tuple(nets)


def host_networks(env: str, key: str, spec: dict[str, Any], nets: tuple[Net, ...], at: Callable[..., str]
                  ) -> tuple[str, ...]:
    """The networks a host names (default: the first), checked: known, no repeats, the first among them."""
    raw = spec.get("networks", [nets[0].name])
    where = at(env, key, "networks")
    names = [n.name for n in nets]
    if not isinstance(raw, list | tuple) or not raw or not all(isinstance(n, str) for n in raw):
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: 'networks' must be a list of network "
                          f"names, e.g. {names[:2]}")
    unknown = [n for n in raw if n not in names]
    if unknown:
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: unknown network {unknown[0]!r} "
                          f"(networks: {', '.join(names)})")
    if len(set(raw)) != len(raw):
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: a network is named twice in {list(raw)}")
    if names[0] not in raw:
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: every host is on the first network "
                          f"{names[0]!r} (booted reaches it there: boot endpoint, SSH): add it to {list(raw)}")
    return tuple(n for n in names if n in raw)  # in the environment's order: eth0 is the first network


def _cidr(env: str, raw: Any, where: str, what: str) -> ipaddress.IPv4Network:
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: environment {env!r}: {what} must be a CIDR string like '10.77.0.0/24'")
    try:
        net = ipaddress.IPv4Network(raw, strict=True)
    except ValueError as exc:
        raise ConfigError(f"{where}: environment {env!r}: {what} {raw!r} is not a valid IPv4 CIDR ({exc})") from None
    if not any(net.subnet_of(block) for block in PRIVATE) or net.prefixlen > 29 or net.prefixlen < 16:
        raise ConfigError(f"{where}: environment {env!r}: {what} {raw!r} must be a private range "
                          "(10/8, 172.16/12, 192.168/16) between /16 and /29")
    return net
