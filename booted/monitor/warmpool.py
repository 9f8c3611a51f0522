"""The monitor's warm pool: spare hosts of a role booted, deployed, tested and paused (a netns host frozen by
the cgroup freezer, a VM stopped through QMP: the provider's `pause`), outside the lb. A heal or a scale-up
takes one (resume, correct a VM's clock, check its health, put it in the lb) instead of booting; the pool
refills from pool hosts that are not running, in the background (refill.py). Both are actions of the daemon
(Kind.TAKE, Kind.WARM). The daemon keeps its SSH connection to a warm host open while it is paused: the
take's clock command then costs milliseconds, not a login into a VM."""

from __future__ import annotations

import functools
import threading
import time
from typing import TYPE_CHECKING, Protocol

from booted.environments import Environment
from booted.lab.handle import LabHandle
from booted.monitor.follow import Watch, stamp
from booted.monitor.reconcile import Action, Kind, Observed, Shortage, decide, managed
from booted.monitor.refill import Refill
from booted.remote.fanout import Fleet, Target
from booted.snapshots import clock
from booted.state.warm import clear_warm, set_warm, warm_hosts

if TYPE_CHECKING:
    from booted.context import Booted


class Monitor(Protocol):
    """What the warm pool uses of the monitor's daemon (daemon.py): its run, lab and environments.py watch, the
    pass's view (failure counts, wanted counts, what ran, the lbs' hosts and health), its SSH connections, its
    refill, its health check and its lb sync."""

    ctx: Booted
    lab: LabHandle
    env: Environment
    watch: Watch
    failures: dict[str, int]
    last_wanted: dict[str, int]
    ran: frozenset[str]
    serving: tuple[set[str], dict[str, dict[str, object]]]
    fleet: Fleet
    refill: Refill

    def health(self, targets: list[Target]) -> dict[str, dict[str, object]]: ...

    def sync_backends(self, healthy: set[str], health: dict[str, dict[str, object]]) -> None: ...

HEALTHY_WITHIN = 10.0  # seconds a resumed host has to answer its health check
WATCH = 0.2  # seconds between two looks at what runs while the daemon waits (with a warm pool)
SHARED_CLOCK = {"netns"}  # providers whose hosts read the machine's own clock: nothing to correct


def take(m: Monitor, host: str) -> tuple[bool, str]:
    """Resume a warm host, correct its clock, wait for its health check, and put it in the lb now."""
    started = time.monotonic()
    with m.refill.lab_lock(m.lab, "taking a warm host of"):
        errors = m.lab.provider.resume(m.lab.lab, [host])
        clear_warm(m.ctx.inventory, [host])  # resumed or not, it is no longer a paused spare
    if host in errors:
        return False, f"could not resume it: {errors[host]}"
    resumed = time.monotonic()
    target = _target(m, host)
    said = "" if m.env.provider in SHARED_CLOCK else _set_clock(m, target)
    clocked = time.monotonic()
    deadline = time.monotonic() + HEALTHY_WITHIN
    while host not in m.health([target]):
        if time.monotonic() > deadline:
            return False, f"resumed, but no healthy answer within {HEALTHY_WITHIN:g}s{said}"
        time.sleep(0.05)
    healthy = time.monotonic()
    running = m.lab.running()  # this pass's lb members and health, less the dead: no second look at every host
    serving, health = {n for n in m.serving[0] if n in running} | {host}, m.serving[1]
    m.serving = (serving, health)
    m.sync_backends(serving, health)  # in the lb before anything else this pass does
    done = time.monotonic()
    return True, (f"resumed from the warm pool, healthy and in the lb in {done - started:.2f}s (resume "
                  f"{resumed - started:.2f}s, clock {clocked - resumed:.2f}s, healthy {healthy - clocked:.2f}s, "
                  f"lb {done - healthy:.2f}s){said}")


def replacements(m: Monitor) -> list[Action]:
    """A pass begins with this (with a warm pool): warm hosts are taken at once, before the pass's health checks
    of every host, for serving hosts whose process is gone and for a `min` raised in environments.py (from
    what runs now and the last pass's health; the rest of the pass decides as ever)."""
    if not any(m.env.monitor.warm.values()):
        return []
    procs = m.lab.running()
    inv, name = m.ctx.inventory, m.env.name
    filling = frozenset(n for n in [m.refill.filling()] if n)
    warm = frozenset(warm_hosts(inv, name, procs)) - filling
    if not warm:
        return []
    seen = Observed(frozenset(procs), {n: f for n, f in m.failures.items() if n in procs},
                    frozenset(i.name for i in inv.images(name) if i.held), warm=warm, filling=filling)
    wanted = {role: max(m.last_wanted.get(role, 0), m.env.minimum.get(role, 0)) for role in managed(m.env)}
    return [a for a in decide(m.env, seen, wanted) if isinstance(a, Action) and a.kind is Kind.TAKE]


