"""Snapshots of VirtualBox hosts with VirtualBox's own: `controlvm VM pause` (all hosts at once), `snapshot VM
take` while paused (VirtualBox keeps the disks and, for a paused VM, its saved state), `controlvm VM resume`;
a restore is `snapshot VM restore` on the stopped VM, then `discardstate` (booted boots the host, as on netns:
a new seed disk carries its new boot token, which a saved state could not take).

A VirtualBox snapshot lives inside its VM, and env_stop deletes a host's VM: a VM that snapshots live in is
set aside instead (renamed `<vm>-kept-<random>`; the next start clones a fresh VM under the host's name) and
a restore brings it back. Which VM holds which snapshot: `<lab dir>/vbox-snapshots.json`.
"""

from __future__ import annotations

import json
import secrets
import shlex
from pathlib import Path

from booted.providers.lab import Lab
from booted.providers.vboxmanage import VBoxError, VBoxManage
from booted.providers.vm import vm_name

MARK = "vbox-snapshot"  # in a snapshot's host folder: the name of the VirtualBox snapshot
HOLDERS = "vbox-snapshots.json"  # in the lab's folder: VirtualBox snapshot -> the VM it lives in


def _holders(lab: Lab) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in json.loads((lab.dir / HOLDERS).read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _write(lab: Lab, holders: dict[str, str]) -> None:
    lab.dir.mkdir(parents=True, exist_ok=True)
    tmp = lab.dir / f".{HOLDERS}"
    tmp.write_text(json.dumps(holders, indent=1, sort_keys=True) + "\n")
    tmp.replace(lab.dir / HOLDERS)


def pause(vbox: VBoxManage, lab: Lab, names: list[str], resume: bool = False) -> dict[str, str]:
    errors = {}
    for name in names:
        try:
            vbox.run("controlvm", vm_name(lab, name), "resume" if resume else "pause")
        except VBoxError as exc:
            if not resume or "not paused" not in str(exc).lower():
                errors[name] = str(exc)
    return errors


def resume_command(binary: str, lab: Lab, names: list[str]) -> list[str]:
    lines = [f"{shlex.quote(binary)} controlvm {shlex.quote(vm_name(lab, n))} resume" for n in names]
    return ["sh", "-c", "; ".join(f"{line} >/dev/null 2>&1" for line in lines) + "; true"]


def save(vbox: VBoxManage, lab: Lab, name: str, folder: Path) -> None:
    vm, snap = vm_name(lab, name), f"booted-{secrets.token_hex(6)}"
    (folder / MARK).write_text(snap + "\n")  # first: a killed run's folder still names what to delete
    vbox.run("snapshot", vm, "take", snap, "--description", f"booted snapshot of {name}")
    _write(lab, {**_holders(lab), snap: vm})


def _snap(folder: Path) -> str:
    return (folder / MARK).read_text().strip()


def restore(vbox: VBoxManage, lab: Lab, name: str, folder: Path) -> None:
    """The host's VM back at the snapshot (the one set aside by env_stop, if the snapshot lives there)."""
    vm, snap = vm_name(lab, name), _snap(folder)
    holders = _holders(lab)
    holder = holders.get(snap, vm)
    registered = vbox.vms()
    if holder != vm:
        if holder not in registered:
            raise VBoxError(f"VirtualBox VM {holder}, which holds snapshot {snap} of {name}, is gone")
        if vm in registered:  # a fresh VM made since: its disk gives way to the snapshot's
            vbox.run("unregistervm", vm, "--delete")
        vbox.run("modifyvm", holder, "--name", vm)
        _write(lab, {s: vm if h == holder else h for s, h in holders.items()})
    vbox.run("snapshot", vm, "restore", snap)
    if vbox.info(vm).get("VMState") == "saved":
        vbox.run("discardstate", vm)


def set_aside(vbox: VBoxManage, lab: Lab, name: str) -> bool:
    """env_stop is about to delete the host's VM: if snapshots live in it, rename it aside instead (True)."""
    vm = vm_name(lab, name)
    holders = _holders(lab)
    if vm not in holders.values() or vm not in vbox.vms():
        return False
    aside = f"{vm}-kept-{secrets.token_hex(3)}"
    vbox.run("modifyvm", vm, "--name", aside)
    _write(lab, {s: aside if h == vm else h for s, h in holders.items()})
    return True


def forget(vbox: VBoxManage, lab: Lab, name: str, folder: Path) -> None:
    """Delete the VirtualBox snapshot; a VM set aside that no snapshot needs any more is deleted too."""
    try:
        snap = _snap(folder)
    except OSError:
        return
    holders = _holders(lab)
    holder = holders.pop(snap, vm_name(lab, name))
    registered = vbox.vms()
    if holder in registered:
        vbox.run("snapshot", holder, "delete", snap)
        if holder != vm_name(lab, name) and holder not in holders.values():
            vbox.run("unregistervm", holder, "--delete")
    _write(lab, holders)


def forget_host(vbox: VBoxManage, lab: Lab, name: str) -> None:
    """image_del: the VMs set aside for the host go with it."""
    vm, holders = vm_name(lab, name), _holders(lab)
    registered = vbox.vms()
    for aside in sorted({h for h in holders.values() if h.startswith(f"{vm}-kept-")}):
        if aside in registered:
            vbox.run("unregistervm", aside, "--delete")
    _write(lab, {s: h for s, h in holders.items() if h != vm and not h.startswith(f"{vm}-kept-")})
