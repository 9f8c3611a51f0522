"""Load and validate environments.py: the user's description of each lab.

The file defines ENVIRONMENTS, a dict: name -> {"provider", "network", "hosts", "min"}. Host keys may
be ranges (`web[01:04]` keeps zero padding, `web[1:4]` does not). Every error names the file, the
line, the environment, the host and the key, and says what is allowed.
"""

from __future__ import annotations

import ast
import ipaddress
import re
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from booted.errors import ConfigError
from booted.monitor.spec import MonitorSpec, parse_monitor
from booted.providers import NAMES as PROVIDERS
from booted.providers.hypervisors import BRIDGE_RE, Hypervisor, parse_hypervisors

HOST_KEYS = {"role", "service", "version", "memory", "cpus", "hypervisor"}
ENV_KEYS = {"provider", "network", "hosts", "min", "packages", "init", "max", "target", "monitor", "boot",
            "hypervisors", "uplink"}
BOOTS = {"kernel": "QEMU boots the kernel and hands in the identity (fast)",
         "disk": "the bootable golden disk (extlinux) with the identity on a seed disk, as other hypervisors boot",
         "installed": "each host's own disk from an installer (fab image_build --installer), with the seed disk"}
INITS = ("busybox", "systemd")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]{1,62}\Z")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}\Z")
RANGE_RE = re.compile(r"^([a-z][a-z0-9-]*)\[(\d+):(\d+)\]([a-z0-9-]*)\Z")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@dataclass(frozen=True)
class HostSpec:
    """One host as the user wants it."""

    name: str
    role: str
    service: str | None
    version: str | None
    memory: int = 256
    cpus: int = 1
    hypervisor: str = ""  # libvirt: pinned to this hypervisor (by name)


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
    boot: str = "kernel"  # qemu: how hosts boot (BOOTS)
    hypervisors: tuple[Hypervisor, ...] = ()  # libvirt: the daemons its hosts run on
    uplink: str = ""  # libvirt: this machine's interface into the lab bridge, towards other hypervisors

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


