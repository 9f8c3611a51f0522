"""The load the monitor scales on: requests per second each lb served between two passes, from the counters
its own /health reports, summed per role of the lb's upstream."""

from __future__ import annotations

from collections.abc import Mapping

from booted.environments import Environment
from booted.remote.services import Service


def measure(env: Environment, services: Mapping[str, Service], counters: dict[str, tuple[float, int]],
            health: dict[str, dict[str, object]], now: float) -> dict[str, float]:
    """Requests per second each lb served since the last pass, summed per role of its upstream."""
    by_service: dict[str, set[str]] = {}
    for h in env.hosts:
        if h.service:
            by_service.setdefault(h.service, set()).add(h.role)
    load: dict[str, float] = {}
    for name, data in health.items():
        count = data.get("requests")
        spec = next((h for h in env.hosts if h.name == name), None)
        if not isinstance(count, int) or spec is None or spec.service is None or spec.service not in services:
            continue
        upstream = services[spec.service].upstream
        before = counters.get(name)
        counters[name] = (now, count)
        if before is None or upstream is None or now <= before[0] or count < before[1]:
            continue
        rate = (count - before[1]) / (now - before[0])
        for role in by_service.get(upstream, set()):
            load[role] = load.get(role, 0.0) + rate
    return load
