"""The monitor's warm pool in the state database: hosts booted, deployed, tested and paused, kept outside the
lb for a heal or a scale-up to take. A record names the host's handle PID when it was paused: a host stopped
(env_stop, image_stop, a crash) and booted again by anyone has another PID, so its record is void by itself."""

from __future__ import annotations

import time
from collections.abc import Mapping

from booted.state.inventory import Inventory


def warm_hosts(inv: Inventory, env: str, running: Mapping[str, int]) -> set[str]:
    """The environment's warm hosts that still run as the process that was paused."""
    rows = inv.db.execute("SELECT host, pid FROM warm WHERE env = ?", (env,))
    return {r["host"] for r in rows if running.get(r["host"]) == r["pid"]}


def set_warm(inv: Inventory, env: str, hosts: Mapping[str, int]) -> None:
    """Record `hosts` (name -> handle PID) as paused in the warm pool."""
    with inv.write() as db:
        db.executemany("INSERT INTO warm (host, env, pid, at) VALUES (?,?,?,?) ON CONFLICT(host) DO UPDATE SET"
                       " env=excluded.env, pid=excluded.pid, at=excluded.at",
                       [(h, env, pid, time.time()) for h, pid in hosts.items()])


def clear_warm(inv: Inventory, hosts: list[str]) -> None:
    """These hosts left the warm pool (taken, stopped, resumed by a user)."""
    if hosts:
        with inv.write() as db:
            db.executemany("DELETE FROM warm WHERE host = ?", [(h,) for h in hosts])