class _Lines:
    """Line numbers of keys in the environments file, for error messages. `where(env, host, key)` follows
    that path through the ENVIRONMENTS literal (a key may skip levels: a host key is found under the
    environment's 'hosts'), so an error in the second environment points into the second environment."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.root: ast.AST | None = None
        try:
            tree = ast.parse(source, str(path))
        except SyntaxError:
            return
        self.root = tree
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and any(
                    isinstance(t, ast.Name) and t.id == "ENVIRONMENTS" for t in node.targets):
                self.root = node.value

    @staticmethod
    def _find(node: ast.AST, key: str) -> tuple[int, ast.AST] | None:
        for sub in ast.walk(node):  # breadth first: the shallowest match
            if isinstance(sub, ast.Dict):
                for k, v in zip(sub.keys, sub.values):
                    if isinstance(k, ast.Constant) and k.value == key:
                        return k.lineno, v
        return None

    def where(self, *keys: str) -> str:
        node, line = self.root, None
        for key in keys:
            found = self._find(node, key) if node is not None else None
            if found is not None:
                line, node = found
        return f"{self.path}:{line}" if line is not None else str(self.path)


def load_environments(path: Path) -> dict[str, Environment]:
    """Run the user's file and validate every environment in it."""
    if not path.exists():
        raise ConfigError(f"{path}: not found. Create it (see README: 'environments.py') "
                          "or point BOOTED_ENVIRONMENTS at your file")
    source = path.read_text()
    try:
        namespace = runpy.run_path(str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # the user's code failed: report where, never a traceback
        raise ConfigError(f"{path}: running it failed: {type(exc).__name__}: {exc}") from None
    raw = namespace.get("ENVIRONMENTS")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: define ENVIRONMENTS = {{'name': {{'provider': ..., 'network': ..., "
                          "'hosts': {...}}}}} (a non-empty dict)")
    lines = _Lines(path, source)
    envs: dict[str, Environment] = {}
    owner: dict[str, str] = {}  # host name -> its environment
    for name, value in raw.items():
        env = _environment(name, value, lines)
        for other in envs.values():
            if env.network.overlaps(other.network):
                raise ConfigError(f"{lines.where(name, 'network')}: environment {name!r}: network {env.network} "
                                  f"overlaps environment {other.name!r}'s {other.network}: give each environment "
                                  "its own network")
        for host in env.hosts:
            if host.name in owner:
                raise ConfigError(f"{lines.where(name, 'hosts')}: environment {name!r}: host {host.name!r} is "
                                  f"also defined in environment {owner[host.name]!r}: host names are unique "
                                  "across environments (each names one host image)")
            owner[host.name] = name
        envs[name] = env
    return envs


def select_environment(envs: dict[str, Environment], name: str | None, path: Path) -> Environment:
    """--env / BOOTED_ENV, or the only environment in the file."""
    if name is None:
        if len(envs) == 1:
            return next(iter(envs.values()))
        raise ConfigError(f"{path} has {len(envs)} environments ({', '.join(envs)}): "
                          "choose one with --env NAME or BOOTED_ENV")
    if name not in envs:
        raise ConfigError(f"{path}: no environment {name!r} (defined: {', '.join(envs)})")
    return envs[name]


def _environment(name: Any, value: Any, lines: _Lines) -> Environment:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"{lines.where()}: environment name {name!r}: use lowercase letters, digits and -")
    where = lines.where(name)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: environment {name!r} must be a dict with keys {sorted(ENV_KEYS)}")
    unknown = set(value) - ENV_KEYS
    if unknown:
        raise ConfigError(f"{lines.where(name, *map(str, unknown))}: environment {name!r}: unknown key(s) "
                          f"{sorted(map(str, unknown))} (allowed: {sorted(ENV_KEYS)})")
    provider = value.get("provider", "netns")
    if provider not in PROVIDERS:
        raise ConfigError(f"{lines.where(name, 'provider')}: environment {name!r}: provider {provider!r} "
                          f"is not one of {', '.join(PROVIDERS)} (the providers this version of booted has)")
    network = _network(name, value.get("network"), lines)
    hosts_raw = value.get("hosts")
    if not isinstance(hosts_raw, dict) or not hosts_raw:
        raise ConfigError(f"{lines.where(name, 'hosts')}: environment {name!r}: 'hosts' must be a non-empty "
                          "dict of NAME_OR_RANGE -> {'role': ..., 'service': ..., 'version': ...}")
    hosts: list[HostSpec] = []
    seen: set[str] = set()
    for key, spec in hosts_raw.items():
        for host in _hosts(name, key, spec, lines):
            if host.name in seen:
                raise ConfigError(f"{lines.where(name, str(key))}: environment {name!r}: host {host.name!r} "
                                  "is defined twice (check overlapping ranges)")
            seen.add(host.name)
            hosts.append(host)
    if len(hosts) > network.num_addresses - 3:
        raise ConfigError(f"{lines.where(name, 'network')}: environment {name!r}: network {network} has room "
                          f"for {network.num_addresses - 3} hosts, {len(hosts)} are defined: use a larger network")
    minimum = _minimum(name, value.get("min", {}), hosts, lines)
    packages = packages_of(value.get("packages", []), f"{lines.where(name, 'packages')}: environment {name!r}")
    init = value.get("init", "busybox")
    if init not in INITS:
        raise ConfigError(f"{lines.where(name, 'init')}: environment {name!r}: init {init!r} is not one of "
                          f"{', '.join(INITS)}")
    boot = value.get("boot", "kernel")
    if boot not in BOOTS or (boot != "kernel" and provider != "qemu"):
        raise ConfigError(f"{lines.where(name, 'boot')}: environment {name!r}: boot {boot!r}: for provider qemu, one "
                          f"of {', '.join(BOOTS)} (other providers boot their own way)")
    hypervisors, uplink = _hypervisors(name, provider, value, hosts, lines)
    roles: dict[str, int] = {}
    for host in hosts:
        roles[host.role] = roles.get(host.role, 0) + 1
    monitor = parse_monitor(name, value, roles, minimum, lines.where)
    return Environment(name, provider, network, tuple(hosts), minimum, str(lines.path), packages, init, monitor,
                       boot, hypervisors, uplink)


def _hypervisors(env: str, provider: str, value: dict[str, Any], hosts: list[HostSpec], lines: _Lines
                 ) -> tuple[tuple[Hypervisor, ...], str]:
    """`hypervisors`, `uplink` and hosts' `hypervisor` pins: for provider libvirt only, checked."""
    pinned = [h for h in hosts if h.hypervisor]
    if provider != "libvirt":
        for key in ("hypervisors", "uplink"):
            if key in value:
                raise ConfigError(f"{lines.where(env, key)}: environment {env!r}: {key!r} is for provider libvirt "
                                  f"(this environment uses {provider})")
        if pinned:
            raise ConfigError(f"{lines.where(env, pinned[0].name, 'hypervisor')}: environment {env!r}: host "
                              f"{pinned[0].name!r}: 'hypervisor' is for provider libvirt")
        return (), ""
    try:
        hypervisors = parse_hypervisors(value.get("hypervisors"))
    except ValueError as exc:
        raise ConfigError(f"{lines.where(env, 'hypervisors')}: environment {env!r}: {exc}") from None
    names = [hv.name for hv in hypervisors]
    for host in pinned:
        if host.hypervisor not in names:
            raise ConfigError(f"{lines.where(env, host.name, 'hypervisor')}: environment {env!r}: host "
                              f"{host.name!r}: hypervisor {host.hypervisor!r} is not one of {', '.join(names)}")
    uplink = value.get("uplink", "")
    if not isinstance(uplink, str) or (uplink and not BRIDGE_RE.match(uplink)):
        raise ConfigError(f"{lines.where(env, 'uplink')}: environment {env!r}: uplink {uplink!r}: the name of an "
                          "interface of this machine (letters, digits, _ . -, at most 15)")
    return hypervisors, uplink


def packages_of(raw: Any, where: str) -> tuple[str, ...]:
    """A list of Debian package names, checked (they reach debootstrap's and apt's command lines)."""
    if not isinstance(raw, list | tuple) or not all(isinstance(p, str) for p in raw):
        raise ConfigError(f"{where}: 'packages' must be a list of Debian package names, e.g. ['redis-server']")
    bad = [p for p in raw if not PACKAGE_RE.match(p)]
    if bad:
        raise ConfigError(f"{where}: package name {bad[0]!r}: Debian package names are lowercase letters, digits "
                          "and + . -")
    return tuple(sorted(set(raw)))


def _network(env: str, raw: Any, lines: _Lines) -> ipaddress.IPv4Network:
    where = lines.where(env, "network")
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: environment {env!r}: 'network' must be a CIDR string like '10.77.0.0/24'")
    try:
        net = ipaddress.IPv4Network(raw, strict=True)
    except ValueError as exc:
        raise ConfigError(f"{where}: environment {env!r}: network {raw!r} is not a valid IPv4 CIDR ({exc})") from None
    if not net.is_private or net.prefixlen > 29 or net.prefixlen < 16:
        raise ConfigError(f"{where}: environment {env!r}: network {raw!r} must be a private range "
                          "(10/8, 172.16/12, 192.168/16) between /16 and /29")
    return net


def _hosts(env: str, key: Any, spec: Any, lines: _Lines) -> list[HostSpec]:
    where = lines.where(env, str(key))
    if not isinstance(key, str):
        raise ConfigError(f"{where}: environment {env!r}: host key {key!r} must be a string")
    try:
        names = expand_range(key)
    except ValueError as exc:
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: {exc}") from None
    for host in names:
        if not NAME_RE.match(host):
            raise ConfigError(f"{where}: environment {env!r}: host name {host!r}: use lowercase letters, digits "
                              "and -, starting with a letter, at most 31 characters")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: environment {env!r}: host {key!r} must map to a dict with keys "
                          f"{sorted(HOST_KEYS)}")
    unknown = set(spec) - HOST_KEYS
    if unknown:
        raise ConfigError(f"{lines.where(env, key, *map(str, unknown))}: environment {env!r}: host {key!r}: "
                          f"unknown key(s) {sorted(map(str, unknown))} (allowed: {sorted(HOST_KEYS)})")
    role = spec.get("role", "worker")
    service = spec.get("service")
    version = spec.get("version")
    for label, val in (("role", role), ("service", service)):
        if val is not None and (not isinstance(val, str) or not NAME_RE.match(val)):
            raise ConfigError(f"{where}: environment {env!r}: host {key!r}: {label} {val!r}: use lowercase "
                              "letters, digits and -")
    if version is not None and (not isinstance(version, str) or not VERSION_RE.match(version)):
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: version {version!r}: a tag or commit "
                          "(letters, digits, . _ -)")
    if version is not None and service is None:
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: 'version' needs a 'service'")
    memory, cpus = spec.get("memory", 256), spec.get("cpus", 1)
    pin = spec.get("hypervisor", "")
    if not isinstance(pin, str) or (pin and not NAME_RE.match(pin)):
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: hypervisor {pin!r}: a hypervisor's name")
    if not _whole(memory) or not 64 <= memory <= 65536:
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: memory {memory!r}: MB, 64..65536")
    if not _whole(cpus) or not 1 <= cpus <= 64:
        raise ConfigError(f"{where}: environment {env!r}: host {key!r}: cpus {cpus!r}: 1..64")
    return [HostSpec(n, role, service, version, memory, cpus, pin) for n in names]


def _whole(value: Any) -> bool:
    """A whole number (True and False are ints in Python, not numbers in a lab description)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _minimum(env: str, raw: Any, hosts: list[HostSpec], lines: _Lines) -> dict[str, int]:
    where = lines.where(env, "min")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: environment {env!r}: 'min' must be a dict ROLE -> COUNT")
    roles: dict[str, int] = {}
    for host in hosts:
        roles[host.role] = roles.get(host.role, 0) + 1
    result: dict[str, int] = {}
    for role, count in raw.items():
        if role not in roles:
            raise ConfigError(f"{lines.where(env, 'min', str(role))}: environment {env!r}: min: no host has role "
                              f"{role!r} (roles: {', '.join(sorted(roles))})")
        if not _whole(count) or not 0 <= count <= roles[role]:
            raise ConfigError(f"{lines.where(env, 'min', str(role))}: environment {env!r}: min[{role!r}] = "
                              f"{count!r}: a whole number from 0 to {roles[role]} (hosts with that role)")
        result[role] = count
    return result
