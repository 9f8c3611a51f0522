"""Taking a snapshot: every running host of the lab paused at once, each one's state saved, every host
resumed; then the stopped hosts' disks; then the folder is renamed into place.

A run killed while the hosts are paused must not leave them paused: the pause is recorded first (the next
snapshot run resumes what a dead run left, resume_leftovers), and a watchdog process in a session of its own
holds a pipe from this run and resumes the hosts with the provider's own command the moment the pipe
closes, which it does when this run ends in any way, kill -9 included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from booted.errors import ProviderError, StateError
from booted.lab.handle import LabHandle
from booted.providers.base import Provider
from booted.providers.lab import Lab
from booted.snapshots import decide
from booted.snapshots.store import Manifest, SavedHost, Store
from booted.state import snapshots as records
from booted.state.warm import warm_hosts

SAVERS = 8  # hosts saved at once while the lab is paused


@contextmanager
def watchdog(command: list[str] | None) -> Iterator[None]:
    """Run `command` when this block ends or this process dies (a child in its own session, waiting on a
    pipe only this process holds)."""
    if command is None:
        yield
        return
    proc = subprocess.Popen(["sh", "-c", 'read -r _ || true; exec "$@"', "booted-snapshot-watchdog", *command],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def resume_leftovers(handle: LabHandle) -> list[str]:
    """Hosts a killed snapshot run left recorded as paused: resumed (the watchdog normally did it already).
    The caller holds the lab lock."""
    inv = handle.kit.inventory
    left = sorted(records.paused(inv, handle.env.name))
    if not left:
        return []
    running = set(handle.running())
    errors = handle.provider.resume(handle.lab, [h for h in left if h in running])
    if errors:
        raise ProviderError("could not resume hosts a killed snapshot left paused: " + _said(errors))
    records.clear_paused(inv, handle.env.name, left)
    return left


def take(handle: LabHandle, name: str, hold: float = 0.0) -> Manifest:
    """Snapshot the lab as `name` (refused when it exists). `hold`: seconds to stay paused after saving
    (BOOTED_SNAPSHOT_HOLD: tests kill the run then)."""
    decide.check_name(name)
    kit, env, provider, lab = handle.kit, handle.env, handle.provider, handle.lab
    store = Store(kit.settings.state_dir, env.name)
    with handle.locked("taking a snapshot of"):
        if store.exists(name):
            raise StateError(f"environment {env.name!r} already has a snapshot {name!r}: delete it first "
                             f"(fab env_snapshot_del {name}) or pick another name")
        handle.check()
        if not provider.snapshot_keeps:
            raise ProviderError(f"the {provider.name} provider cannot take snapshots yet (README: Snapshots)")
        resume_leftovers(handle)
        for gone in store.remove_partials():
            kit.say(f"removed {gone}: the folder of a snapshot run that did not finish")
        inv = kit.inventory
        images = inv.images(env.name)
        procs = handle.running()
        running = sorted(set(procs) & {i.name for i in images})
        warm = warm_hosts(inv, env.name, procs)  # the monitor's paused spares: saved, left paused
        awake = [h for h in running if h not in warm]
        event = records.open_event(inv, env.name, name, "snapshot")
        partial = store.partial(name)
        try:
            kept = records.capture(inv, env.name)
            golden: list[str] = []
            records.record_paused(inv, env.name, awake, os.getpid())
            records.set_step(inv, event, "paused")
            with watchdog(provider.resume_command(lab, awake) if awake else None):
                began = time.monotonic()
                errors = provider.pause(lab, awake) if awake else {}
                try:
                    if errors:
                        raise ProviderError("could not pause " + _said(errors))
                    golden += save_all(provider, lab, running, partial / "hosts")
                    if hold:
                        time.sleep(hold)
                finally:
                    resumed = provider.resume(lab, awake) if awake else {}
                    pause_s = time.monotonic() - began
            records.clear_paused(inv, env.name, awake)
            if resumed:
                raise ProviderError("could not resume " + _said(resumed))
            saved, now = set(running), set(handle.running())
            for image in images:  # stopped hosts that kept a disk: saved as they are, no pause needed
                if image.name not in saved | now and lab.host_dir(image.name).is_dir():
                    (partial / "hosts" / image.name).mkdir()
                    golden += provider.save(lab, image.name, partial / "hosts" / image.name)
                    saved.add(image.name)
            manifest = Manifest(
                name=name, env=env.name, provider=env.provider, network=str(env.network), taken=time.time(),
                pause_s=round(pause_s, 4), keeps=provider.snapshot_keeps,
                hosts=[SavedHost(i.name, i.role, i.service, i.ip, i.mac, i.name in running, i.name in saved)
                       for i in images],
                defined=decide.defined(env), records=kept, golden=sorted(set(golden)))
            store.commit(partial, manifest)
            records.finish_event(inv, event, True, f"{len(running)} host(s) paused {pause_s:.3f} s, "
                                                   f"{len(saved)} saved")
        except BaseException as exc:
            records.finish_event(inv, event, False, f"{type(exc).__name__}: {exc}")
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return manifest


def save_all(provider: Provider, lab: Lab, hosts: list[str], into: Path) -> list[str]:
    """Each host's state into its own folder under `into`, several at once (the pause lasts as long as the
    slowest); the image files they depend on."""
    for host in hosts:
        (into / host).mkdir()
    with ThreadPoolExecutor(max_workers=max(1, min(SAVERS, len(hosts)))) as pool:
        return [ref for refs in pool.map(lambda h: provider.save(lab, h, into / h), hosts) for ref in refs]


def _said(errors: dict[str, str]) -> str:
    return "; ".join(f"{h}: {e}" for h, e in sorted(errors.items()))
