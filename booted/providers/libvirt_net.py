"""The lab network of a libvirt lab: on this machine the lab bridge with the gateway (where booted's nginx
and apt proxy listen) and the uplink to other machines in it; on each hypervisor a libvirt network per lab
over a bridge (libvirt's "bridged network": no dnsmasq, no firewall rules): here the lab bridge, on another
machine the bridge there that the user connects to it."""

from __future__ import annotations

from pathlib import Path

from booted.errors import ProviderError
from booted.providers.bridge import ensure_bridge
from booted.providers.hypervisors import Hypervisor
from booted.providers.lab import Lab
from booted.providers.libvirt_options import libvirt_of
from booted.providers.libvirt_xml import network_xml
from booted.providers.links import ip_batch, link_exists
from booted.providers.virsh import MISSING, Virsh
from booted.providers.vm import lab_net_name


def ensure_lab_bridge(lab: Lab) -> None:
    """The lab bridge with the gateway, and the environment's uplink (to the other hypervisors) in it."""
    ensure_bridge(lab)
    uplink = libvirt_of(lab).uplink
    if not uplink:
        return
    if not link_exists(uplink):
        raise ProviderError(f"environment {lab.env!r}: uplink {uplink!r} is not an interface on this "
                            "machine (it connects the lab bridge to the other hypervisors' bridges)")
    err = ip_batch([f"link set {uplink} master {lab.bridge}", f"link set {uplink} up"])
    if err.strip():
        raise ProviderError(f"could not put uplink {uplink} into {lab.bridge}: {err.strip()}")


def ensure_lab_network(virsh: Virsh, lab: Lab, hypervisor: Hypervisor, definition: Path) -> None:
    """The lab's libvirt network on the hypervisor, defined (`definition` a copy of its XML) and active. A
    bridge missing there fails here, with libvirt's reason."""
    name = lab_net_name(lab)
    if name not in virsh.run("net-list", "--all", "--name").split():
        virsh.define("net-define", network_xml(name, hypervisor.bridge or lab.bridge), definition)
    if name not in virsh.run("net-list", "--name").split():
        virsh.run("net-start", name)


def remove_lab_network(virsh: Virsh, lab: Lab) -> None:
    name = lab_net_name(lab)
    virsh.run("net-destroy", name, ok=MISSING)
    virsh.run("net-undefine", name, ok=MISSING)
