"""Restoring a snapshot: refused (exit 2, naming each difference) when environments.py's hosts or network
differ from the snapshot's; else every host of the lab is stopped, each saved host's state is put back,
booted's records (releases, pins, user holds) become the snapshot's, the hosts that ran then boot, and each
starts the release it ran (already on its restored disk) and is tested for it.

A restore is recorded as an event with its steps (state/snapshots.py), never by rewriting the boot log; a
restore killed half-way is listed as unfinished, and running it again redoes it from the start (every step
is idempotent: stop what runs, put layers back, boot, start)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from booted.errors import ConfigError, ProviderError
from booted.lab.handle import LabHandle
from booted.remote import deploy, firstboot
from booted.remote.reach import Remote
from booted.results import HostResult
from booted.snapshots import decide
from booted.snapshots.resumed import continue_hosts, set_clocks
from booted.snapshots.store import Manifest, Store
from booted.snapshots.take import resume_leftovers
from booted.state import snapshots as records
from booted.state.records import Image


def restore(handle: LabHandle, remote: Remote, name: str) -> tuple[Manifest, list[HostResult]]:
    """Put the lab back as snapshot `name` has it; a result per host of the snapshot."""
    decide.check_name(name)
    kit, env = handle.kit, handle.env
    store = Store(kit.settings.state_dir, env.name)
    inv = kit.inventory
    with handle.locked("restoring a snapshot of"):
        snap = store.load(name)
        images = {i.name: i for i in inv.images(env.name)}
        saved = {p.name for p in (store.folder(name) / "hosts").iterdir()}
        diffs = decide.differences(snap, env, images, saved)
        if diffs:
            raise ConfigError(f"snapshot {name!r} does not match environment {env.name!r} in "
                              f"{env.source}: " + "; ".join(diffs))
        handle.check()
        resume_leftovers(handle)
        left = records.unfinished_restore(inv, env.name)
        if left is not None:
            kit.say(f"an earlier restore of {left[1]!r} stopped at step {left[2] or 'start'!r}: "
                    f"{'finishing it' if left[1] == name else 'this restore replaces it'}")
            records.finish_event(inv, left[0], False, f"interrupted at {left[2]}; replaced by a restore of {name}")
        event = records.open_event(inv, env.name, name, "restore")
        try:
            results = _restore(handle, remote, snap, store, event)
        except BaseException as exc:
            records.finish_event(inv, event, False, f"{type(exc).__name__}: {exc}")
            raise
        bad = [r for r in results if not r.ok]
        records.finish_event(inv, event, not bad, f"{len(results) - len(bad)} ok, {len(bad)} failed")
        return snap, results


def _restore(handle: LabHandle, remote: Remote, snap: Manifest, store: Store, event: int) -> list[HostResult]:
    kit, env, provider, lab = handle.kit, handle.env, handle.provider, handle.lab
    inv = kit.inventory
    began = time.monotonic()

    def step(name: str) -> None:
        records.set_step(inv, event, name)
        kit.say(f"restore {snap.name}: {name} ({time.monotonic() - began:.2f}s)")
    step("stopping")
    running = sorted(set(handle.running()) & {i.name for i in inv.images(env.name)})
    boot = [h.name for h in snap.hosts if h.running]
    if running:
        provider.drop(lab, running)  # their state is replaced: no clean shutdown needed (qemu: QMP quit)
        # the network and nginx stay up when hosts start again at once (taking them down and up: ~1.5 s)
        failed = [r for r in handle.stop(running, by_user=False, keep_network=bool(boot)) if not r.ok]
        if failed:
            raise ProviderError("could not stop " + "; ".join(f"{r.host}: {r.detail}" for r in failed))
    step("disks")
    hosts = [h.name for h in snap.hosts]
    for host in snap.hosts:
        if host.saved:
            provider.restore(lab, host.name, store.folder(snap.name) / "hosts" / host.name)
        else:  # it had no disk then: none now either
            provider.discard(lab, host.name)
    inv.remove_hosts(hosts)
    step("booting")
    versions = snap.versions()
    at_boot: dict[str, firstboot.Serve] = {}

    def serving(fresh: list[Image], alive: set[str]) -> dict[str, firstboot.Serve]:
        """Each host serves the release it ran at the snapshot from its first boot (the release is on its
        restored disk already; deploy.sh only starts it)."""
        mine = [replace(i, version=versions[i.name][1]) for i in fresh
                if i.name in versions and i.service == versions[i.name][0]]
        at_boot.update(firstboot.prepare(remote, env, mine, alive))
        return at_boot
    if provider.restore_resumes:  # its hosts continue from their saved memory: no boot, services still up
        booted = continue_hosts(handle, remote, snap, boot) if boot else {}
        warm = {h for h, r in booted.items() if r.ok}
    else:
        booted = {r.host: r for r in handle.start(handle.images(boot), serving)} if boot else {}
        warm = set()
    records.put_back(inv, hosts, snap.records)  # after the boot, which clears holds: the snapshot's come back
    step("serving")
    with ThreadPoolExecutor(max_workers=1) as pool:  # continued hosts' clocks set while their services are tested
        clocks = pool.submit(set_clocks, remote, booted, env.name) if warm else None
        served = _serve(remote, snap, [h for h, r in booted.items() if r.ok], env.name, at_boot, warm)
        booted = clocks.result() if clocks is not None else booted
    step("done")
    out = []
    ran = snap.ran()
    for host in snap.hosts:
        if not host.running:
            out.append(HostResult(host.name, True, "restored; stopped, as it was at the snapshot"))
        elif not booted[host.name].ok:
            out.append(HostResult(host.name, False, f"restored, but did not boot: {booted[host.name].detail}"))
        elif host.name in served and not served[host.name].ok:
            out.append(HostResult(host.name, False, f"restored and booted; {served[host.name].detail}"))
        else:
            how = booted[host.name].detail if host.name in warm else "restored and booted"
            out.append(HostResult(host.name, True, how + (f"; serving {ran[host.name]}"
                                                                            if ran[host.name] else ""),
                                  version=ran[host.name].split(" ")[-1] or None))
    return out


def _serve(remote: Remote, snap: Manifest, hosts: list[str], env: str, at_boot: dict[str, firstboot.Serve],
           warm: set[str]) -> dict[str, HostResult]:
    """Test the release each booted host ran at the snapshot; a host whose boot-log line does not say it
    serves it is started first (its restored disk has it); a `warm` host (continued from its memory) is only
    tested. Services that front others go last, so their
    backend list is complete. host -> its first failure, or its test's result."""
    versions = snap.versions()
    listed = {h.name: h.serving for h in remote.kit.inventory.hosts()}
    services = remote.services
    order = sorted({versions[h][0] for h in hosts if h in versions},
                   key=lambda n: (n not in services or services[n].upstream is not None, n))
    out: dict[str, HostResult] = {}
    with remote.fleet() as fleet:
        for service in order:
            mine = [h for h in hosts if versions.get(h, ("",))[0] == service]
            p = deploy.plan(remote, service, hosts=mine, env=env)
            p = replace(p, versions={h: versions[h][1] for h in mine})
            cold = {h for h in mine if h not in warm and (h not in at_boot or listed.get(h) != at_boot[h].release)}
            if cold:
                started = deploy.run_op(remote, "start", p.only(cold), fleet)
                out.update({r.host: r for r in started})
                p = p.only(set(mine) - {r.host for r in started if not r.ok})
            out.update({r.host: r for r in deploy.run_op(remote, "test", p, fleet)})
    return out
