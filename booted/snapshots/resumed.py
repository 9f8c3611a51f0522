"""Restoring hosts whose memory a snapshot kept (Provider.restore_resumes: qemu): they do not boot, they
continue from the instruction they were paused at, so nothing phones home: they go back on the host list as
the snapshot had them (state/snapshots.py put_listed), their clocks are set (clock.py), and their services,
which never stopped, are only tested by the caller."""

from __future__ import annotations

from booted.lab.handle import LabHandle
from booted.lab.hostimages import identity
from booted.remote.reach import Remote
from booted.results import HostResult
from booted.snapshots.clock import correct_all
from booted.snapshots.store import Manifest
from booted.state import snapshots as records


def continue_hosts(handle: LabHandle, remote: Remote, snap: Manifest, names: list[str]) -> dict[str, HostResult]:
    """Start the restored hosts `names` from their saved memory; host -> result."""
    kit, env = handle.kit, handle.env
    inv = kit.inventory
    images = {i.name: i for i in inv.images(env.name)}
    handle.prepare()  # the lab network and nginx (env_stop took them down)
    idents = [identity(kit.settings, kit.keys, env, images[n], None, (), images[n].boot_token or "") for n in names]
    started, errors = handle.provider.start_saved(handle.lab, idents)
    for s in started:
        inv.set_running(s.name, s.pid)
    listed = set(records.put_listed(inv, [s.name for s in started], snap.records))
    handle.gateways.pin_host_keys()
    clocks = correct_all(remote, sorted(listed), env.name)
    out = {}
    for name in names:
        if name in errors:
            out[name] = HostResult(name, False, errors[name])
        elif name not in listed:
            out[name] = HostResult(name, False, "continued, but the snapshot has no host-list record of it")
        elif name not in clocks or not clocks[name].ok:
            out[name] = HostResult(name, False, "continued, but its clock could not be set: "
                                   + (clocks[name].detail if name in clocks else "not reached"))
        else:
            out[name] = HostResult(name, True, f"continued from the snapshot; {clocks[name].detail}")
    return out
