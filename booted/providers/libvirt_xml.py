"""The XML booted hands libvirt (issue 12's provider, built on the bootable disk and seed disk): a lab
network (over the bridge that carries the lab network; here the lab bridge, whose address is the gateway,
where booted's nginx and apt proxy listen),
a storage pool booted owns, a host's copy-on-write volume backed by the golden disk, and its domain
(virtio disk + seed disk, its MAC on the lab network, the serial console logged to a file). Built with
ElementTree, so every name and path is escaped; the names themselves are validated before they get here
(environments.py). Checked against libvirt's own schemas and its test driver in tests/test_libvirt_xml.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


def _xml(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    node = ET.SubElement(parent, tag, attrs)
    if text is not None:
        node.text = text
    return node


def network_xml(name: str, bridge: str) -> str:
    """A lab network over an existing bridge (libvirt's "bridged network": no dnsmasq, no firewall rules):
    on this machine the lab bridge with the gateway address, on another machine the bridge there that
    carries the lab network. booted hands out the addresses."""
    root = ET.Element("network")
    _sub(root, "name", name)
    _sub(root, "forward", mode="bridge")
    _sub(root, "bridge", name=bridge)
    return _xml(root)


def pool_xml(name: str, path: Path) -> str:
    """A directory storage pool booted owns (the golden disk and the hosts' volumes)."""
    root = ET.Element("pool", type="dir")
    _sub(root, "name", name)
    target = _sub(root, "target")
    _sub(target, "path", str(path))
    return _xml(root)


def volume_xml(name: str, capacity: int, backing: Path, backing_format: str) -> str:
    """A host's qcow2 volume, copy-on-write over the golden disk (`backing`)."""
    root = ET.Element("volume")
    _sub(root, "name", name)
    _sub(root, "capacity", str(capacity), unit="bytes")
    target = _sub(root, "target")
    _sub(target, "format", type="qcow2")
    store = _sub(root, "backingStore")
    _sub(store, "path", str(backing))
    _sub(store, "format", type=backing_format)
    return _xml(root)


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
    _sub(root, "name", spec.name)
    _sub(root, "uuid", spec.uuid)
    _sub(root, "memory", str(spec.memory_mb), unit="MiB")
    _sub(root, "vcpu", str(spec.cpus))
    os_ = _sub(root, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "destroy")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    for source, target, fmt, readonly in ((spec.disk, "vda", "qcow2", False), (spec.seed, "vdb", "raw", True)):
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type=fmt, cache="unsafe" if not readonly else "none")
        _sub(disk, "source", file=str(source))
        _sub(disk, "target", dev=target, bus="virtio")
        if readonly:
            _sub(disk, "readonly")
    nic = _sub(devices, "interface", type="network")
    _sub(nic, "source", network=spec.network)
    _sub(nic, "mac", address=spec.mac)
    _sub(nic, "model", type="virtio")
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(spec.console), append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=str(spec.console), append="on")
    _sub(console, "target", type="serial", port="0")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    return _xml(root)
