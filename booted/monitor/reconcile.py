"""One reconcile decision: desired (environments.py, the scaling rule's counts) against what was observed.
Pure: the daemon observes and acts; this says what to do and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from booted.environments import Environment
from booted.state.records import Pin


@dataclass(frozen=True)
class Observed:
    """One pass's view of the lab."""

    running: frozenset[str]  # hosts whose process runs (the provider)
    failures: dict[str, int] = field(default_factory=dict)  # failed health checks in a row (0: healthy)
    held: frozenset[str] = frozenset()  # stopped by a user: never restarted behind their back
    deployed: dict[str, str] = field(default_factory=dict)  # host -> version running there (the database)
    pins: dict[str, Pin] = field(default_factory=dict)  # host -> the version a user deployed there by hand


class Kind(StrEnum):
    """What the monitor does to a host (its value is what the actions table and the API say)."""

    HEAL = "heal"  # restart it, deploy, test: it failed its health checks (or the API asked)
    START = "start"  # boot a pool host: its role has fewer than wanted
    STOP = "stop"  # its role has more than wanted
    DEPLOY = "deploy"  # it runs another version than wanted (drift)


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
    `wanted[role]`, redeploy drifted versions. Hosts of unmanaged roles are only healed."""
    actions: list[Action | Shortage] = []
    limit = env.monitor.failures
    for role in sorted({h.role for h in env.hosts}):
        pool = sorted((h for h in env.hosts if h.role == role), key=lambda h: h.name)
        members = [h for h in pool if h.name in seen.running and h.name not in seen.held]
        for h in members:
            if seen.failures.get(h.name, 0) >= limit:
                actions.append(Action(Kind.HEAL, h.name, f"failed {seen.failures[h.name]} health checks in a row"))
        if role in managed(env):
            want = wanted.get(role, len(members))
            spare = [h for h in pool if h.name not in seen.running and h.name not in seen.held]
            if len(members) < want:
                why = f"{role}: {len(members)} running, {want} wanted"
                actions += [Action(Kind.START, h.name, why) for h in spare[:want - len(members)]]
                if len(spare) < want - len(members):
                    held = sorted(seen.held & {h.name for h in pool})
                    actions.append(Shortage(role, f"{role}: {want} wanted, pool exhausted"
                                            + (f" ({', '.join(held)} stopped by a user)" if held else "")))
            elif len(members) > want:
                extra = members[want:]
                actions += [Action(Kind.STOP, h.name, f"{role}: {len(members)} running, {want} wanted")
                            for h in reversed(extra)]
        for h in members:
            have, version = seen.deployed.get(h.name), wanted_version(h.name, h.version, seen.pins)
            if h.service and version and have is not None and have != version \
                    and seen.failures.get(h.name, 0) < limit:
                pin = seen.pins.get(h.name)
                why = f" (environments.py changed since a user deployed {pin.version})" if pin else ""
                actions.append(Action(Kind.DEPLOY, h.name, f"runs {h.service} {have}, {version} wanted{why}"))
    return actions


def wanted_version(host: str, version: str | None, pins: dict[str, Pin]) -> str | None:
    """The version a host should run: a user's pin while environments.py still names what it named then."""
    pin = pins.get(host)
    return pin.version if pin is not None and pin.holds(version) else version
