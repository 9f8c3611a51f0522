"""What remote work is handed by the run above it (it never imports the run's context): the run's kit,
the service definitions, a resolver from listed hosts to how they are reached, and a fan-out factory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from booted.kit import Kit
from booted.remote.fanout import Fleet, Target
from booted.remote.services import Service, get_service


class Resolver(Protocol):
    """Listed hosts -> where they are reached, built from the labs' providers (a forwarded SSH or service
    port reaches remote work only through here)."""

    def targets(self, names: list[str] | None = None, env: str | None = None) -> list[Target]:
        """Targets of listed hosts (all, or `names`; only `env`'s with env), in host-list order."""
        ...

    def gateway(self, host: str) -> str:
        """The lab gateway address a host reaches booted's nginx on."""
        ...

    def address(self, env: str, ip: str, network: str | None) -> str:
        """A host's address on a network of its environment (None: the first), from its lab IP."""
        ...


@dataclass(frozen=True)
class Remote:
    kit: Kit
    services: Mapping[str, Service]
    resolver: Resolver
    fleet: Callable[[], Fleet]  # a new Fleet (a context manager: its SSH connections close with it)

    def service(self, name: str) -> Service:
        return get_service(self.kit.settings.services_dir, name, dict(self.services))
