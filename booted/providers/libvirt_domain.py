"""A lab host's libvirt domain: defined again at every start (memory, CPUs and MAC follow environments.py),
started as kvm when the hypervisor offers it and KVM has not failed there, else as qemu (TCG); stopped with
the ACPI power button, then destroyed.

Whether KVM really works on a hypervisor is learned from the first kvm domain started there (what
qemuctl.detect_accel's probe is to the qemu provider): `start` refuses it, or it pauses ("KVM internal
error": here in the boot loader, about 5 s in) or ends before its guest writes to the serial console. Then
KVM is remembered as failed and the domain started again as qemu; once a guest wrote to its console (or ran
for SETTLE_SECONDS), KVM is remembered as working and later kvm domains start without this watch. It
decides the accelerator; the wait for the boot is discovery's.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from booted.hosts.identity import Identity
from booted.providers.lab import Lab
from booted.providers.libvirt_store import POOL, console_size, volume_names
from booted.providers.libvirt_xml import DomainSpec, domain_xml
from booted.providers.virsh import MISSING, Virsh, VirshError
from booted.providers.vm import lab_net_name, vm_name

SETTLE_SECONDS = 15.0
SHUTDOWN_SECONDS = 6.0


@dataclass(frozen=True)
class KvmRecord:
    """What this state directory learned of KVM on one hypervisor: `failed` exists once a kvm domain failed
    there (its domains run as qemu from then on), `works` once the guest of one wrote to its console."""

    failed: Path
    works: Path


def domain_type(virsh: Virsh, kvm: KvmRecord) -> str:
    """kvm if the hypervisor offers it and it has not failed there before, else qemu (TCG)."""
    if kvm.failed.exists():
        return "qemu"
    caps = virsh.xml("capabilities")
    return "kvm" if caps.find("guest/arch/domain[@type='kvm']") is not None else "qemu"


def host_domain(lab: Lab, host: Identity, pool_dir: Path, kind: str, disk: str = "") -> DomainSpec:
    """The domain of a host whose volumes are in `pool_dir` (on its hypervisor), of type `kind`; its disk the
    volume `disk` (default `<vm>.qcow2`)."""
    vm = vm_name(lab, host.name)
    default, seed, console = volume_names(vm)
    return DomainSpec(vm, str(uuid.uuid5(uuid.NAMESPACE_URL, f"booted:{lab.lab_id}:{host.name}")), host.memory,
                      host.cpus, pool_dir / (disk or default), pool_dir / seed, lab_net_name(lab), host.mac,
                      pool_dir / console, kind)


def start_domain(virsh: Virsh, spec: DomainSpec, definition: Path, kvm: KvmRecord) -> str:
    """Define the domain (`definition`: where its XML is written for libvirt) and start it; kvm that fails is
    remembered in `kvm` and the domain started again as qemu. Returns the type it runs as."""
    virsh.define("define", domain_xml(spec), definition)
    written = console_size(virsh, spec.name)
    try:
        virsh.run("start", spec.name)
    except VirshError as exc:
        if spec.kind != "kvm" or "kvm" not in str(exc).lower():
            raise
        kvm.failed.write_text(f"{time.strftime('%F %T')}: {exc}\n")
        return start_domain(virsh, replace(spec, kind="qemu"), definition, kvm)
    if spec.kind == "kvm" and not kvm.works.exists():
        state = _kvm_failure(virsh, spec.name, written)
        if state:
            kvm.failed.write_text(f"{time.strftime('%F %T')}: a kvm domain went {state}\n")
            virsh.run("destroy", spec.name, ok=MISSING)
            return start_domain(virsh, replace(spec, kind="qemu"), definition, kvm)
        kvm.works.write_text(f"{time.strftime('%F %T')}: the guest of a kvm domain ran\n")
    return spec.kind


def _kvm_failure(virsh: Virsh, vm: str, written: int) -> str:
    """The state a new kvm domain went to instead of running (paused: "KVM internal error"; shut off), or
    "" once its guest wrote to the console (beyond the `written` bytes of earlier boots) or SETTLE_SECONDS
    passed."""
    virsh.run("pool-refresh", POOL)  # the console file QEMU just made
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        state = virsh.run("domstate", vm, "--reason").strip()
        if not state.startswith("running"):
            return state
        if console_size(virsh, vm) > written:
            return ""
        time.sleep(0.3)
    return ""


def shut_down(virsh: Virsh, vm: str, hypervisor: str) -> str | None:
    """The ACPI power button (the guest syncs and powers off), then destroy; an error, or None once gone."""
    try:
        virsh.run("shutdown", vm, ok=MISSING)
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        while time.monotonic() < deadline and vm in virsh.names():
            time.sleep(0.3)
        if vm in virsh.names():
            virsh.run("destroy", vm, ok=MISSING)
        return None if vm not in virsh.names() else f"domain {vm} still runs on {hypervisor}"
    except VirshError as exc:
        return str(exc)
