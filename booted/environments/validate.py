"""Validating one environment of environments.py: every mistake names file:line, the environment, the
host and the key, and says what is allowed."""

from __future__ import annotations

from typing import Any

from booted.environments.impairment import Impairment, impairment
from booted.environments.loader import Lines
from booted.environments.model import (
    ENV_KEYS,
    HOST_KEYS,
    INITS,
    Environment,
    HostSpec,
    expand_range,
    packages_of,
)
from booted.environments.monitor import parse_monitor
from booted.environments.networks import Net, host_networks, parse_networks
from booted.errors import ConfigError
from booted.providers import NAMES as PROVIDERS
from booted.providers.options import parse_options
from booted.rules import HOST_NAME, VERSION

MULTI_NIC = ("netns", "qemu")  # the providers that give a host a NIC per network



def environment(name: Any, value: Any, lines: Lines) -> Environment:
    """One environment's dict, checked, as an Environment."""
    if not isinstance(name, str) or not HOST_NAME.match(name):
        raise ConfigError(f"{lines.at()}: environment name {name!r}: use lowercase letters, digits and -")
    where = lines.at(name)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: environment {name!r} must be a dict with keys {sorted(ENV_KEYS)}")
    unknown = set(value) - ENV_KEYS
    if unknown:
        raise ConfigError(f"{lines.at(name, *map(str, unknown))}: environment {name!r}: unknown key(s) "
                          f"{sorted(map(str, unknown))} (allowed: {sorted(ENV_KEYS)})")
    provider = value.get("provider", "netns")
    if provider not in PROVIDERS:
        raise ConfigError(f"{lines.at(name, 'provider')}: environment {name!r}: provider {provider!r} "
                          f"is not one of {', '.join(PROVIDERS)} (the providers this version of booted has)")
    nets = parse_networks(name, value, lines.at)
    if len(nets) > 1 and provider not in MULTI_NIC:
        raise ConfigError(f"{nets[1].where}: environment {name!r}: several networks are not supported for provider "
                          f"{provider!r} yet (providers with several: {', '.join(MULTI_NIC)}); use one network")
    network = nets[0].cidr
    hosts_raw = value.get("hosts")
    if not isinstance(hosts_raw, dict) or not hosts_raw:
        raise ConfigError(f"{lines.at(name, 'hosts')}: environment {name!r}: 'hosts' must be a non-empty "
                          "dict of NAME_OR_RANGE -> {'role': ..., 'service': ..., 'version': ...}")
    hosts: list[HostSpec] = []
    defined: dict[str, tuple[str, dict[str, Any]]] = {}  # host -> the key it is defined under, its dict
    for key, spec in hosts_raw.items():
        for host in _hosts(name, key, spec, lines, nets):
            if host.name in defined:
                raise ConfigError(f"{lines.at(name, str(key))}: environment {name!r}: host {host.name!r} "
                                  "is defined twice (check overlapping ranges)")
            defined[host.name] = (str(key), spec)
            hosts.append(host)
    if len(hosts) > network.num_addresses - 3:
        raise ConfigError(f"{nets[0].where}: environment {name!r}: network {network} has room "
                          f"for {network.num_addresses - 3} hosts, {len(hosts)} are defined: use a larger network")
    minimum = _minimum(name, value.get("min", {}), hosts, lines)
    packages = packages_of(value.get("packages", []), f"{lines.at(name, 'packages')}: environment {name!r}")
    init = value.get("init", "busybox")
    if init not in INITS:
        raise ConfigError(f"{lines.at(name, 'init')}: environment {name!r}: init {init!r} is not one of "
                          f"{', '.join(INITS)}")
    options = parse_options(provider, name, value, defined, lines.at)
    roles: dict[str, int] = {}
    for host in hosts:
        roles[host.role] = roles.get(host.role, 0) + 1
    monitor = parse_monitor(name, value, roles, minimum, lines.at)
    impair = _impair(value, lines, name) or Impairment()
    return Environment(name, provider, network, tuple(hosts), minimum, str(lines.path), packages, init, monitor,
                       options, nets[0].where, impair, nets if "networks" in value else ())


