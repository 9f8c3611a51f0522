"""Installing a host with an OS installer onto its own disk (Debian's with booted's preseed, a RHEL-family
ISO's with booted's kickstart): the file is rendered, checked and served by booted's nginx; the lab handle's
provider boots the installer. A lifecycle operation of the lab: under its lock."""

from __future__ import annotations

from pathlib import Path

from booted.errors import ConfigError, StateError
from booted.hosts.identity import Identity, hash_password
from booted.images.golden import default_mirror
from booted.images.installer import Rendered
from booted.images.installer import publish as publish_installer
from booted.images.isoboot import boot_files
from booted.images.netboot import ensure_netboot
from booted.lab.handle import LabHandle
from booted.lab.hostimages import identity
from booted.providers.base import InstallMedia
from booted.results import HostResult
from booted.state.inventory import Image


def installer(handle: LabHandle, name: str, kind: str) -> Rendered:
    """A host's kickstart or preseed file (and its setup script), validated and served by booted's nginx."""
    return _publish(handle, handle.images([name])[0], kind)[0]


def _publish(handle: LabHandle, image: Image, kind: str) -> tuple[Rendered, Identity]:
    settings = handle.kit.settings
    pw_hash = hash_password(settings.password, settings.path) if settings.password else None
    ident = identity(settings, handle.kit.keys, handle.env, image, pw_hash, (), "")
    rendered = publish_installer(settings, kind, ident, handle.env.name, settings.mirror or default_mirror())
    handle.gateways.serve(keep=True)
    return rendered, ident


def install(handle: LabHandle, name: str, kind: str, timeout: float, iso: Path | None = None) -> HostResult:
    """Install a host with an OS installer onto its own disk: Debian's (netboot kernel and initrd from
    Debian's package, or a Debian ISO's) with booted's preseed, or a RHEL-family ISO's with booted's
    kickstart; the file comes from booted's nginx, Debian packages through the lab's apt proxy."""
    if kind not in ("preseed", "kickstart"):
        raise ConfigError(f"--installer {kind!r}: preseed (Debian 12) or kickstart (RHEL 9 family, with --iso)")
    if kind == "kickstart" and iso is None:
        raise ConfigError("--installer kickstart needs the installer ISO: --iso PATH (a Rocky or Alma 9 DVD: the "
                          "installer takes its packages from it)")
    with handle.locked("installing a host of"):
        return _install(handle, name, kind, timeout, iso)


def _install(handle: LabHandle, name: str, kind: str, timeout: float, iso: Path | None) -> HostResult:
    env, provider, lab, kit = handle.env, handle.provider, handle.lab, handle.kit
    handle.check()
    try:
        provider.check_install()
    except ConfigError as exc:
        raise ConfigError(f"{env.source}: environment {env.name!r}: {exc}") from None
    if name in handle.running():
        raise StateError(f"{name} is running: stop it first (fab image_stop {name})")
    image = handle.images([name])[0]
    settings = kit.settings
    if iso is not None:  # checked (and its kernel taken out) before anything is started
        kernel, initrd = boot_files(iso, kind, lab.host_dir(name) / "installer", settings.path)
        source = f"{iso.name}'s installer"
    try:
        provider.prepare_network(lab)
        rendered, ident = _publish(handle, image, kind)
        if iso is None:
            netboot = ensure_netboot(settings.cache_dir, kit.say, settings.path)
            kernel, initrd, source = netboot.linux, netboot.initrd, f"Debian's installer {netboot.version}"
        media = InstallMedia(kernel, initrd, command_line(handle, image, kind, rendered), iso)
        kit.say(f"installing {name} with {source}: {kind} {rendered.url}")
        return HostResult(name, *provider.install(lab, ident, media, timeout, kit.say))
    finally:
        provider.teardown(lab)
        handle.gateways.serve()


def command_line(handle: LabHandle, image: Image, kind: str, rendered: Rendered) -> str:
    """The installer's command line: where its file is, and the host's static lab address."""
    net, gw, name = handle.env.network, handle.env.gateway, image.name
    if kind == "kickstart":  # dracut: the NIC with the host's MAC is named "lab" and gets its address
        return (f"inst.ks={rendered.url} inst.repo=cdrom inst.text ifname=lab:{image.mac} "
                f"ip={image.ip}::{gw}:{net.netmask}:{name}:lab:none nameserver={gw} console=ttyS0")
    return (f"auto=true priority=critical url={rendered.url} interface=auto netcfg/disable_autoconfig=true "
            f"netcfg/get_ipaddress={image.ip} netcfg/get_netmask={net.netmask} netcfg/get_gateway={gw} "
            f"netcfg/get_nameservers={gw} netcfg/confirm_static=true hostname={name} domain=lab "
            "locale=en_US.UTF-8 keymap=us console=ttyS0 DEBIAN_FRONTEND=text")
