"""What a chaos run is, as the user writes it on `fab chaos` (`--kill role=worker`, `--impair
host=web01,delay=100ms,for=10`, `--load 20`, `--max-failed 0`, `--max-p99 250`), parsed and checked once
here. Pure: no I/O; ValueError says what is wrong and what is allowed (the task turns it into a ConfigError)."""

from __future__ import annotations

from dataclasses import dataclass

from booted.environments.impairment import KEYS as IMPAIR_KEYS
from booted.environments.impairment import Impairment, impairment
from booted.rules import HOST_NAME

KILL_WHAT = ("host", "service")  # kill -9 of the whole host (its processes), or of its service's process
MAX_DURATION = 3600.0  # seconds: a run is bounded
MAX_RATE = 500.0  # requests/s: the load generator is bounded too


@dataclass(frozen=True)
class Kill:
    """Which hosts a run kills: one serving host of `role` at a time; `what` is the host or its service."""

    role: str
    what: str = "host"


@dataclass(frozen=True)
class LinkFault:
    """A host's link impaired from `at` seconds into the run for `seconds`, then cleared."""

    host: str
    spec: Impairment
    seconds: float
    at: float | None = None  # None: a third into the run

    def label(self) -> str:
        return "impair " + ",".join(f"{k}={v}" for k, v in self.spec.as_dict().items())


@dataclass(frozen=True)
class Slo:
    """What the run must show to pass (None: not asked)."""

    max_failed: int | None = None
    max_p99_ms: float | None = None


@dataclass(frozen=True)
class Plan:
    duration: float
    kill_every: float  # 0: no kills
    kill: Kill | None
    impair: LinkFault | None
    rate: float
    slo: Slo


def pairs(text: str, what: str) -> dict[str, str]:
    """'a=1,b=2' -> {'a': '1', 'b': '2'} (each key once)."""
    out: dict[str, str] = {}
    for item in text.split(","):
        key, eq, value = item.strip().partition("=")
        if not eq or not key or not value:
            raise ValueError(f"--{what} {text!r}: write key=value pairs separated by commas")
        if key in out:
            raise ValueError(f"--{what} {text!r}: {key} given twice")
        out[key] = value.strip()
    return out


def seconds(text: str, what: str) -> float:
    """'10' or '10s' or '1500ms' -> seconds."""
    raw = text.strip().lower()
    try:
        value = float(raw[:-2]) / 1000 if raw.endswith("ms") else float(raw.removesuffix("s"))
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a time: write it like 10 or 10s") from None
    if not 0 <= value <= MAX_DURATION:
        raise ValueError(f"{what}: {text!r}: from 0 to {MAX_DURATION:g} seconds")
    return value


def parse_kill(text: str) -> Kill | None:
    """'role=worker[,what=service]' -> Kill; 'none' -> None (no kills)."""
    if text.strip() == "none":
        return None
    given = pairs(text, "kill")
    unknown = sorted(set(given) - {"role", "what"})
    if unknown or "role" not in given:
        raise ValueError(f"--kill {text!r}: say role=ROLE and optionally what=host|service "
                         f"(unknown: {', '.join(unknown) or '-'}), or --kill none")
    role, what = given["role"], given.get("what", "host")
    if not HOST_NAME.match(role):
        raise ValueError(f"--kill {text!r}: {role!r} is not a role name (lower case letters, digits, '-')")
    if what not in KILL_WHAT:
        raise ValueError(f"--kill {text!r}: what={what!r}: one of {', '.join(KILL_WHAT)}")
    return Kill(role, what)


def parse_impair(text: str) -> LinkFault:
    """'host=web01,delay=100ms[,jitter=..][,loss=..][,rate=..],for=10[,at=20]' -> LinkFault."""
    given = pairs(text, "impair")
    unknown = sorted(set(given) - {"host", "for", "at", *IMPAIR_KEYS})
    if unknown or "host" not in given or "for" not in given:
        raise ValueError(f"--impair {text!r}: say host=NAME, what to impair ({', '.join(IMPAIR_KEYS)}), for=SECONDS "
                         f"and optionally at=SECONDS (unknown: {', '.join(unknown) or '-'})")
    if not HOST_NAME.match(given["host"]):
        raise ValueError(f"--impair {text!r}: {given['host']!r} is not a host name")
    try:
        spec = impairment({k: v for k, v in given.items() if k in IMPAIR_KEYS})
    except ValueError as exc:
        raise ValueError(f"--impair {text!r}: {exc}") from None
    if not spec:
        raise ValueError(f"--impair {text!r}: say what to impair: delay=100ms, jitter=10ms, loss=1%, rate=10mbit")
    at = seconds(given["at"], "--impair at") if "at" in given else None
    return LinkFault(given["host"], spec, seconds(given["for"], "--impair for"), at)


def plan(duration: float, kill_every: float, kill: str, impair: str | None, rate: float,
         max_failed: int | None, max_p99: float | None) -> Plan:
    """The task's flags -> a checked Plan."""
    if not 1 <= duration <= MAX_DURATION:
        raise ValueError(f"--duration {duration:g}: from 1 to {MAX_DURATION:g} seconds")
    if kill_every < 0 or (0 < kill_every < 1):
        raise ValueError(f"--kill-every {kill_every:g}: at least 1 second (0: no kills)")
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"--load {rate:g}: from more than 0 to {MAX_RATE:g} requests/s")
    if max_failed is not None and max_failed < 0:
        raise ValueError(f"--max-failed {max_failed}: 0 or more")
    if max_p99 is not None and max_p99 <= 0:
        raise ValueError(f"--max-p99 {max_p99:g}: milliseconds, more than 0")
    fault = parse_impair(impair) if impair else None
    if fault is not None and fault.at is not None and fault.at >= duration:
        raise ValueError(f"--impair at={fault.at:g}: after the run's end (--duration {duration:g})")
    return Plan(duration, kill_every, parse_kill(kill), fault, rate, Slo(max_failed, max_p99))
