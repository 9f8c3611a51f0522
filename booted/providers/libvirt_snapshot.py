"""Snapshots of libvirt hosts with libvirt's own: internal snapshots, each in its host's qcow2 volume on the
hypervisor the host runs on.

Taking one: `virsh suspend` on every domain of the lab at once (pause), then per domain `snapshot-create-as`
(a running domain whose writable disks are qcow2 gets an internal snapshot of disk *and* memory, QEMU's
savevm; a shut-off one a disk snapshot), then `virsh resume` on every domain. Internal, not external: libvirt
9.0 (Debian 12) cannot revert external snapshots (added in libvirt 9.9), and the seed disk, raw but read-only,
is left out of an internal one by QEMU. Restoring one: `snapshot-revert --running` once the lab's network is
up again (start_saved): QEMU starts from the snapshot's domain definition and loads its memory, so the guest
continues where it was paused (no boot); a disk snapshot is reverted at once and the host stays shut off.

The snapshot lives in the host's disk, and env_stop deletes a host's disk: a disk that booted's snapshots
live in is kept instead, with the domain and libvirt's snapshot metadata, and the domain is defined with a
new disk (`<vm>.<n>.qcow2`, libvirt_store.py) that the next start makes fresh; a restore reverts to the
snapshot's definition, whose disk is the kept one. A kept disk goes with its last snapshot. What booted
keeps in its snapshot folder: which libvirt snapshot, on which hypervisor, in which volume (MARK); a libvirt
snapshot of booted's that no complete folder names is a killed run's, deleted at env_stop and snapshot_del.
"""

from __future__ import annotations

import json
import secrets
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from booted.errors import ProviderError
from booted.providers.each import each
from booted.providers.hypervisors import Hypervisor
from booted.providers.lab import Lab
from booted.providers.libvirt_hypervisors import placed_on
from booted.providers.libvirt_net import ensure_lab_network
from booted.providers.libvirt_options import libvirt_of
from booted.providers.libvirt_store import POOL, delete_disks, spare_disk, volumes, working_disk
from booted.providers.virsh import MISSING, Virsh, VirshError
from booted.providers.vm import vm_name

MARK = "libvirt-snapshot.json"  # in a snapshot's host folder: what Saved says
RESUME = "libvirt-resume"  # in a restored host's folder: the snapshot folder its domain continues from
PREFIX = "booted-"  # libvirt snapshots booted made
SNAPSHOT_SECONDS = 600.0
ELSEWHERE = "is not the same as disk image currently used"  # libvirt 9: a live delete of a kept disk's


@dataclass(frozen=True)
class Saved:
    """Where a host's snapshot is: libvirt's snapshot `snapshot` of the host's domain on `hypervisor`, in the
    disk volume `disk`; `memory` when the domain ran (a restore continues it)."""

    snapshot: str
    hypervisor: str
    disk: str
    memory: bool

    @classmethod
    def read(cls, folder: Path) -> Saved:
        return cls(**json.loads((folder / MARK).read_text()))


def pause(virsh_of: Callable[[Hypervisor], Virsh], lab: Lab, on: dict[str, Hypervisor], names: list[str],
          resume: bool = False) -> dict[str, str]:
    """`virsh suspend` (or `resume`) on the hosts' domains at once; `on`: where each runs. Resuming a domain
    that runs or is gone does nothing."""
    def one(name: str) -> str:
        if name not in on:
            return "" if resume else "its domain is not running"
        try:
            virsh_of(on[name]).run("resume" if resume else "suspend", vm_name(lab, name),
                                   ok=("already running", "not running", *MISSING) if resume else ())
        except VirshError as exc:
            return str(exc)
        return ""
    return each(names, one)


def resume_command(binary: str, lab: Lab, on: dict[str, Hypervisor], names: list[str]) -> list[str]:
    """`virsh -c URI resume VM` per host, errors ignored (a watchdog's, with nothing of booted)."""
    lines = [f"{shlex.quote(binary)} -q -c {shlex.quote(on[n].uri)} resume {shlex.quote(vm_name(lab, n))}"
             for n in names if n in on]
    return ["sh", "-c", "; ".join(f"{line} </dev/null >/dev/null 2>&1" for line in lines) + "; true"]


def drop(virsh_of: Callable[[Hypervisor], Virsh], lab: Lab, on: dict[str, Hypervisor], names: list[str]) -> None:
    """`virsh destroy` (no ACPI shutdown: a restore replaces their whole state) on running domains at once."""
    def one(name: str) -> str:
        try:
            virsh_of(on[name]).run("destroy", vm_name(lab, name), ok=MISSING)
        except VirshError as exc:
            return str(exc)  # the stop that follows reports it
        return ""
    each([n for n in names if n in on], one)


