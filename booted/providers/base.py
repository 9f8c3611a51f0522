"""The provider contract: a handful of typed methods, nothing reported done that was not done."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from booted.identity import Identity
from booted.image import GoldenImage

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Lab:
    """One environment's lab on this machine: its network and where its hosts keep their files."""

    env: str
    lab_id: str
    network: ipaddress.IPv4Network
    dir: Path
    boot_timeout: int = 60  # seconds a host may take to boot (BOOTED_BOOT_TIMEOUT)
    boot_parallel: int = 4  # hosts booting at once where booting is CPU-bound (BOOTED_BOOT_PARALLEL)
    net: str = "auto"  # qemu: "tap" (root: a bridge), "user" (QEMU user-mode networking) or "auto"

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


@dataclass(frozen=True)
class Started:
    """A host the provider started: the PID of its handle process (VM, namespace init...)."""

    name: str
    pid: int


class Provider(Protocol):
    """What every provider implements. Errors are raised as ProviderError/NeedsRoot/ToolMissing."""

    name: str

    def check(self, lab: Lab | None = None) -> None:
        """Raise a clear error if this machine cannot run the provider (tool missing, not root) for `lab`."""

    def prepare_network(self, lab: Lab) -> None:
        """Create the lab network (bridge with the gateway address) before any host boots."""

    def start(self, lab: Lab, golden: GoldenImage, hosts: list[Identity], progress: Progress
              ) -> tuple[list[Started], dict[str, str]]:
        """Start hosts (network first). Returns the started ones and host -> error for the others."""

    def stop(self, lab: Lab, names: list[str]) -> dict[str, str]:
        """Stop hosts; return host -> error for those that could not be stopped. Stopped hosts are gone."""

    def endpoints(self, lab: Lab, name: str) -> dict[int, tuple[str, int]]:
        """Where the controller reaches a running host's ports when not at its lab IP (user-mode VMs:
        guest port -> 127.0.0.1:forwarded port); empty when the host answers at its lab IP."""

    def listen_addresses(self, lab: Lab) -> list[str]:
        """Where booted's nginx must listen for this lab's boot calls (nothing when the lab is down)."""

    def running(self, lab: Lab) -> dict[str, int]:
        """Hosts that really run now, observed on the machine: name -> handle PID."""

    def destroy(self, lab: Lab, name: str) -> None:
        """Remove a stopped host's disk (overlay, qcow2...)."""

    def clone(self, lab: Lab, src: str, new: str) -> None:
        """Give host `new` a copy of host `src`'s disk (its writes since the golden image)."""

    def teardown(self, lab: Lab) -> None:
        """Remove the lab network once no host runs; reap leftovers of crashed runs."""
