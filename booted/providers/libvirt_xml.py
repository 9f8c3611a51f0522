"""The XML booted hands libvirt (issue 12's provider, built on the bootable disk and seed disk): a lab
network (over the bridge that carries the lab network; here the lab bridge, whose address is the gateway,
where booted's nginx and apt proxy listen), a storage pool booted owns, and a host's domain (virtio disk +
seed disk, its MAC on the lab network, the serial console logged to a file). A host's copy-on-write volume
is made with `vol-create-as --backing-vol` (providers/libvirt_store.py), not from XML. Built with
ElementTree, so every name and path is escaped; the names themselves are validated before they get here
(environments.py). Checked against libvirt's own schemas and its test driver in tests/test_libvirt_xml.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


def _serialized(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _element(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    node = ET.SubElement(parent, tag, attrs)
    if text is not None:
        node.text = text
    return node


def network_xml(name: str, bridge: str) -> str:
    """A lab network over an existing bridge (libvirt's "bridged network": no dnsmasq, no firewall rules):
    on this machine the lab bridge with the gateway address, on another machine the bridge there that
    carries the lab network. booted hands out the addresses."""
    root = ET.Element("network")
    _element(root, "name", name)
    _element(root, "forward", mode="bridge")
    _element(root, "bridge", name=bridge)
    return _serialized(root)


def pool_xml(name: str, path: Path) -> str:
    """A directory storage pool booted owns (the golden disk and the hosts' volumes)."""
    root = ET.Element("pool", type="dir")
    _element(root, "name", name)
    target = _element(root, "target")
    _element(target, "path", str(path))
    return _serialized(root)


@dataclass(frozen=True)
class DomainSpec:
    """What a host's domain needs."""

    name: str  # booted-<lab id>-<host>
    uuid: str  # fixed per host, so defining it again updates the domain
    memory_mb: int
    cpus: int
    disk: Path  # its qcow2 volume
    seed: Path  # its seed disk (raw ext2)
    network: str  # the lab's libvirt network
    mac: str
    console: Path  # the serial console's log file
    kind: str = "qemu"  # kvm when it works, qemu (TCG) otherwise


def domain_xml(spec: DomainSpec) -> str:
    if spec.kind not in ("kvm", "qemu"):
        raise ValueError(f"domain type {spec.kind!r}: kvm or qemu")
    root = ET.Element("domain", type=spec.kind)
    _element(root, "name", spec.name)
    _element(root, "uuid", spec.uuid)
    _element(root, "memory", str(spec.memory_mb), unit="MiB")
    _element(root, "vcpu", str(spec.cpus))
    os_ = _element(root, "os")
    _element(os_, "type", "hvm", arch="x86_64", machine="pc")
    _element(os_, "boot", dev="hd")
    features = _element(root, "features")
    _element(features, "acpi")
    _element(root, "on_poweroff", "destroy")
    _element(root, "on_reboot", "destroy")
    _element(root, "on_crash", "destroy")
    devices = _element(root, "devices")
    for source, target, fmt, readonly in ((spec.disk, "vda", "qcow2", False), (spec.seed, "vdb", "raw", True)):
        disk = _element(devices, "disk", type="file", device="disk")
        _element(disk, "driver", name="qemu", type=fmt, cache="unsafe" if not readonly else "none")
        _element(disk, "source", file=str(source))
        _element(disk, "target", dev=target, bus="virtio")
        if readonly:
            _element(disk, "readonly")
    nic = _element(devices, "interface", type="network")
    _element(nic, "source", network=spec.network)
    _element(nic, "mac", address=spec.mac)
    _element(nic, "model", type="virtio")
    serial = _element(devices, "serial", type="file")
    _element(serial, "source", path=str(spec.console), append="on")
    _element(serial, "target", port="0")
    console = _element(devices, "console", type="file")
    _element(console, "source", path=str(spec.console), append="on")
    _element(console, "target", type="serial", port="0")
    rng = _element(devices, "rng", model="virtio")
    _element(rng, "backend", "/dev/urandom", model="random")
    return _serialized(root)