def snapshot_disks(virsh: Virsh, vm: str) -> dict[str, str]:
    """booted's libvirt snapshots of the domain: name -> the disk volume (vda) it lives in ({} : no domain)."""
    try:
        names = [n for n in virsh.run("snapshot-list", vm, "--name").split() if n.startswith(PREFIX)]
    except VirshError as exc:
        if any(m in str(exc) for m in MISSING):
            return {}
        raise
    out = {}
    for name in names:
        for disk in virsh.xml("snapshot-dumpxml", vm, name).iterfind("domain/devices/disk"):
            target, source = disk.find("target"), disk.find("source")
            if target is not None and target.get("dev") == "vda" and source is not None:
                out[name] = Path(source.get("file", "")).name
    return out


def hypervisor(lab: Lab, name: str) -> Hypervisor:
    """The lab's hypervisor called `name` (a snapshot's; the environment may have dropped it since)."""
    hv = next((h for h in libvirt_of(lab).hypervisors if h.name == name), None)
    if hv is None:
        raise ProviderError(f"hypervisor {name}, where a snapshot lives, is no longer in environment {lab.env!r}")
    return hv


def save(virsh_of: Callable[[Hypervisor], Virsh], lab: Lab, name: str, folder: Path) -> None:
    """libvirt's snapshot of the host's domain (paused: disk and memory; shut off: its disk), named in `folder`
    first, so a killed run's folder still says what to delete. (No listing of every hypervisor here: it runs
    while the lab is paused.)"""
    hv = placed_on(lab, name)
    if hv is None:
        raise ProviderError(f"host {name} was never placed on a hypervisor: nothing to snapshot")
    virsh, vm = virsh_of(hv), vm_name(lab, name)
    active = virsh.run("domstate", vm).strip() in ("running", "paused")
    saved = Saved(f"{PREFIX}{secrets.token_hex(6)}", hv.name, working_disk(virsh, vm), active)
    (folder / MARK).write_text(json.dumps(asdict(saved)) + "\n")
    virsh.run("snapshot-create-as", vm, saved.snapshot, "--description", f"booted snapshot of {name}",
              timeout=SNAPSHOT_SECONDS)


def restore(virsh_of: Callable[[Hypervisor], Virsh], lab: Lab, name: str, folder: Path) -> None:
    """The stopped host's domain back at its snapshot: a disk snapshot reverted now; one with memory marked for
    start_saved (its network must be up). The disk the domain had since goes unless snapshots live in it."""
    saved, vm, hdir = Saved.read(folder), vm_name(lab, name), lab.host_dir(name)
    virsh = virsh_of(hypervisor(lab, saved.hypervisor))
    disks = snapshot_disks(virsh, vm)
    if saved.snapshot not in disks:
        raise ProviderError(f"{name}: libvirt on {saved.hypervisor} no longer has its snapshot {saved.snapshot} "
                            f"(virsh snapshot-list {vm})")
    now = working_disk(virsh, vm)
    hdir.mkdir(parents=True, exist_ok=True)
    (hdir / RESUME).unlink(missing_ok=True)
    if saved.memory:
        (hdir / RESUME).write_text(f"{folder}\n")
    else:
        virsh.run("snapshot-revert", vm, saved.snapshot, timeout=SNAPSHOT_SECONDS)
    if now != saved.disk and now not in disks.values():
        virsh.run("vol-delete", "--pool", POOL, now, ok=MISSING)


def to_continue(lab: Lab, name: str) -> Saved | None:
    """The snapshot a restored host's domain continues from (None: it boots)."""
    try:
        return Saved.read(Path((lab.host_dir(name) / RESUME).read_text().strip()))
    except (OSError, ValueError, TypeError):
        return None


