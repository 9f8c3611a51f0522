"""Services as data: every folder under service/ with a service.toml is a service.

A release is a tar.gz of the service folder at a version: from `<NAME>_REPO` (a git repository; the
version is a tag or commit; the service is the repository root, or its service/<name>/ folder) when that
variable is set, else from the in-tree folder, whose VERSION file names the only version it has.
"""

from __future__ import annotations

import re
import string
import subprocess
import tomllib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from booted.environments import Environment, packages_of
from booted.errors import ConfigError, DeployError
from booted.remote.packing import Release, check_folder, tar_folder, tar_repo
from booted.rules import HOST_NAME, SERVICE_NAME, VERSION
from booted.state.records import Image

HEALTH_RE = re.compile(r"^/[A-Za-z0-9/._~?=&-]{0,200}\Z")
KEYS = {"port", "start", "health", "description", "upstream", "packages", "setup", "on_backends", "stats",
        "reuse_port", "network"}
PLACEHOLDERS = {"ip", "port", "host", "version", "backends"}


@dataclass(frozen=True)
class Service:
    """A service's definition (service/<name>/service.toml)."""

    name: str
    folder: Path
    port: int
    start: str
    health: str
    description: str
    upstream: str | None = None  # a service whose hosts this one fronts ({backends} in `start`)
    packages: tuple[str, ...] = ()  # Debian packages its hosts' golden image carries
    setup: str | None = None  # run in a new release before it is switched to, once per release and host
    on_backends: str | None = None  # a proxy's command that applies a changed backend list live (no restart)
    stats: str | None = None  # a proxy's command printing its counters as JSON (what the monitor reads)
    reuse_port: bool = False  # it binds with SO_REUSEPORT and drains on SIGTERM: restarts overlap, no gap
    network: str | None = None  # the network of its environment it listens on ({ip}); None: the first

    @property
    def repo_var(self) -> str:
        return f"{self.name.upper()}_REPO"


def discover(services_dir: Path) -> dict[str, Service]:
    """Every service folder; a broken service.toml is an error naming the file."""
    found: dict[str, Service] = {}
    if not services_dir.is_dir():
        return found
    for folder in sorted(p for p in services_dir.iterdir() if p.is_dir() and (p / "service.toml").exists()):
        found[folder.name] = load_service(folder)
    for service in found.values():
        if service.upstream is not None and service.upstream not in found:
            raise ConfigError(f"{service.folder / 'service.toml'}: 'upstream' = {service.upstream!r} is not a "
                              f"service (services: {', '.join(found)})")
    return found


def load_service(folder: Path) -> Service:
    path = folder / "service.toml"
    if not SERVICE_NAME.match(folder.name):
        raise ConfigError(f"{folder}: service folder names are lowercase letters and digits (they become task "
                          "names like <name>_deploy)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown} (allowed: {sorted(KEYS)})")
    port, start, health = data.get("port"), data.get("start"), data.get("health", "/health")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError(f"{path}: 'port' must be a number 1..65535, got {port!r}")
    if not isinstance(start, str) or not start.strip():
        raise ConfigError(f"{path}: 'start' must be the command that runs the service, e.g. "
                          "\"exec python3 app.py --bind {ip} --port {port}\"")
    _placeholders(path, "start", start)
    if not isinstance(health, str) or not HEALTH_RE.match(health):
        raise ConfigError(f"{path}: 'health' must be a URL path like /health (letters, digits, / . _ - ~ ? = &)")
    upstream = data.get("upstream")
    if upstream is not None and (not isinstance(upstream, str) or not SERVICE_NAME.match(upstream)):
        raise ConfigError(f"{path}: 'upstream' must name another service (a folder under service/)")
    commands = {key: _command(path, key, data.get(key)) for key in ("setup", "on_backends", "stats")}
    if upstream is None and (commands["on_backends"] or commands["stats"]):
        raise ConfigError(f"{path}: 'on_backends' and 'stats' are for a proxy: set 'upstream' to the service "
                          "it fronts")
    reuse_port = data.get("reuse_port", False)
    if not isinstance(reuse_port, bool):
        raise ConfigError(f"{path}: 'reuse_port' is true or false (true: the service binds its port with "
                          "SO_REUSEPORT and finishes its requests on SIGTERM, so restarts overlap)")
    network = data.get("network")
    if network is not None and (not isinstance(network, str) or not HOST_NAME.match(network)):
        raise ConfigError(f"{path}: 'network' names a network of the environment (lowercase letters, digits and "
                          f"-), got {network!r}")
    packages = packages_of(data.get("packages", []), str(path))
    return Service(folder.name, folder, port, start, health, str(data.get("description", "")), upstream, packages,
                   **commands, reuse_port=reuse_port, network=network)


