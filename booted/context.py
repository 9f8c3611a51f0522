"""The run's context: settings, state, keys, the environments and services, and one lab handle per
environment. Made by the task layer (or a test, with stand-in providers and remote) and passed down."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from booted.config import Settings
from booted.discovery import bootlog, nginx, watch
from booted.discovery.aptproxy import AptProxy
from booted.environments import Environment, load_environments, select_environment
from booted.errors import ConfigError, ProviderError
from booted.hosts.access import Credentials, Entry
from booted.hosts.identity import Keys
from booted.images.golden import GoldenImage, ensure_golden
from booted.lab.handle import LabHandle
from booted.providers import Provider, provider_class
from booted.remote import releases
from booted.remote.fanout import Fleet, Target
from booted.remote.services import Service, discover, get_service
from booted.results import HostResult
from booted.state.inventory import Image, Inventory
from booted.state.locks import Locks


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Booted:
    """One run's context; no globals. `providers` (name -> factory) and `remote` let a test stand in for
    the process boundaries (a provider that makes no hosts, a Fleet that opens no SSH connection)."""

    settings: Settings
    say: Callable[[str], None] = field(default=_stderr)
    providers: Mapping[str, Callable[[Settings], Provider]] | None = None
    remote: Callable[[Booted], Fleet] | None = None
    _labs: dict[str, LabHandle] = field(default_factory=dict, repr=False)

    @cached_property
    def inventory(self) -> Inventory:
        return Inventory(self.settings.db_path)

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.settings.state_dir / "keys", self.settings.path)

    @cached_property
    def locks(self) -> Locks:
        return Locks(self.settings.state_dir / "locks", self.say, self.settings.lock_wait)

    @cached_property
    def environments(self) -> dict[str, Environment]:
        return load_environments(self.settings.environments_file)

    @cached_property
    def services(self) -> dict[str, Service]:
        """Every service folder, each service.toml parsed once per run."""
        return discover(self.settings.services_dir)

    def environment(self, name: str | None = None) -> Environment:
        """--env NAME, else BOOTED_ENV, else the file's only environment."""
        return select_environment(self.environments, name or self.settings.env_name,
                                  self.settings.environments_file)

    def service(self, name: str) -> Service:
        return get_service(self.settings.services_dir, name, self.services)

    # lab handles -----------------------------------------------------------------------------------
    def lab(self, env: str | None = None) -> LabHandle:
        """The handle of an environment's lab (one per run and environment)."""
        environment = self.environment(env)
        if environment.name not in self._labs:
            cls = (self.providers or {}).get(environment.provider) or provider_class(environment.provider)
            self._labs[environment.name] = LabHandle(self, environment, cls)
        return self._labs[environment.name]

    def labs(self) -> list[LabHandle]:
        return [self.lab(name) for name in self.environments]

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
                 "hypervisor": i.hypervisor or None}
                for i in images]

    # across labs -----------------------------------------------------------------------------------
    def target(self, image: Image) -> Target:
        """A fan-out target for a host image, with its forwarded ports if it has any."""
        fwd = self.lab(image.env).endpoints(image.name) if image.env in self.environments else {}
        return Target(image.name, image.ip, tuple((g, a, p) for g, (a, p) in sorted(fwd.items())))

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
                entries.append(Entry(t.name, addr, port, t.ip, image.env, image.role, image.service))
        self.keys.ensure_lab_key()
        return entries, Credentials(self.settings.user, self.keys.lab_key, self.keys.known_hosts)

    def serve_gateways(self, keep: bool = False) -> str:
        """booted's nginx and apt proxy on the gateways of every lab that is up; both stop when none is
        (nginx stays on loopback with `keep`). Returns what nginx did."""
        with self.locks.nginx():
            addresses = {a for h in self.labs() for a in h.listen_addresses()}
            state = nginx.serve(self.settings, addresses, keep)
            listen = sorted(addresses & (nginx.local_addresses() | {"127.0.0.1"}))
            apt = AptProxy(self.settings)
            if listen:
                try:  # optional: without it the lab still boots and serves, it just cannot install packages
                    said = apt.ensure(listen)
                except ProviderError as exc:
                    said = f"failed: {exc}"
                if not said.startswith(("running", "started")):
                    self.say(f"apt proxy {said}")
            else:
                apt.stop()
                releases.discard(self.settings)
            return state

    def gateways_down(self) -> list[str]:
        """Warnings for booted's parts (nginx, apt proxy) that are down while a lab is up."""
        return watch.down(self.settings, {a for h in self.labs() for a in h.listen_addresses()})

    def reload_environments(self) -> None:
        """Read environments.py again (the monitor follows the user's edits); raises ConfigError and keeps
        the environments it had when the file does not validate. Lab handles are made anew."""
        environments = load_environments(self.settings.environments_file)
        self.__dict__["environments"] = environments  # replaces the cached_property's value
        self._labs.clear()

    def restart_nginx(self) -> tuple[str, Path | None]:
        """Take in what the boot log has, restart nginx with a new boot log; the old one is kept."""
        bootlog.read_new(self.inventory, self.settings.boot_log)
        with self.locks.nginx():
            server = nginx.Nginx(self.settings)
            server.stop()
            kept = server.rotate_log()
            return nginx.serve(self.settings, {a for h in self.labs() for a in h.listen_addresses()}, True), kept

    def pin_host_keys(self) -> None:
        """known_hosts: every host key at its lab IP, and at [addr]:port where a host's SSH is forwarded."""
        pins = []
        for image in self.inventory.images():
            pins.append((image.ip, image.hostkey))
            addr, port = self.target(image).endpoint(22)
            if (addr, port) != (image.ip, 22):
                pins.append((f"[{addr}]:{port}", image.hostkey))
        self.keys.write_known_hosts(pins)

    def forget_image(self, name: str) -> None:
        """Drop a deleted image's record, host key and pins: its IP and MAC go back to the pool."""
        self.inventory.release_image(name)
        self.keys.drop_host_key(name)
        self.pin_host_keys()

    def delete_image(self, name: str, env: str | None = None) -> HostResult:
        """Stop and delete a host image (also one whose environment left environments.py: then only its
        state and files go)."""
        image = self.inventory.image(name)
        if image is not None and image.env not in self.environments:
            shutil.rmtree(self.settings.state_dir / "labs" / image.env / "hosts" / name, ignore_errors=True)
            self.forget_image(name)
            return HostResult(name, True, f"deleted; {image.ip} and {image.mac} released")
        return self.lab_of(name, env).delete(name)

    def golden(self) -> GoldenImage:
        return ensure_golden(self.settings, self.say)

    def fleet(self) -> Fleet:
        if self.remote is not None:
            return self.remote(self)
        self.keys.ensure_lab_key()
        return Fleet(self.keys.lab_key, self.keys.known_hosts, self.settings.user, self.settings.parallel)

    def close(self) -> None:
        if "inventory" in self.__dict__:
            self.inventory.close()

