"""Versions a user deployed by hand (`<service>_deploy --version V`, `<service>_rollback`): the monitor keeps
them instead of "fixing the drift" back to environments.py, until environments.py's version for the host
changes (then the file wins again) or the host starts afresh (env_start_*, env_stop)."""

from __future__ import annotations

import time

from booted.state.inventory import Inventory
from booted.state.records import Pin


def pins(inv: Inventory) -> dict[str, Pin]:
    """host -> its pin (one service per host)."""
    return {r["host"]: Pin(r["host"], r["service"], r["version"], r["env_version"])
            for r in inv.db.execute("SELECT host, service, version, env_version FROM pins")}


def set_pins(inv: Inventory, new: list[Pin]) -> None:
    with inv.write() as db:
        db.executemany("INSERT INTO pins (host, service, version, env_version, at) VALUES (?,?,?,?,?)"
                       " ON CONFLICT(host, service) DO UPDATE SET version=excluded.version,"
                       " env_version=excluded.env_version, at=excluded.at",
                       [(p.host, p.service, p.version, p.env_version, time.time()) for p in new])


def clear_pins(inv: Inventory, hosts: list[str]) -> None:
    if not hosts:  # the monitor asks every pass: no write transaction for nothing
        return
    with inv.write() as db:
        db.executemany("DELETE FROM pins WHERE host = ?", [(h,) for h in hosts])


def record_by_user(inv: Inventory, service: str, hosts: list[str], env_versions: dict[str, str | None]) -> list[Pin]:
    """After a user's deploy or rollback on `hosts` (those that succeeded): a host now running another version
    than environments.py's is pinned to it; one running environments.py's version is unpinned."""
    running = inv.releases()
    pinned, unpinned = [], []
    for host in hosts:
        have, want = running.get((host, service)), env_versions.get(host)
        if have is None or have == (want or have):
            unpinned.append(host)
        else:
            pinned.append(Pin(host, service, have, want or ""))
    clear_pins(inv, unpinned)
    set_pins(inv, pinned)
    return pinned
