"""Host images: a lab host's record (name, role, service, version, size) with its leased identity (IP,
MAC, host key), and the Identity a provider hands the host at boot."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from booted.config import Settings
from booted.environments import Environment, HostSpec
from booted.errors import StateError
from booted.hosts.identity import Identity, Keys, Nic
from booted.remote.fanout import Target
from booted.remote.services import Service, listen_address
from booted.state.inventory import Image, Inventory, mac_for


def make_host_keys(inventory: Inventory, keys: Keys, names: list[str]) -> None:
    """The host keys of the hosts among `names` that have no image yet, made side by side before their images
    are leased one by one: an ssh-keygen each, mostly waiting for a core on a loaded machine (40 keys at load
    110-123: 3.9 and 7.3 s one after another, 2.2 and 0.8 s eight at once)."""
    new = [n for n in names if inventory.image(n) is None and not keys.host_key(n).exists()]
    if len(new) > 1:
        with ThreadPoolExecutor(max_workers=min(8, len(new))) as pool:
            list(pool.map(keys.ensure_host_key, new))


def ensure_image(inventory: Inventory, keys: Keys, env: Environment, spec: HostSpec) -> Image:
    """The host image for `spec`, leased on first use (its host key made and pinned before it boots);
    follows role/service/version/size changes in environments.py. The identity never changes."""
    image = inventory.image(spec.name)
    if image is None:
        hostkey = keys.ensure_host_key(spec.name)
        return inventory.lease(name=spec.name, env=env.name, provider=env.provider, network=env.network,
                               role=spec.role, service=spec.service, version=spec.version, hostkey=hostkey,
                               memory=spec.memory, cpus=spec.cpus)
    if image.env != env.name:
        raise StateError(f"host image {spec.name!r} belongs to environment {image.env!r}, not {env.name!r}: "
                         "host names are unique per state directory; rename one of them")
    if (image.provider, image.role, image.service, image.version, image.memory, image.cpus) != (
            env.provider, spec.role, spec.service, spec.version, spec.memory, spec.cpus):
        inventory.update_spec(spec.name, env.provider, spec.role, spec.service, spec.version, spec.memory,
                              spec.cpus)
        image = inventory.image(spec.name)
        assert image is not None
    return image


def identity(settings: Settings, keys: Keys, env: Environment, image: Image, pw_hash: str | None,
             ports: tuple[int, ...], boot_token: str, serve: str = "", release: str = "") -> Identity:
    """What the host is told at boot (the same for every provider); `serve`/`release`: its service to
    start at boot (remote/firstboot.py). A NIC on each of its networks, the first's eth0."""
    nets = env.host_nets(image.name)
    extra = tuple(Nic(net.name, f"eth{k}", ip, net.cidr.prefixlen, mac_for(ipaddress.IPv4Address(ip)))
                  for k, net in enumerate(nets[1:], 1) for ip in [env.address(image.ip, net.name)])
    return Identity(
        name=image.name, ip=image.ip, prefix=env.network.prefixlen, gateway=str(env.gateway), mac=image.mac,
        boot_url=f"http://{env.gateway}:{settings.http_port}/booted", login_user=settings.user, pw_hash=pw_hash,
        host_key=keys.host_key(image.name), authorized_key=keys.ensure_lab_key(), memory=image.memory,
        cpus=image.cpus, ports=ports, boot_token=boot_token,
        apt_proxy=f"http://{env.gateway}:{settings.apt_port}", serve=serve, release=release,
        network=env.networks[0].name, extra=extra)


def host_target(env: Environment, services: Mapping[str, Service], image: Image,
                fwd: dict[int, tuple[str, int]]) -> Target:
    """A fan-out target for a host image of `env`: its forwarded ports, and where its service listens when
    that is on another network than the first."""
    listen, inside = listen_address(env, services.get(image.service or ""), image.ip)
    return Target(image.name, image.ip, tuple((g, a, p) for g, (a, p) in sorted(fwd.items())), listen, inside)
