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


def nowhere(name: str) -> str:
    return ""


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

    @property
    def gateway(self) -> str:
        return str(next(self.network.hosts()))

    @property
    def bridge(self) -> str:
        return f"bt{self.lab_id}"

    def link(self, kind: str, ip: str) -> str:
        """A host's interface on the bridge: b<kind><lab id><host number>, within Linux's 15 characters."""
        index = int(ipaddress.IPv4Address(ip)) - int(self.network.network_address)
        return f"b{kind}{self.lab_id}{index}"

    def host_dir(self, name: str) -> Path:
        return self.dir / "hosts" / name
