"""Restoring hosts whose memory a snapshot kept (Provider.restore_resumes: qemu): they do not boot, they
continue from the instruction they were paused at, so nothing phones home: they go back on the host list as
the snapshot had them (state/snapshots.py put_listed), their clocks are set (clock.py) while the caller tests
their services, which never stopped."""

from __future__ import annotations

from dataclasses import replace

from booted.lab.handle import LabHandle
from booted.lab.hostimages import identity
from booted.remote.reach import Remote
from booted.results import HostResult
from booted.snapshots.clock import correct_all
from booted.snapshots.store import Manifest
from booted.state import snapshots as records


def continue_hosts(handle: LabHandle, remote: Remote, snap: Manifest, names: list[str]) -> dict[str, HostResult]:
    """Start the restored hosts `names` from their saved memory; host -> result (their clocks are still
    behind: set_clocks, which may run while their services are tested)."""
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
    out = {}
    for name in names:
        if name in errors:
            out[name] = HostResult(name, False, errors[name])
        elif name not in listed:
            out[name] = HostResult(name, False, "continued, but the snapshot has no host-list record of it")
        else:
            out[name] = HostResult(name, True, "continued from the snapshot")
    return out


def set_clocks(remote: Remote, continued: dict[str, HostResult], env: str) -> dict[str, HostResult]:
    """The clocks of the hosts continue_hosts continued, set; host -> its result with the clock's."""
    clocks = correct_all(remote, sorted(h for h, r in continued.items() if r.ok), env)
    out = {}
    for name, result in continued.items():
        if not result.ok:
            out[name] = result
        elif name not in clocks or not clocks[name].ok:
            out[name] = HostResult(name, False, "continued, but its clock could not be set: "
                                   + (clocks[name].detail if name in clocks else "not reached"))
        else:
            out[name] = replace(result, detail=f"{result.detail}; {clocks[name].detail}")
    return out
