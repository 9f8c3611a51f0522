"""One environment's lab as a provider sees it, and how its VMs boot: the types every provider module (and
the lab handle above them) shares. They import nothing of the providers, so no provider module needs
another's only for a type."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from booted.providers.hypervisors import Hypervisor


class Boot(StrEnum):
    """How a qemu host boots (other providers boot their own way). A str: "disk" == Boot.DISK."""

    KERNEL = "kernel"  # QEMU hands in the kernel and the identity (fw_cfg)
    DISK = "disk"  # the bootable golden disk (its own boot loader), the identity on a seed disk
    INSTALLED = "installed"  # the host's own disk from an installer, the identity on a seed disk


@dataclass(frozen=True)
class Lab:
    """One environment's lab on this machine, as a provider sees it: its network and its hosts' folders."""

    env: str
    lab_id: str
    network: ipaddress.IPv4Network
    dir: Path
    packages: tuple[str, ...] = ()  # extra Debian packages its golden image carries (environment + services)
    init: str = "busybox"  # busybox | systemd
    # qemu: how hosts boot. A Boot; environments.py still hands its value as a string, made a Boot here.
    boot: Boot | str = Boot.KERNEL
    hypervisors: tuple[Hypervisor, ...] = ()  # libvirt: where its hosts may run
    uplink: str = ""  # libvirt: an interface of this machine put into the lab bridge (to other hypervisors)

    def __post_init__(self) -> None:
        object.__setattr__(self, "boot", Boot(self.boot))  # ValueError for a value that is not a Boot

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
