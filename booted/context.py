"""The run's context: the kit (settings, state, keys, locks, output), the environments and services, one
lab handle per environment, and what is handed down to the layers below (the runs, remote work with its
target resolver, booted's gateway work). Made by the task layer and the monitor only (or a test, with
stand-in providers and fleet) and never passed below them: lower layers get the parts they need."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from booted.config import Settings
from booted.environments import Environment, load_environments, select_environment
from booted.errors import ConfigError
from booted.hosts.access import Credentials, Entry
from booted.hosts.identity import Keys
from booted.kit import Kit, to_stderr
from booted.remote.fanout import Fleet, Target
from booted.remote.reach import Remote
from booted.remote.services import Service, discover, get_service
from booted.results import HostResult
from booted.state.inventory import Image, Inventory
from booted.state.locks import Locks

if TYPE_CHECKING:  # imported where used: a task imports the parts of the engine it runs, no more
    from booted.discovery.gateways import Gateways
    from booted.images.golden import GoldenImage
    from booted.lab.handle import LabHandle
    from booted.providers import Provider
    from booted.runs import Runs
    from booted.snapshots import Snapshots


class Booted:
    """One run's context; no globals. `providers` (name -> factory) and `fleets` let a test stand in for
    the process boundaries (a provider that makes no hosts, a Fleet that opens no SSH connection)."""

    def __init__(self, settings: Settings, say: Callable[[str], None] = to_stderr,
                 providers: Mapping[str, Callable[[Settings], Provider]] | None = None,
                 fleets: Callable[[Booted], Fleet] | None = None) -> None:
        self.kit = Kit(settings, say)
        self.providers, self.fleets = providers, fleets
        self._labs: dict[str, LabHandle] = {}
        self.remote = Remote(self.kit, self.services_view(), self, self.fleet)

    @cached_property
    def gateways(self) -> Gateways:
        """booted's gateway work (nginx, apt proxy, boot log), made on first use (hosts_list needs none)."""
        from booted.discovery.gateways import Gateways
        return Gateways(self.kit, self.labs)

    # the kit, as the tasks and the monitor read it ------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self.kit.settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        self.kit.settings = value

    @property
    def say(self) -> Callable[[str], None]:
        return self.kit.say

    @property
    def inventory(self) -> Inventory:
        return self.kit.inventory

    @property
    def keys(self) -> Keys:
        return self.kit.keys

    @property
    def locks(self) -> Locks:
        return self.kit.locks

    @cached_property
    def environments(self) -> dict[str, Environment]:
        return load_environments(self.settings.environments_file, self.settings.load_timeout)

    @cached_property
    def services(self) -> dict[str, Service]:
        """Every service folder, each service.toml parsed once per run."""
        return discover(self.settings.services_dir)

    def services_view(self) -> Mapping[str, Service]:
        """The service definitions, read on first use (a task that needs none never parses service.toml)."""
        return _Lazy(lambda: self.services)
    def environment(self, name: str | None = None) -> Environment:
        """--env NAME, else BOOTED_ENV, else the file's only environment."""
        return select_environment(self.environments, name or self.settings.env_name,
                                  self.settings.environments_file)

    def service(self, name: str) -> Service:
        return get_service(self.settings.services_dir, name, self.services)

    # lab handles -----------------------------------------------------------------------------------
    def lab(self, env: str | None = None) -> LabHandle:
        """The handle of an environment's lab (one per run and environment)."""
        from booted.lab.handle import LabHandle
        from booted.providers import provider_class
        environment = self.environment(env)
        if environment.name not in self._labs:
            cls = (self.providers or {}).get(environment.provider) or provider_class(environment.provider)
            self._labs[environment.name] = LabHandle(self.kit, environment, cls, self.services_view(),
                                                     self.gateways)
        return self._labs[environment.name]

    def labs(self) -> list[LabHandle]:
        return [self.lab(name) for name in self.environments]

    def runs(self, env: str | None = None) -> Runs:
        """Start runs of an environment: boot its hosts, then make them serve (booted/runs.py)."""
        from booted.runs import Runs
        return Runs(self.lab(env), self.remote)

    def snapshots(self, env: str | None = None) -> Snapshots:
        """The snapshots of an environment (booted/snapshots/)."""
        from booted.snapshots import Snapshots
        return Snapshots(self.lab(env), self.remote)

    def runs_of(self, host: str, env: str | None = None) -> Runs:
        from booted.runs import Runs
        return Runs(self.lab_of(host, env), self.remote)

    def status(self, env: str | None = None, probe: str = "auto") -> list[dict[str, object]]:
        """Desired (environments.py) vs actual (provider, host list, deployments), one dict per host; `probe`:
        how a running host's SSH is checked (lab/status.py PROBES)."""
        from booted.lab.status import status
        with self.fleet() as fleet:
            return status(self.lab(env), self.inventory, fleet, probe)

    def lab_of(self, host: str, env: str | None = None) -> LabHandle:
        """The lab a host belongs to: its image's environment, else the one environments.py defines it in."""
        image = self.inventory.image(host)
        if image is not None:
            if image.env not in self.environments:
                raise ConfigError(f"host image {host!r} belongs to environment {image.env!r}, which "
                                  f"{self.settings.environments_file} no longer defines; delete it with "
                                  f"'fab image_del {host}'")
            if env is not None and env != image.env:  # --env means what it says
                raise ConfigError(f"host image {host!r} belongs to environment {image.env!r}, not {env!r} (--env)")
            return self.lab(image.env)
        if env or self.settings.env_name or len(self.environments) == 1:
            handle = self.lab(env)
            handle.env.host(host)  # raises with the list of hosts
            return handle
        owners = [e for e in self.environments.values() if host in {h.name for h in e.hosts}]
        if len(owners) != 1:
            raise ConfigError(f"host {host!r} is defined in {len(owners)} environments: pick one with --env NAME")
        return self.lab(owners[0].name)

    def group(self, names: list[str] | None, env: str | None) -> list[tuple[LabHandle, list[str]]]:
        """Host names (or, with none, every host of the environment) grouped by their lab."""
        if not names:
            handle = self.lab(env)
            return [(handle, [h.name for h in handle.env.hosts])]
        groups: dict[str, tuple[LabHandle, list[str]]] = {}
        for name in names:
            handle = self.lab_of(name, env)
            groups.setdefault(handle.env.name, (handle, []))[1].append(name)
        return list(groups.values())

    def image_rows(self, env: str | None = None) -> list[dict[str, object]]:
        """Host images with their identity and whether they run now (image_list: table or JSON)."""
        images = self.inventory.images(env)
        running = {n for e in {i.env for i in images} & set(self.environments) for n in self.lab(e).running()}
        return [{"name": i.name, "env": i.env, "provider": i.provider, "ip": i.ip, "mac": i.mac, "role": i.role,
                 "service": i.service, "version": i.version, "running": i.name in running, "created": i.created,
                 "networks": self.networks_of(i),
                 "hypervisor": i.hypervisor or None}
                for i in images]

    def networks_of(self, image: Image) -> dict[str, str]:
        """A host image's address on each network it is on (an environment no longer in the file: its one)."""
        env = self.environments.get(image.env)
        if env is None:
            return {image.env: image.ip}
        return {net.name: env.address(image.ip, net.name) for net in env.host_nets(image.name)}

    # across labs: the target resolver remote work is handed ------------------------------------------
    def target(self, image: Image) -> Target:
        """A fan-out target for a host image, with its forwarded ports if it has any."""
        return self.lab(image.env).target(image) if image.env in self.environments else Target(image.name, image.ip)

    def targets(self, names: list[str] | None = None, env: str | None = None) -> list[Target]:
        """Targets for listed hosts (all, or `names`; only `env`'s with env), in host-list order."""
        images = {i.name: i for i in self.inventory.images()}
        out = []
        for host in self.inventory.hosts():
            if (names is None or host.name in names) and (env is None or getattr(images.get(host.name), "env",
                                                                                 None) == env):
                image = images.get(host.name)
                out.append(self.target(image) if image and image.ip == host.ip else Target(host.name, host.ip))
        return out

    def address(self, env: str, ip: str, network: str | None) -> str:
        """A host's address on a network of its environment (an environment no longer in the file: its IP)."""
        return self.environments[env].address(ip, network) if env in self.environments else ip

    def gateway(self, host: str) -> str:
        """The lab gateway a host reaches booted's nginx on."""
        image = self.inventory.image(host)
        if image is None:
            raise ConfigError(f"{host!r} has no host image (fab image_list)")
        return str(self.environment(image.env).gateway)

    def listed_targets(self, names: list[str] | None, env: str | None) -> list[Target]:
        """hosts_run's selection: listed hosts, narrowed; a name that is not listed is a mistake."""
        targets = self.targets(names, env)
        missing = set(names or ()) - {t.name for t in targets}
        if missing:
            raise ConfigError(f"not in the current host list: {', '.join(sorted(missing))} (see fab hosts_list)")
        return targets

    def access(self, env: str | None = None) -> tuple[list[Entry], Credentials]:
        """How tools reach the listed hosts (of `env`): address, port, env, role, service; key and pins."""
        if env is not None:
            self.environment(env)  # validates the name
        images = {i.name: i for i in self.inventory.images()}
        entries = []
        for t in self.targets(env=env):
            image = images.get(t.name)
            if image is not None:
                addr, port = t.endpoint(22)
                entries.append(Entry(t.name, addr, port, t.ip, image.env, image.role, image.service,
                                     self.networks_of(image)))
        self.keys.ensure_lab_key()
        return entries, Credentials(self.settings.user, self.keys.lab_key, self.keys.known_hosts)

    # booted's gateway work (discovery/gateways.py), as the tasks and the monitor call it -------------------
    def serve_gateways(self, keep: bool = False) -> str:
        return self.gateways.serve(keep)

    def gateways_down(self) -> list[str]:
        return self.gateways.down()

    def restart_nginx(self) -> tuple[str, Path | None]:
        return self.gateways.restart_nginx()

    def reload_environments(self) -> None:
        """Read environments.py again (the monitor follows the user's edits); raises ConfigError and keeps
        the environments it had when the file does not validate. Lab handles are made anew."""
        environments = load_environments(self.settings.environments_file, self.settings.load_timeout)
        self.__dict__["environments"] = environments  # replaces the cached_property's value
        self._labs.clear()

    def delete_image(self, name: str, env: str | None = None) -> HostResult:
        """Stop and delete a host image (also one whose environment left environments.py: then only its
        state and files go)."""
        image = self.inventory.image(name)
        if image is not None and image.env not in self.environments:
            shutil.rmtree(self.settings.state_dir / "labs" / image.env / "hosts" / name, ignore_errors=True)
            self.gateways.forget_image(name)
            return HostResult(name, True, f"deleted; {image.ip} and {image.mac} released")
        from booted.snapshots import Snapshots
        handle = self.lab_of(name, env)
        result = handle.delete(name)
        if result.ok and image is not None and (held := Snapshots(handle, self.remote).forget_host(name)):
            result = HostResult(name, True, f"{result.detail}; its state left {held} snapshot(s)")
        return result

    def golden(self, refresh: bool = False) -> GoldenImage:
        """The golden image (built when missing, or when Debian's suites moved on: checked at most daily;
        `refresh`: a new generation now)."""
        from booted.images.golden import ensure_golden
        return ensure_golden(self.settings, self.say, refresh=refresh)

    def fleet(self) -> Fleet:
        if self.fleets is not None:
            return self.fleets(self)
        self.keys.ensure_lab_key()
        return Fleet(self.keys.lab_key, self.keys.known_hosts, self.settings.user, self.settings.parallel)

    def close(self) -> None:
        self.kit.close()


class _Lazy(Mapping[str, Service]):
    """A mapping read from `load` on first use."""

    def __init__(self, load: Callable[[], Mapping[str, Service]]) -> None:
        self._load = load

    def __getitem__(self, key: str) -> Service:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