def wait(m: Monitor, stop: threading.Event, seconds: float) -> None:
    """The daemon's wait between passes. With a warm pool it looks at what runs (and at environments.py) every
    WATCH s meanwhile and begins the next pass at once when a host's process is gone, the file changed or a
    refill ended (a heal or a scale-up by a warm host is not kept waiting a whole interval); without one, it
    only waits."""
    if not any(m.env.monitor.warm.values()):
        stop.wait(seconds)
        return
    deadline, before = time.monotonic() + seconds, m.ran  # as the pass saw it: a death during it counts
    filling = m.refill.filling()
    while not stop.wait(min(WATCH, max(0.0, deadline - time.monotonic()))) and time.monotonic() < deadline:
        if (before - set(m.lab.running()) or stamp(m.watch.path) != m.watch.seen
                or (filling is not None and m.refill.filling() is None)):
            return


def fill(m: Monitor, ctx: Booted, host: str) -> tuple[bool, str]:
    """The refill (in its thread, with its own run context `ctx`, holding the lab lock): boot, deploy and test a
    pool host like any start, open the daemon's SSH connection to it, pause it and record it warm (with its
    PID)."""
    lab = ctx.lab(m.env.name)
    ok, detail = ctx.runs(m.env.name).start_hosts([lab.env.host(host)]).outcome()
    if ok:
        with lab.locked("pausing a warm host of"):
            pid = lab.running().get(host)
            if pid is not None and m.env.provider not in SHARED_CLOCK:
                _connect(m, _target(m, host))  # kept open while paused: the take's clock command is quick
            errors = {host: "it stopped"} if pid is None else lab.provider.pause(lab.lab, [host])
            if host not in errors:
                set_warm(ctx.inventory, m.env.name, {host: pid or 0})
                return True, f"{detail}; paused in the warm pool"
        detail = f"could not pause it: {errors[host]}"
    m.fleet.drop(host)
    r = lab.stop([host], by_user=False)[0]  # never left running outside the pool: it would be taken to serve
    return False, detail + ("" if r.ok else f"; and could not stop it: {r.detail}")


def cannot_pause(lab: LabHandle) -> str:
    """Why the lab's provider can keep no warm pool ("" : it can)."""
    if lab.provider.can_pause:
        return ""
    return f"the {lab.provider.name} provider cannot pause hosts: no warm pool (remove 'warm')"


def order(action: Action | Shortage) -> int:
    """A pass's order: takes (no boot: serving first), then the rest, then refills (in the background)."""
    kind = action.kind if isinstance(action, Action) else None
    return 0 if kind is Kind.TAKE else 2 if kind is Kind.WARM else 1


def later(m: Monitor, action: Action) -> str:
    """Why an action waits for a later pass ("" : it runs now): a refill holds the lab lock, and a take is the
    only lab work a pass does under the refill's hold (a second refill waits its turn, silently)."""
    filling = m.refill.filling()
    if filling is None or action.kind in (Kind.TAKE, Kind.DEPLOY):
        return ""
    return "" if action.kind is Kind.WARM else f"waits for the warm pool's refill of {filling} (a later pass)"


def background(m: Monitor, action: Action) -> None:
    """A WARM action in the background (refill.py): recorded now, finished by the refill's thread."""
    record = m.ctx.inventory.open_action(m.env.name, action.kind.value, action.host, action.reason)
    m.ctx.say(f"monitor: warm {action.host}: {action.reason}; refilling in the background")

    def done(ok: bool, detail: str) -> None:
        m.ctx.inventory.finish_action(record, ok, detail)
        m.ctx.say(f"monitor: warm {action.host}: {'done' if ok else 'FAILED'}: {detail}")
    m.refill.start(m.env.name, action.host, functools.partial(fill, m), done)


def _target(m: Monitor, host: str) -> Target:
    found = m.ctx.targets([host])
    return found[0] if found else m.lab.target(next(i for i in m.ctx.inventory.images(m.env.name) if i.name == host))


def _connect(m: Monitor, target: Target) -> None:
    """Log in to a host over the daemon's connections (a failure only makes the take's clock command slower)."""
    m.fleet.run([target], lambda t: m.fleet.sh(t, "true"), progress=False, timeout=10)


def _set_clock(m: Monitor, target: Target) -> str:
    """A VM paused for a while wakes with its clock behind: set it to the machine's (one SSH command)."""
    def step(t: Target) -> str:
        return f"{clock.quick(m.fleet, t):+.1f}"
    r = m.fleet.run([target], step, progress=False, timeout=10)[0]
    return f"; clock set (was {r.detail} s off)" if r.ok else f"; clock NOT set: {r.detail}"
