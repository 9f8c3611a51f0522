"""When a chaos run does what, and which host it kills. Pure decisions (no I/O, no clock): the run asks,
then acts. A role's last serving host is never chosen."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from booted.chaos.spec import Plan


class Step(enum.Enum):
    KILL = "kill"
    IMPAIR = "impair"
    CLEAR = "clear"


@dataclass(frozen=True)
class Due:
    at: float  # seconds into the run
    step: Step


def steps(plan: Plan) -> list[Due]:
    """Every step of the run in order: a kill each `kill_every` seconds (the first after one interval, none at
    or after the end), the link impaired at its `at` (default: `default_at`) and cleared `seconds`
    later (at the latest at the end)."""
    out: list[Due] = []
    if plan.kill is not None and plan.kill_every > 0:
        n = 1
        while n * plan.kill_every < plan.duration:
            out.append(Due(n * plan.kill_every, Step.KILL))
            n += 1
    if plan.impair is not None:
        start = plan.impair.at if plan.impair.at is not None else default_at(plan)
        out.append(Due(start, Step.IMPAIR))
        out.append(Due(min(plan.duration, start + plan.impair.seconds), Step.CLEAR))
    order = {Step.CLEAR: 0, Step.KILL: 1, Step.IMPAIR: 2}
    return sorted(out, key=lambda d: (d.at, order[d.step]))


def default_at(plan: Plan) -> float:
    """When a link is impaired unless the user says: a third into the run, moved to halfway between two kills
    (so the two are told apart in the report) when that is still within the run."""
    third = plan.duration / 3
    if plan.kill is None or plan.kill_every <= 0:
        return third
    between = (third // plan.kill_every) * plan.kill_every + plan.kill_every / 2
    return between if between < plan.duration else third


def due(schedule: list[Due], elapsed: float) -> tuple[list[Due], list[Due]]:
    """(steps due by `elapsed`, the rest)."""
    return [d for d in schedule if d.at <= elapsed], [d for d in schedule if d.at > elapsed]


def victim(serving: list[str], down: set[str], turn: int) -> tuple[str | None, str]:
    """The host to kill among a role's serving hosts (those not already down), taking turns; (None, why)
    when killing one would leave the role with no serving host."""
    alive = sorted(h for h in serving if h not in down)
    if len(alive) <= 1:
        last = alive[0] if alive else "none"
        return None, f"skipped: {len(alive)} serving host(s) ({last}); never the role's last serving host"
    return alive[turn % len(alive)], ""
