"""One reconcile decision: desired (environments.py, the scaling rule's counts) against what was observed.
Pure: the daemon observes and acts; this says what to do and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from booted.environments import Environment, HostSpec
from booted.state.records import Pin


@dataclass(frozen=True)
class Observed:
    """One pass's view of the lab."""

    running: frozenset[str]  # hosts whose process runs (the provider)
    failures: dict[str, int] = field(default_factory=dict)  # failed health checks in a row (0: healthy)
    held: frozenset[str] = frozenset()  # stopped by a user: never restarted behind their back
    deployed: dict[str, str] = field(default_factory=dict)  # host -> version running there (the database)
    pins: dict[str, Pin] = field(default_factory=dict)  # host -> the version a user deployed there by hand
    warm: frozenset[str] = frozenset()  # paused in the warm pool (running, never serving, never checked)
    filling: frozenset[str] = frozenset()  # being booted for the warm pool in the background (counted as warm)


class Kind(StrEnum):
    """What the monitor does to a host (its value is what the actions table and the API say)."""

    HEAL = "heal"  # restart it, deploy, test: it failed its health checks (or the API asked)
    START = "start"  # boot a pool host: its role has fewer than wanted
    STOP = "stop"  # its role has more than wanted
    DEPLOY = "deploy"  # it runs another version than wanted (drift)
    TAKE = "take"  # resume a warm host, check it, put it in the lb: a heal or a scale-up without a boot
    WARM = "warm"  # boot, deploy, test and pause a pool host that is not running: the warm pool refills


@dataclass(frozen=True)
class Action:
    """One thing done to one host, and why."""

    kind: Kind
    host: str
    reason: str


@dataclass(frozen=True)
class Shortage:
    """A role wants more hosts than its pool can give: said and recorded nowhere else, nothing is done."""

    role: str
    reason: str


def managed(env: Environment) -> set[str]:
    """Roles whose size the monitor keeps: those with a min, max or target."""
    spec = env.monitor
    return set(env.minimum) | set(spec.maximum) | set(spec.target)


def decide(env: Environment, seen: Observed, wanted: dict[str, int]) -> list[Action | Shortage]:
    """What to do now: heal members failing their health check, start or stop pool hosts to reach
    `wanted[role]`, redeploy drifted versions, keep the role's warm pool. A heal or a start takes a warm host
    first; the pool refills (in the background) in a pass that boots nothing else for the role. A host being
    filled is neither serving nor spare: it counts as warm, and cannot be taken yet. Unmanaged roles are only
    healed."""
    actions: list[Action | Shortage] = []
    for role in sorted({h.role for h in env.hosts}):
        pool = sorted((h for h in env.hosts if h.role == role), key=lambda h: h.name)
        members = [h for h in pool if h.name in seen.running and h.name not in seen.held | seen.warm | seen.filling]
        warm = [h.name for h in pool if h.name in seen.warm and h.name not in seen.filling]
        mine = _heal(env, seen, members, warm) + _size(env, seen, role, pool, members, warm, wanted)
        booting = any(not isinstance(a, Action) or a.kind is not Kind.TAKE for a in mine)
        actions += mine + _warm_pool(env, seen, role, pool, warm, busy=booting)
        actions += _drift(env, seen, members)
    return actions


def _heal(env: Environment, seen: Observed, members: list[HostSpec], warm: list[str]) -> list[Action | Shortage]:
    """A member failing its checks is replaced by a warm host (and stopped), else restarted in place."""
    out: list[Action | Shortage] = []
    for h in members:
        failed = seen.failures.get(h.name, 0)
        if failed < env.monitor.failures:
            continue
        why = f"failed {failed} health checks in a row"
        if warm:
            taken = warm.pop(0)
            out += [Action(Kind.TAKE, taken, f"replaces {h.name}: {why}"),
                    Action(Kind.STOP, h.name, f"{why}; replaced by warm {taken}")]
        else:
            out.append(Action(Kind.HEAL, h.name, why))
    return out


def _size(env: Environment, seen: Observed, role: str, pool: list[HostSpec], members: list[HostSpec],
          warm: list[str], wanted: dict[str, int]) -> list[Action | Shortage]:
    """Start (warm hosts first) or stop pool hosts so a managed role has `wanted[role]` members."""
    if role not in managed(env):
        return []
    out: list[Action | Shortage] = []
    want = wanted.get(role, len(members))
    spare = [h for h in pool if h.name not in seen.running | seen.held | seen.filling]
    if len(members) < want:
        why = f"{role}: {len(members)} running, {want} wanted"
        need = want - len(members)
        taken, warm[:] = warm[:need], warm[need:]
        out += [Action(Kind.TAKE, name, f"{why} (from the warm pool)") for name in taken]
        need -= len(taken)
        out += [Action(Kind.START, h.name, why) for h in spare[:need]]
        if len(spare) < need:
            held = sorted(seen.held & {h.name for h in pool})
            out.append(Shortage(role, f"{role}: {want} wanted, pool exhausted"
                                + (f" ({', '.join(held)} stopped by a user)" if held else "")))
    elif len(members) > want:
        out += [Action(Kind.STOP, h.name, f"{role}: {len(members)} running, {want} wanted")
                for h in reversed(members[want:])]
    return out


def _warm_pool(env: Environment, seen: Observed, role: str, pool: list[HostSpec], warm: list[str],
               busy: bool) -> list[Action | Shortage]:
    """Keep `warm[role]` paused hosts: fill from pool hosts that are not running (never one a user started or
    stopped), drop a warm host running another version than wanted or beyond the count. Not while the role
    boots a host to heal or grow (`busy`; a take is no boot): serving comes first, the refill is the next
    pass. A host being filled counts."""
    keep = env.monitor.warm.get(role, 0)
    specs = {h.name: h for h in pool}
    stale = [w for w in warm if _drifted(specs[w], seen) is not None]
    out: list[Action | Shortage] = [Action(Kind.STOP, w, f"warm, but {_drifted(specs[w], seen)}: refilled")
                                    for w in stale]
    fresh = [w for w in warm if w not in stale]
    out += [Action(Kind.STOP, w, f"{role}: {len(fresh)} warm, {keep} wanted") for w in reversed(fresh[keep:])]
    have = len(fresh) + sum(1 for h in pool if h.name in seen.filling)
    if busy or have >= keep:
        return out
    cold = [h for h in pool if h.name not in seen.running | seen.held | seen.filling]
    return out + [Action(Kind.WARM, h.name, f"{role}: {have} warm, {keep} wanted") for h in cold[:keep - have]]


def _drifted(h: HostSpec, seen: Observed) -> str | None:
    """What a host runs when it is not the version it should (None: right, or not known)."""
    have, version = seen.deployed.get(h.name), wanted_version(h.name, h.version, seen.pins)
    if h.service and version and have is not None and have != version:
        return f"runs {h.service} {have}, {version} wanted"
    return None


def _drift(env: Environment, seen: Observed, members: list[HostSpec]) -> list[Action | Shortage]:
    out: list[Action | Shortage] = []
    for h in members:
        drift = _drifted(h, seen)
        if drift and seen.failures.get(h.name, 0) < env.monitor.failures:
            pin = seen.pins.get(h.name)
            why = f" (environments.py changed since a user deployed {pin.version})" if pin else ""
            out.append(Action(Kind.DEPLOY, h.name, drift + why))
    return out


def wanted_version(host: str, version: str | None, pins: dict[str, Pin]) -> str | None:
    """The version a host should run: a user's pin while environments.py still names what it named then."""
    pin = pins.get(host)
    return pin.version if pin is not None and pin.holds(version) else version