def _impair(spec: dict[str, Any], lines: Lines, env: str, key: str | None = None) -> Impairment | None:
    """An environment's or a host's `impair` dict (environments/impairment.py), or None when it has none."""
    if "impair" not in spec:
        return None
    path = (env, key, "impair") if key is not None else (env, "impair")
    try:
        return impairment(spec["impair"])
    except ValueError as exc:
        sub = str(exc).split(":", 1)[0]
        where = lines.at(*path, sub) if isinstance(spec["impair"], dict) and sub in spec["impair"] else lines.at(*path)
        owner = f"host {key!r}: " if key is not None else ""
        raise ConfigError(f"{where}: environment {env!r}: {owner}impair: {exc}") from None


def _hosts(env: str, key: Any, spec: Any, lines: Lines, nets: tuple[Net, ...]) -> list[HostSpec]:
    where = lines.at(env, str(key))
    if not isinstance(key, str):
        raise ConfigError(f"{where}: environment {env!r}: host key {key!r} must be a string")
    try:
        names = expand_range(key)
    except ValueError as exc:
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: {exc}") from None
    for host in names:
        if not HOST_NAME.match(host):
            raise ConfigError(f"{where}: environment {env!r}: host name {host!r}: use lowercase letters, digits "
                              "and -, starting with a letter, at most 31 characters")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: environment {env!r}: host {key!r} must map to a dict with keys "
                          f"{sorted(HOST_KEYS)}")
    unknown = set(spec) - HOST_KEYS
    if unknown:
        raise ConfigError(f"{lines.at(env, key, *map(str, unknown))}: environment {env!r}: host {key!r}: "
                          f"unknown key(s) {sorted(map(str, unknown))} (allowed: {sorted(HOST_KEYS)})")
    role = spec.get("role", "worker")
    service = spec.get("service")
    version = spec.get("version")
    for label, val in (("role", role), ("service", service)):
        if val is not None and (not isinstance(val, str) or not HOST_NAME.match(val)):
            raise ConfigError(f"{where}: environment {env!r}: host {key!r}: {label} {val!r}: use lowercase "
                              "letters, digits and -")
    if version is not None and (not isinstance(version, str) or not VERSION.match(version)):
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: version {version!r}: a tag or commit "
                          "(letters, digits, . _ -)")
    if version is not None and service is None:
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: 'version' needs a 'service'")
    memory, cpus = spec.get("memory", 256), spec.get("cpus", 1)
    if not _whole(memory) or not 64 <= memory <= 65536:
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: memory {memory!r}: MB, 64..65536")
    if not _whole(cpus) or not 1 <= cpus <= 64:
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: cpus {cpus!r}: 1..64")
    impair = _impair(spec, lines, env, key)
    networks = host_networks(env, key, spec, nets, lines.at)
    return [HostSpec(n, role, service, version, memory, cpus, impair, networks, where) for n in names]


def _whole(value: Any) -> bool:
    """A whole number (True and False are ints in Python, not numbers in a lab description)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _minimum(env: str, raw: Any, hosts: list[HostSpec], lines: Lines) -> dict[str, int]:
    where = lines.at(env, "min")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: environment {env!r}: 'min' must be a dict ROLE -> COUNT")
    roles: dict[str, int] = {}
    for host in hosts:
        roles[host.role] = roles.get(host.role, 0) + 1
    result: dict[str, int] = {}
    for role, count in raw.items():
        if role not in roles:
            raise ConfigError(f"{lines.at(env, 'min', str(role))}: environment {env!r}: min: no host has role "
                              f"{role!r} (roles: {', '.join(sorted(roles))})")
        if not _whole(count) or not 0 <= count <= roles[role]:
            raise ConfigError(f"{lines.at(env, 'min', str(role))}: environment {env!r}: min[{role!r}] = "
                              f"{count!r}: a whole number from 0 to {roles[role]} (hosts with that role)")
        result[role] = count
    return result
