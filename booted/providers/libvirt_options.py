"""libvirt's keys of an environment: `hypervisors` (where its hosts may run), `uplink` (an interface of this
machine put into the lab bridge, towards other hypervisors), and a host's `hypervisor` (a pin by name)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from booted.errors import ConfigError
from booted.providers.hypervisors import BRIDGE_RE, Hypervisor, parse_hypervisors
from booted.providers.lab import Lab, Options
from booted.rules import HOST_NAME

LIBVIRT_KEYS = (frozenset({"hypervisors", "uplink"}), frozenset({"hypervisor"}))


@dataclass(frozen=True)
class LibvirtOptions(Options):
    hypervisors: tuple[Hypervisor, ...] = ()
    uplink: str = ""
    pins: tuple[tuple[str, str], ...] = ()  # (host, hypervisor name) named in environments.py

    def pinned(self) -> dict[str, str]:
        return dict(self.pins)


def parse_libvirt(env: str, raw: Mapping[str, Any], hosts: Mapping[str, tuple[str, Mapping[str, Any]]],
                  at: Callable[..., str]) -> LibvirtOptions:
    try:
        hypervisors = parse_hypervisors(raw.get("hypervisors"))
    except ValueError as exc:
        raise ConfigError(f"{at(env, 'hypervisors')}: environment {env!r}: {exc}") from None
    names = [hv.name for hv in hypervisors]
    pins = []
    for host, (defined, spec) in hosts.items():
        pin = spec.get("hypervisor", "")
        if not isinstance(pin, str) or (pin and not HOST_NAME.match(pin)):
            raise ConfigError(f"{at(env, defined)}: environment {env!r}: host {defined!r}: hypervisor {pin!r}: a "
                              "hypervisor's name")
        if pin and pin not in names:
            raise ConfigError(f"{at(env, defined, 'hypervisor')}: environment {env!r}: host {host!r}: hypervisor "
                              f"{pin!r} is not one of {', '.join(names)}")
        if pin:
            pins.append((host, pin))
    uplink = raw.get("uplink", "")
    if not isinstance(uplink, str) or (uplink and not BRIDGE_RE.match(uplink)):
        raise ConfigError(f"{at(env, 'uplink')}: environment {env!r}: uplink {uplink!r}: the name of an "
                          "interface of this machine (letters, digits, _ . -, at most 15)")
    return LibvirtOptions(hypervisors, uplink, tuple(pins))


def libvirt_of(lab: Lab) -> LibvirtOptions:
    """The lab's libvirt options (a lab of another provider: none, the local daemon as the only hypervisor)."""
    return lab.options if isinstance(lab.options, LibvirtOptions) else LibvirtOptions(parse_hypervisors(None))