def _command(path: Path, key: str, value: object) -> str | None:
    """An optional shell command of service.toml (run in the release on a host), placeholders checked."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: '{key}' must be a shell command run in the release, e.g. "
                          "\"pip install -r requirements.txt\"")
    _placeholders(path, key, value)
    return value


def _placeholders(path: Path, key: str, command: str) -> None:
    """A service.toml command may use only the placeholders booted fills in, plain: {ip}, never {ip!r},
    {port:>99999} or {ip.real} (booted quotes each value for the shell; a format spec would undo that)."""
    allowed = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(command) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"{path}: '{key}': {exc} (the placeholders are {allowed}; write {{{{ and }}}} for "
                          "braces)") from None
    for name, spec, conv in fields:
        if name not in PLACEHOLDERS:
            raise ConfigError(f"{path}: '{key}' uses {{{name}}}: the placeholders are {allowed} (write {{{{ and "
                              "}} for braces)")
        if spec or conv:
            raise ConfigError(f"{path}: '{key}' uses {{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}"
                              f": placeholders are plain ({allowed}), without a format spec or conversion")


def get_service(services_dir: Path, name: str, services: dict[str, Service] | None = None) -> Service:
    """The service `name` (from `services` when already discovered)."""
    services = discover(services_dir) if services is None else services
    if name not in services:
        raise ConfigError(f"unknown service {name!r}: {services_dir} has {', '.join(services) or 'no services'}")
    return services[name]


def backend_addresses(upstream: Service, images: Iterable[Image], among: Collection[str],
                      address: Callable[[str, str | None], str] = lambda ip, net: ip) -> list[str]:
    """What an lb sends to: 'ip:port' of each host image that runs its upstream and is `among` the hosts
    given (listed, about to boot, or healthy: the caller says which), in the images' order, at its address
    on the upstream's network (`address`: Environment.address). The one home of that rule."""
    return [f"{address(i.ip, upstream.network)}:{upstream.port}" for i in images
            if i.service == upstream.name and i.name in among]


def listen_address(env: Environment, service: Service | None, ip: str) -> tuple[str, bool]:
    """Where a host at `ip` runs `service`: (its address on the service's network, whether the controller
    cannot reach that network); ("", False) on the first network (at `ip`)."""
    if service is None or service.network is None or service.network == env.networks[0].name:
        return "", False
    net = env.net(service.network)
    return env.address(ip, net.name), not net.gateway


def in_tree_version(service: Service) -> str:
    path = service.folder / "VERSION"
    return path.read_text().strip() if path.exists() else "0"


def check_release(service: Service, version: str | None, repo: str | None = None) -> None:
    """What package() would refuse, found without packing: a bad or missing version, a folder a release
    cannot hold (check_folder). Run before any host is touched."""
    if version is not None and not VERSION.match(version):
        raise ConfigError(f"version {version!r}: a tag or commit (letters, digits, . _ -)")
    if repo:
        try:
            _commit(service, Path(repo), version or "HEAD")
        except DeployError as exc:
            raise ConfigError(str(exc)) from None
        return
    current = in_tree_version(service)
    if version is not None and version != current:
        raise ConfigError(f"{service.name} {version}: the in-tree {service.folder} has only version {current}. "
                          f"Set {service.repo_var} to a git repository whose tags are the versions")
    check_folder(service.folder)


def package(service: Service, version: str | None, repo: str | None = None) -> Release:
    """The release of `service` at `version` (None: the in-tree version, or the repo's HEAD); `repo` is
    the value of <NAME>_REPO (Settings.repo), if set."""
    if version is not None and not VERSION.match(version):
        raise ConfigError(f"version {version!r}: a tag or commit (letters, digits, . _ -)")
    if repo:
        return _from_repo(service, Path(repo), version or "HEAD")
    current = in_tree_version(service)
    if version is not None and version != current:
        raise DeployError(f"{service.name} {version}: the in-tree {service.folder} has only version {current}. "
                          f"Set {service.repo_var} to a git repository whose tags are the versions")
    return Release(service.name, current, tar_folder(service.folder, current))


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)


def _commit(service: Service, repo: Path, version: str) -> str:
    if not (repo / ".git").exists() and _git(repo, "rev-parse", "--git-dir").returncode != 0:
        raise DeployError(f"{service.repo_var}={repo}: not a git repository")
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{version}^{{commit}}")
    if commit.returncode != 0:
        tags = _git(repo, "tag", "--list").stdout.decode().split()
        raise DeployError(f"{service.name}: version {version!r} is not a tag or commit of {repo} "
                          f"(tags: {', '.join(tags[-10:]) or 'none'})")
    return commit.stdout.decode().strip()


def _from_repo(service: Service, repo: Path, version: str) -> Release:
    commit = _commit(service, repo, version)
    sub = f"service/{service.name}"
    tree = f"{version}:{sub}" if _git(repo, "cat-file", "-e", f"{version}:{sub}/service.toml").returncode == 0 \
        else version
    label = version if version != "HEAD" else commit[:12]
    return Release(service.name, label, tar_repo(repo, tree, label, service.name))
