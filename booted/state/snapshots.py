"""Snapshots in the state database: the events (a snapshot taken, a restore and how far it got, a deletion),
the hosts a snapshot has paused (so that a run killed while they were paused lets the next run resume them),
and booted's own records of an environment as a snapshot keeps them (what each host runs, its pin, whether a
user stopped it). The snapshots' files live under the state directory (booted/snapshots/store.py)."""

from __future__ import annotations

import time
from typing import Any

from booted.state.inventory import Inventory

SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshot_events (
    id INTEGER PRIMARY KEY, env TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    step TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '', started REAL NOT NULL, finished REAL
);
CREATE TABLE IF NOT EXISTS snapshot_paused (
    env TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY (env, host)
);
"""
Records = dict[str, Any]  # what capture() returns: JSON, kept in the snapshot's manifest


def ensure(inv: Inventory) -> None:
    inv.db.executescript(SCHEMA)


# events ------------------------------------------------------------------------------------------
def open_event(inv: Inventory, env: str, name: str, kind: str) -> int:
    ensure(inv)
    with inv.write() as db:
        cur = db.execute("INSERT INTO snapshot_events (env, name, kind, status, started) VALUES (?,?,?,"
                         "'in progress',?)", (env, name, kind, time.time()))
        return int(cur.lastrowid or 0)


def set_step(inv: Inventory, event: int, step: str) -> None:
    with inv.write() as db:
        db.execute("UPDATE snapshot_events SET step = ? WHERE id = ?", (step, event))


def finish_event(inv: Inventory, event: int, ok: bool, detail: str) -> None:
    with inv.write() as db:
        db.execute("UPDATE snapshot_events SET status = ?, detail = ?, finished = ? WHERE id = ?",
                   ("done" if ok else "failed", detail[:500], time.time(), event))


def unfinished_restore(inv: Inventory, env: str) -> tuple[int, str, str] | None:
    """The environment's last restore if it never finished (killed, or failed half-way): (event, snapshot
    name, the last step it recorded). A restore that ends (either way) or a newer one replaces it."""
    ensure(inv)
    row = inv.db.execute("SELECT id, name, step, status FROM snapshot_events WHERE env = ? AND kind = 'restore'"
                         " ORDER BY id DESC LIMIT 1", (env,)).fetchone()
    if row is None or row["status"] == "done":
        return None
    return int(row["id"]), str(row["name"]), str(row["step"])


def events(inv: Inventory, env: str, limit: int = 20) -> list[dict[str, object]]:
    ensure(inv)
    return [dict(r) for r in inv.db.execute("SELECT * FROM snapshot_events WHERE env = ? ORDER BY id DESC"
                                            " LIMIT ?", (env, limit))]


# paused hosts ------------------------------------------------------------------------------------
def record_paused(inv: Inventory, env: str, hosts: list[str], pid: int) -> None:
    """Before the hosts are paused: a run killed while they are finds them here (resume_leftovers)."""
    ensure(inv)
    now = time.time()
    with inv.write() as db:
        db.executemany("INSERT OR REPLACE INTO snapshot_paused (env, host, pid, at) VALUES (?,?,?,?)",
                       [(env, h, pid, now) for h in hosts])


def paused(inv: Inventory, env: str) -> dict[str, int]:
    """host -> the PID of the run that paused it."""
    ensure(inv)
    return {r["host"]: int(r["pid"]) for r in inv.db.execute("SELECT host, pid FROM snapshot_paused WHERE env = ?",
                                                              (env,))}


def clear_paused(inv: Inventory, env: str, hosts: list[str]) -> None:
    with inv.write() as db:
        db.executemany("DELETE FROM snapshot_paused WHERE env = ? AND host = ?", [(env, h) for h in hosts])


# booted's records of an environment ----------------------------------------------------------------
def capture(inv: Inventory, env: str) -> Records:
    """What the database says of the environment's hosts now: releases, pins, user holds."""
    hosts = {i.name: i for i in inv.images(env)}
    releases = [dict(r) for r in inv.db.execute("SELECT host, service, version FROM releases ORDER BY host")
                if r["host"] in hosts]
    pin_rows = [dict(r) for r in inv.db.execute("SELECT host, service, version, env_version FROM pins ORDER BY host")
                if r["host"] in hosts]
    listed = [dict(r) for r in inv.db.execute("SELECT name, ip, mac, hostkey, booted_at, serving FROM hosts")
              if r["name"] in hosts]
    return {"releases": releases, "pins": pin_rows, "held": sorted(n for n, i in hosts.items() if i.held),
            "listed": listed, "tokens": {n: i.boot_token for n, i in hosts.items() if i.boot_token}}


def put_listed(inv: Inventory, hosts: list[str], records: Records) -> list[str]:
    """Hosts that continue from a snapshot (their memory was saved: they do not boot, so never phone home)
    back on the host list as the snapshot had them, with their boot tokens; returns those listed."""
    rows = [r for r in records.get("listed", []) if r["name"] in hosts]
    tokens = records.get("tokens", {})
    now = time.time()
    with inv.write() as db:
        db.executemany("INSERT OR REPLACE INTO hosts (name, ip, mac, hostkey, booted_at, reachable, checked_at,"
                       " serving) VALUES (?,?,?,?,?,1,?,?)",
                       [(r["name"], r["ip"], r["mac"], r["hostkey"], r["booted_at"], now, r["serving"]) for r in rows])
        db.executemany("UPDATE images SET boot_token = ? WHERE name = ?",
                       [(tokens[h], h) for h in hosts if h in tokens])
    return [r["name"] for r in rows]


def put_back(inv: Inventory, hosts: list[str], records: Records) -> None:
    """The records of `hosts` as `records` has them, in one transaction (holds made since are cleared)."""
    now = time.time()
    held = set(records.get("held", []))
    with inv.write() as db:
        for host in hosts:
            db.execute("DELETE FROM releases WHERE host = ?", (host,))
            db.execute("DELETE FROM pins WHERE host = ?", (host,))
            db.execute("UPDATE images SET held = ? WHERE name = ?", (int(host in held), host))
        db.executemany("INSERT INTO releases (host, service, version, at) VALUES (?,?,?,?)",
                       [(r["host"], r["service"], r["version"], now) for r in records.get("releases", [])
                        if r["host"] in hosts])
        db.executemany("INSERT INTO pins (host, service, version, env_version, at) VALUES (?,?,?,?,?)",
                       [(p["host"], p["service"], p["version"], p["env_version"], now)
                        for p in records.get("pins", []) if p["host"] in hosts])
