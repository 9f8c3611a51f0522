"""The monitor's warm pool: spare hosts of a role booted, deployed, tested and paused (a netns host frozen by
the cgroup freezer, a VM stopped through QMP: the provider's `pause`), outside the lb. A heal or a scale-up
takes one (resume, correct a VM's clock, check its health, put it in the lb) instead of booting; the pool
refills from pool hosts that are not running. Both are actions of the daemon (Kind.TAKE, Kind.WARM)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Protocol

from booted.environments import Environment
from booted.lab.handle import LabHandle
from booted.monitor.follow import Watch, stamp
from booted.monitor.reconcile import Action, Kind, Observed, decide, managed
from booted.providers.base import Provider
from booted.remote.fanout import Target
from booted.state.warm import clear_warm, set_warm, warm_hosts

if TYPE_CHECKING:
    from booted.context import Booted


class Monitor(Protocol):
    """What the warm pool uses of the monitor's daemon (daemon.py): its run, lab and environments.py watch, the
    pass's view (failure counts, wanted counts, what ran, the lbs' hosts and health), its health check and
    its lb sync."""

    ctx: Booted
    lab: LabHandle
    env: Environment
    watch: Watch
    failures: dict[str, int]
    last_wanted: dict[str, int]
    ran: frozenset[str]
    serving: tuple[set[str], dict[str, dict[str, object]]]

    def health(self, targets: list[Target]) -> dict[str, dict[str, object]]: ...

    def sync_backends(self, healthy: set[str], health: dict[str, dict[str, object]]) -> None: ...

HEALTHY_WITHIN = 10.0  # seconds a resumed host has to answer its health check
WATCH = 0.2  # seconds between two looks at what runs while the daemon waits (with a warm pool)
SHARED_CLOCK = {"netns"}  # providers whose hosts read the machine's own clock: nothing to correct


def take(m: Monitor, host: str) -> tuple[bool, str]:
    """Resume a warm host, correct its clock, wait for its health check, and put it in the lb now."""
    started = time.monotonic()
    with m.lab.locked("taking a warm host of"):
        errors = m.lab.provider.resume(m.lab.lab, [host])
        clear_warm(m.ctx.inventory, [host])  # resumed or not, it is no longer a paused spare
    if host in errors:
        return False, f"could not resume it: {errors[host]}"
    resumed = time.monotonic()
    target = _target(m, host)
    clock = "" if m.env.provider in SHARED_CLOCK else _set_clock(m, target)
    deadline = time.monotonic() + HEALTHY_WITHIN
    while host not in m.health([target]):
        if time.monotonic() > deadline:
            return False, f"resumed, but no healthy answer within {HEALTHY_WITHIN:g}s{clock}"
        time.sleep(0.05)
    healthy = time.monotonic()
    running = m.lab.running()  # this pass's lb members and health, less the dead: no second look at every host
    serving, health = {n for n in m.serving[0] if n in running} | {host}, m.serving[1]
    m.serving = (serving, health)
    m.sync_backends(serving, health)  # in the lb before anything else this pass does
    done = time.monotonic()
    return True, (f"resumed from the warm pool, healthy and in the lb in {done - started:.2f}s (resume "
                  f"{resumed - started:.2f}s, healthy {healthy - resumed:.2f}s, lb {done - healthy:.2f}s){clock}")


def replacements(m: Monitor) -> list[Action]:
    """A pass begins with this (with a warm pool): warm hosts are taken at once, before the pass's health checks
    of every host, for serving hosts whose process is gone and for a `min` raised in environments.py (from
    what runs now and the last pass's health; the rest of the pass decides as ever)."""
    if not any(m.env.monitor.warm.values()):
        return []
    procs = m.lab.running()
    inv, name = m.ctx.inventory, m.env.name
    warm = frozenset(warm_hosts(inv, name, procs))
    if not warm:
        return []
    seen = Observed(frozenset(procs), {n: f for n, f in m.failures.items() if n in procs},
                    frozenset(i.name for i in inv.images(name) if i.held), warm=warm)
    wanted = {role: max(m.last_wanted.get(role, 0), m.env.minimum.get(role, 0)) for role in managed(m.env)}
    return [a for a in decide(m.env, seen, wanted) if isinstance(a, Action) and a.kind is Kind.TAKE]


def wait(m: Monitor, stop: threading.Event, seconds: float) -> None:
    """The daemon's wait between passes. With a warm pool it looks at what runs (and at environments.py) every
    WATCH s meanwhile and begins the next pass at once when a host's process is gone or the file changed (a heal
    or a scale-up by a warm host is not kept waiting a whole interval); without one, it only waits."""
    if not any(m.env.monitor.warm.values()):
        stop.wait(seconds)
        return
    deadline, before = time.monotonic() + seconds, m.ran  # as the pass saw it: a death during it counts
    while not stop.wait(min(WATCH, max(0.0, deadline - time.monotonic()))) and time.monotonic() < deadline:
        if before - set(m.lab.running()) or stamp(m.watch.path) != m.watch.seen:
            return


def fill(m: Monitor, host: str) -> tuple[bool, str]:
    """Boot, deploy and test a pool host like any start, then pause it and record it warm (with its PID)."""
    provider = m.lab.provider
    if type(provider).pause is Provider.pause:  # no boot for a host that could not be paused after
        return False, f"the {provider.name} provider cannot pause hosts: no warm pool (remove 'warm')"
    ok, detail = m.ctx.runs(m.env.name).start_hosts([m.env.host(host)]).outcome()
    if ok:
        with m.lab.locked("pausing a warm host of"):
            pid = m.lab.running().get(host)
            errors = {host: "it stopped"} if pid is None else m.lab.provider.pause(m.lab.lab, [host])
            if host not in errors:
                set_warm(m.ctx.inventory, m.env.name, {host: pid or 0})
                return True, f"{detail}; paused in the warm pool"
        detail = f"could not pause it: {errors[host]}"
    r = m.lab.stop([host], by_user=False)[0]  # never left running outside the pool: it would be taken to serve
    return False, detail + ("" if r.ok else f"; and could not stop it: {r.detail}")


def _target(m: Monitor, host: str) -> Target:
    found = m.ctx.targets([host])
    return found[0] if found else m.lab.target(next(i for i in m.ctx.inventory.images(m.env.name) if i.name == host))


def _set_clock(m: Monitor, target: Target) -> str:
    """A VM paused for a while wakes with its clock behind: set it to the machine's (one SSH command)."""
    now = f"@{time.time():.0f}"
    script = f"date -u -s {now} >/dev/null 2>&1 || sudo -n date -u -s {now} >/dev/null"
    with m.ctx.fleet() as fleet:
        r = fleet.run([target], lambda t: fleet.sh(t, script), progress=False, timeout=10)[0]
    return "; clock set" if r.ok else f"; clock NOT set: {r.detail}"
