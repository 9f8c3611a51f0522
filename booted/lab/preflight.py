"""What a start checks before it touches any host (stops, boots or makes one): the services its hosts run
(service.toml, the version, the folder a release is packed from), host images made on another network, and
this machine's networks. Bad input is a ConfigError (exit 2) here, never a host stopped and left down."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from booted.environments import Environment, HostSpec
from booted.environments.machine import check_machine, claims
from booted.errors import ConfigError
from booted.kit import Kit
from booted.remote.services import Service, check_release, get_service
from booted.state.inventory import Image


def preflight(kit: Kit, services: Mapping[str, Service], env: Environment, bridges: list[str],
              specs: Iterable[HostSpec]) -> None:
    """Raise for the first mistake in what starting `specs` of `env` (on its bridge) needs."""
    settings = kit.settings
    checked: set[tuple[str, str | None]] = set()
    for spec in specs:
        check_networks(env, spec, services)
        if spec.service and (spec.service, spec.version) not in checked:
            checked.add((spec.service, spec.version))
            service = get_service(settings.services_dir, spec.service, dict(services))
            check_release(service, spec.version, settings.repo(service.repo_var))
    check_images(env, kit.inventory.images(env.name))
    check_machine(env, bridges, claims(env, settings.which("ip")))


def check_networks(env: Environment, spec: HostSpec, services: Mapping[str, Service]) -> None:
    """A host's service listens on a network the host is on, and an lb reaches its upstream on one."""
    service = services.get(spec.service or "")
    if service is None:
        return
    mine = [n.name for n in env.host_nets(spec.name)]
    upstream = services.get(service.upstream or "")
    for svc, why in ((service, "listens on"), (upstream, "is reached on")):
        if svc is None or svc.network is None or svc.network in mine:
            continue
        if svc.network not in [n.name for n in env.networks]:
            raise ConfigError(f"{svc.folder / 'service.toml'}: service {svc.name!r} {why} network {svc.network!r}, "
                              f"which environment {env.name!r} does not have (networks: "
                              f"{', '.join(n.name for n in env.networks)})")
        raise ConfigError(f"{spec.where or env.source}: environment {env.name!r}: host {spec.name!r} runs "
                          f"{service.name!r}, and service {svc.name!r} {why} network {svc.network!r} "
                          f"({svc.folder / 'service.toml'}): add {svc.network!r} to the host's 'networks' "
                          f"(it is on {', '.join(mine)})")


def check_images(env: Environment, images: list[Image]) -> None:
    """Host images keep the address they were made with: after the environment's network changed, they
    are deleted (and made again on the new network) before the lab starts."""
    moved = [i for i in images if ipaddress.IPv4Address(i.ip) not in env.network]
    if moved:
        names = ",".join(i.name for i in moved)
        raise ConfigError(f"{env.where_network or env.source}: environment {env.name!r}: network is now "
                          f"{env.network}, but host image(s) {', '.join(f'{i.name} ({i.ip})' for i in moved)} were "
                          f"made on the old one and keep their address; delete them first: fab image_del {names} "
                          "(they are made again on the new network)")
