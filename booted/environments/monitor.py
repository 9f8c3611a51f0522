"""The monitor's part of an environment: per role `min` (exists), `max`, a load `target` and a `warm` pool
(spare hosts kept booted, deployed, tested and paused), and the loop's settings. Checked with the rest of
environments.py (file:line errors)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from booted.errors import ConfigError

MONITOR_KEYS = {"interval", "window", "failures", "tolerance"}


@dataclass(frozen=True)
class MonitorSpec:
    """How the monitor runs an environment."""

    maximum: dict[str, int] = field(default_factory=dict)  # role -> most hosts (default: its pool)
    target: dict[str, float] = field(default_factory=dict)  # role -> requests/s per host, measured at the lb
    interval: float = 3.0  # seconds between two reconcile passes
    window: float = 300.0  # scale-down stabilization window, seconds (Kubernetes HPA's default)
    failures: int = 3  # failed health checks in a row before a host is healed
    tolerance: float = 0.1  # load within target x (1 +- tolerance) changes nothing
    warm: dict[str, int] = field(default_factory=dict)  # role -> spare hosts kept paused, outside the lb

    def bounds(self, role: str, minimum: dict[str, int], pool: int) -> tuple[int, int]:
        """(min, max) of a role: max defaults to its pool (the role's hosts in environments.py), so without a
        `max` the monitor never stops a healthy host a user started."""
        low = minimum.get(role, 0)
        return low, max(low, self.maximum.get(role, pool))


def _number(value: Any) -> bool:
    """A finite number: not a bool, not NaN or infinity (which pass or break every comparison)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)


def parse_monitor(env: str, value: dict[str, Any], roles: dict[str, int], minimum: dict[str, int],
                  at: Callable[..., str]) -> MonitorSpec:
    """The environment's `max`, `target` and `monitor` keys; every mistake names file:line and the fix."""
    maximum: dict[str, int] = {}
    raw = value.get("max", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{at(env, 'max')}: environment {env!r}: 'max' must be a dict ROLE -> COUNT")
    for role, count in raw.items():
        if role not in roles:
            raise ConfigError(f"{at(env, 'max', str(role))}: environment {env!r}: max: no host has role {role!r}"
                              f" (roles: {', '.join(sorted(roles))})")
        low = minimum.get(role, 0)
        if not _number(count) or count != int(count) or not low <= count <= roles[role]:
            raise ConfigError(f"{at(env, 'max', str(role))}: environment {env!r}: max[{role!r}] = {count!r}: a "
                              f"whole number from min ({low}) to {roles[role]} (the hosts with that role are its pool)")
        maximum[role] = int(count)
    target: dict[str, float] = {}
    raw = value.get("target", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{at(env, 'target')}: environment {env!r}: 'target' must be a dict ROLE -> requests "
                          "per second per host")
    for role, rate in raw.items():
        if role not in roles:
            raise ConfigError(f"{at(env, 'target', str(role))}: environment {env!r}: target: no host has role "
                              f"{role!r} (roles: {', '.join(sorted(roles))})")
        if not _number(rate) or rate <= 0:
            raise ConfigError(f"{at(env, 'target', str(role))}: environment {env!r}: target[{role!r}] = "
                              f"{rate!r}: requests per second per host, a number above 0")
        target[role] = float(rate)
    settings = value.get("monitor", {})
    if not isinstance(settings, dict) or set(settings) - MONITOR_KEYS:
        raise ConfigError(f"{at(env, 'monitor')}: environment {env!r}: 'monitor' takes "
                          f"{', '.join(sorted(MONITOR_KEYS))}")
    checks: dict[str, tuple[float, float]] = {"interval": (0.2, 3600.0), "window": (0.0, 86400.0),
                                              "failures": (1, 100), "tolerance": (0.0, 0.9)}
    for key, (lo, hi) in checks.items():
        got = settings.get(key)
        if got is not None and (not _number(got) or not lo <= got <= hi
                                or (key == "failures" and got != int(got))):
            raise ConfigError(f"{at(env, 'monitor', key)}: environment {env!r}: monitor {key} = {got!r}: "
                              f"{lo:g}..{hi:g}")
    defaults = MonitorSpec()
    return MonitorSpec(maximum, target, float(settings.get("interval", defaults.interval)),
                       float(settings.get("window", defaults.window)), int(settings.get("failures", defaults.failures)),
                       float(settings.get("tolerance", defaults.tolerance)), parse_warm(env, value, roles, minimum, at))


def parse_warm(env: str, value: dict[str, Any], roles: dict[str, int], minimum: dict[str, int],
               at: Callable[..., str]) -> dict[str, int]:
    """`warm`: role -> spare hosts of its pool kept paused; they must leave the role's `min` room to serve."""
    raw = value.get("warm", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{at(env, 'warm')}: environment {env!r}: 'warm' must be a dict ROLE -> COUNT "
                          "(e.g. 'warm': {'worker': 1})")
    warm: dict[str, int] = {}
    for role, count in raw.items():
        if role not in roles:
            raise ConfigError(f"{at(env, 'warm', str(role))}: environment {env!r}: warm: no host has role "
                              f"{role!r} (roles: {', '.join(sorted(roles))})")
        room = roles[role] - minimum.get(role, 0)
        if not _number(count) or count != int(count) or not 0 <= count <= room:
            raise ConfigError(f"{at(env, 'warm', str(role))}: environment {env!r}: warm[{role!r}] = {count!r}: a "
                              f"whole number from 0 to {room} (the role's {roles[role]} host(s) less its min "
                              f"{minimum.get(role, 0)}: warm hosts come from the pool not serving)")
        warm[role] = int(count)
    return warm
