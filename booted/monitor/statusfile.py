"""The daemon's last pass as a file (what monitor_status shows), written atomically after every pass."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from booted.environments import Environment
from booted.monitor.reconcile import Observed


def status_file(state_dir: Path, env: str) -> Path:
    """Where the daemon writes its last pass (what monitor_status shows)."""
    return state_dir / "monitor" / f"{env}.json"


def write_status(path: Path, env: Environment, seen: Observed, wanted: dict[str, int],
                 health: dict[str, dict[str, object]], load: dict[str, float]) -> dict[str, object]:
    roles = {}
    for role in sorted({h.role for h in env.hosts}):
        hosts = [h.name for h in env.hosts if h.role == role]
        roles[role] = {"wanted": wanted.get(role), "running": [h for h in hosts if h in seen.running - seen.warm],
                       "warm": [h for h in hosts if h in seen.warm],
                       "healthy": [h for h in hosts if h in health and seen.failures.get(h, 0) == 0],
                       "held": [h for h in hosts if h in seen.held], "load": load.get(role)}
    lbs = {name: h["servers"] for name, h in sorted(health.items()) if isinstance(h.get("servers"), dict)}
    data = {"env": env.name, "pid": os.getpid(), "at": time.time(), "roles": roles, "lbs": lbs}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return data