def start_all(virsh_of: Callable[[Hypervisor], Virsh], lab: Lab, names: list[str]) -> dict[str, str]:
    """Revert restored hosts' domains to their snapshots, running, all at once (QEMU loads their memory), each
    on its hypervisor, where the lab's network is made first (once per hypervisor); host -> error."""
    errors: dict[str, str] = {}
    todo: dict[str, tuple[Hypervisor, Saved]] = {}
    ready: dict[str, str] = {}  # hypervisor -> "" or why its network could not be made
    for name in names:
        saved = to_continue(lab, name)
        try:
            if saved is None:
                raise ProviderError("it has no saved memory to continue from")
            hv = hypervisor(lab, saved.hypervisor)
            if hv.name not in ready:
                ready[hv.name] = ""
                try:
                    ensure_lab_network(virsh_of(hv), lab, hv, lab.dir / f"net-{hv.name}.xml")
                except ProviderError as exc:
                    ready[hv.name] = f"the lab network on {hv.name}: {exc}"
            if ready[hv.name]:
                raise ProviderError(ready[hv.name])
            todo[name] = (hv, saved)
        except ProviderError as exc:
            errors[name] = f"could not continue {name} from its snapshot: {exc}"

    def one(name: str) -> str:
        hv, saved = todo[name]
        try:
            virsh_of(hv).run("snapshot-revert", vm_name(lab, name), saved.snapshot, "--running", "--force",
                             timeout=SNAPSHOT_SECONDS)
        except ProviderError as exc:
            return f"could not continue {name} from its snapshot: {exc}"
        (lab.host_dir(name) / RESUME).unlink(missing_ok=True)
        return ""
    return errors | each(list(todo), one)


def delete(virsh: Virsh, vm: str, snapshot: str) -> None:
    try:
        virsh.run("snapshot-delete", vm, snapshot, timeout=SNAPSHOT_SECONDS)
    except VirshError as exc:
        if ELSEWHERE not in str(exc):
            raise
        # the domain runs on another disk: the snapshot's data stays in its kept disk until that goes
        virsh.run("snapshot-delete", vm, snapshot, "--metadata")


def live(virsh: Virsh, vm: str, known: set[str]) -> dict[str, str]:
    """booted's libvirt snapshots of the domain that a snapshot folder names (`known`): name -> disk. The others
    (a snapshot run killed after saving: its folder is gone) are deleted."""
    disks = snapshot_disks(virsh, vm)
    for orphan in [s for s in disks if s not in known]:
        delete(virsh, vm, orphan)
        del disks[orphan]
    return disks


def known(folder: Path) -> set[str]:
    """The libvirt snapshots named by the complete snapshot folders under `folder`, an environment's snapshots
    (`<name>/hosts/<host>/MARK`). Not those of `.partial-*` folders: the caller holds the lab lock, so no
    snapshot is being written; they are a killed run's (the next snapshot run removes them)."""
    out = set()
    for mark in folder.glob(f"*/hosts/*/{MARK}"):
        if mark.parents[2].name.startswith("."):
            continue
        try:
            out.add(Saved.read(mark.parent).snapshot)
        except (OSError, ValueError, TypeError):
            continue
    return out


def keep_disk(virsh: Virsh, lab: Lab, name: str, named: set[str]) -> bool:
    """env_stop is about to delete the host's domain and volumes: if booted's snapshots (`named` by a folder)
    live in any of its disks, keep those and the domain (with libvirt's snapshot metadata) and discard only the
    disk it runs on: a disk with snapshots is kept and the domain defined with a new one instead, one without
    is deleted (the next start makes it fresh). True when kept."""
    vm = vm_name(lab, name)
    disks = live(virsh, vm, named)
    if not disks:
        return False
    disk = working_disk(virsh, vm)
    if disk not in disks.values():
        virsh.run("vol-delete", "--pool", POOL, disk, ok=MISSING)
        return True
    domain = virsh.xml("dumpxml", "--inactive", vm)
    for node in domain.iterfind("devices/disk"):
        target, source = node.find("target"), node.find("source")
        if target is not None and target.get("dev") == "vda" and source is not None:
            source.set("file", str(Path(source.get("file", "")).with_name(spare_disk(vm, volumes(virsh)))))
    virsh.define("define", ET.tostring(domain, encoding="unicode"), lab.host_dir(name) / "domain.xml")
    return True


def forget(virsh_of: Callable[[Hypervisor], Virsh], lab: Lab, name: str, folder: Path, named: set[str]) -> None:
    """Delete the host's libvirt snapshot (and any a killed run left: not `named` by a folder); a kept disk
    that no snapshot needs any more goes too, and so does the domain of a host env_stop discarded (it has no
    folder) once none is left: what env_stop would have removed."""
    try:
        saved = Saved.read(folder)
    except (OSError, ValueError, TypeError):
        return
    virsh, vm = virsh_of(hypervisor(lab, saved.hypervisor)), vm_name(lab, name)
    disks = live(virsh, vm, named - {saved.snapshot})
    if not disks and not lab.host_dir(name).exists() and vm not in virsh.names():
        virsh.run("undefine", vm, "--snapshots-metadata", ok=MISSING)
        delete_disks(virsh, vm)
    elif saved.disk != working_disk(virsh, vm) and saved.disk not in disks.values():
        virsh.run("vol-delete", "--pool", POOL, saved.disk, ok=MISSING)
