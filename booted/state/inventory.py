"""The state store: one SQLite database (WAL) shared by `fab` runs and the monitor daemon.

Tables: images (one lab host's machine and its leased identity), hosts (the current host list,
filled from the boot log), boot_events, bootlog_cursor, deployments + deployment_hosts, releases
(what each host runs now). Every write is a short transaction; leases use BEGIN IMMEDIATE so two
processes never hand out the same IP.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from booted.errors import StateError
from booted.results import HostResult
from booted.state.private import make_private
from booted.state.records import SCHEMA, BootEvent, Host, Image, mac_for

__all__ = ["BootEvent", "Host", "Image", "Inventory", "mac_for"]


class Inventory:
    """Typed access to the state database. Open one per process; it is cheap. Each thread that uses it
    (a fan-out records what it deployed host by host) gets its own SQLite connection, so transactions of
    two threads never mix."""

    def __init__(self, path: Path) -> None:
        make_private(path)  # boot tokens: readable by the state directory's owner only
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.db.executescript(SCHEMA)
        columns = {r["name"] for r in self.db.execute("PRAGMA table_info(images)")}
        for column, kind in (("boot_token", "TEXT"), ("held", "INTEGER NOT NULL DEFAULT 0"),
                             ("hypervisor", "TEXT NOT NULL DEFAULT ''")):
            if column not in columns:  # a state database made by an earlier booted
                with self.write() as db:
                    db.execute(f"ALTER TABLE images ADD COLUMN {column} {kind}")
        if "serving" not in {r["name"] for r in self.db.execute("PRAGMA table_info(hosts)")}:
            with self.write() as db:
                db.execute("ALTER TABLE hosts ADD COLUMN serving TEXT NOT NULL DEFAULT ''")

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the lock up front (no upgrade deadlocks between processes)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # images and leases -------------------------------------------------------------------------
    def images(self, env: str | None = None) -> list[Image]:
        sql = "SELECT * FROM images"
        args: tuple[str, ...] = ()
        if env is not None:
            sql, args = sql + " WHERE env = ?", (env,)
        return [Image(**dict(row)) for row in self.db.execute(sql + " ORDER BY name", args)]

    def images_named(self, names: set[str]) -> dict[str, Image]:
        """The images of these names (those that exist), without reading the others."""
        out: dict[str, Image] = {}
        ordered = sorted(names)
        for i in range(0, len(ordered), 500):  # SQLite's limit on parameters
            chunk = ordered[i:i + 500]
            rows = self.db.execute(f"SELECT * FROM images WHERE name IN ({','.join('?' * len(chunk))})", chunk)
            out.update({row["name"]: Image(**dict(row)) for row in rows})
        return out

    def image(self, name: str) -> Image | None:
        row = self.db.execute("SELECT * FROM images WHERE name = ?", (name,)).fetchone()
        return Image(**dict(row)) if row else None

    def lease(self, *, name: str, env: str, provider: str, network: ipaddress.IPv4Network, role: str,
              service: str | None, version: str | None, hostkey: str, memory: int = 256, cpus: int = 1) -> Image:
        """Create the image record with the lowest free IP of `network` (the first address is the gateway)."""
        with self.write() as db:
            row = db.execute("SELECT env FROM images WHERE name = ?", (name,)).fetchone()
            if row:
                raise StateError(f"host image {name!r} already exists (environment {row['env']!r}); "
                                 f"delete it with 'fab image_del {name}' or pick another name")
            used = {r["ip"] for r in db.execute("SELECT ip FROM images WHERE env = ?", (env,))}
            candidates = list(network.hosts())[1:]  # [0] is the gateway (the bridge / nginx)
            free = next((ip for ip in candidates if str(ip) not in used), None)
            if free is None:
                raise StateError(f"network {network} of environment {env!r} has no free address left "
                                 f"({len(used)} leased): delete images or use a larger network")
            db.execute(
                "INSERT INTO images (name, env, provider, role, service, version, ip, mac, hostkey, memory, cpus,"
                " created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (name, env, provider, role, service, version, str(free), mac_for(free), hostkey, memory, cpus,
                 time.time()))
        image = self.image(name)
        assert image is not None
        return image

    def update_spec(self, name: str, provider: str, role: str, service: str | None, version: str | None,
                    memory: int, cpus: int) -> None:
        """Follow environments.py when a host's provider/role/service/version changed; identity stays."""
        with self.write() as db:
            db.execute("UPDATE images SET provider=?, role=?, service=?, version=?, memory=?, cpus=? WHERE name=?",
                       (provider, role, service, version, memory, cpus, name))

    def set_boot_token(self, name: str, token: str) -> None:
        with self.write() as db:
            db.execute("UPDATE images SET boot_token = ? WHERE name = ?", (token, name))

    def set_hypervisors(self, placement: dict[str, str]) -> None:
        """Record where hosts were placed (libvirt: the hypervisor their disks live on)."""
        with self.write() as db:
            db.executemany("UPDATE images SET hypervisor = ? WHERE name = ?", [(hv, n) for n, hv in placement.items()])

    def set_held(self, names: list[str], held: bool) -> None:
        """Mark hosts stopped by a user (held) or started again (not held)."""
        with self.write() as db:
            db.executemany("UPDATE images SET held = ? WHERE name = ?", [(int(held), n) for n in names])

    # the monitor's actions -------------------------------------------------------------------------
    def open_action(self, env: str, kind: str, host: str, reason: str) -> int:
        with self.write() as db:
            cur = db.execute("INSERT INTO actions (env, kind, host, reason, status, started) VALUES (?,?,?,?,"
                             "'in progress',?)", (env, kind, host, reason, time.time()))
            return int(cur.lastrowid or 0)

    def finish_action(self, action: int, ok: bool, detail: str) -> None:
        with self.write() as db:
            db.execute("UPDATE actions SET status=?, detail=?, finished=? WHERE id=?",
                       ("done" if ok else "failed", detail[:500], time.time(), action))

    def interrupt_actions(self, env: str) -> int:
        """Actions a killed daemon left in progress: failed (the next pass redoes what is still needed)."""
        with self.write() as db:
            return db.execute("UPDATE actions SET status='failed', detail='interrupted (the monitor was "
                              "stopped or killed)', finished=? WHERE env=? AND status='in progress'",
                              (time.time(), env)).rowcount

    def action_totals(self, env: str) -> tuple[dict[tuple[str, str], int], dict[str, list[float]]]:
        """Every action the monitor of `env` ever recorded: count per (kind, status), and the seconds each
        finished heal and start took (metrics that only grow; no window)."""
        counts = {(r["kind"], r["status"]): r["n"] for r in self.db.execute(
            "SELECT kind, status, COUNT(*) AS n FROM actions WHERE env = ? GROUP BY kind, status", (env,))}
        took: dict[str, list[float]] = {}
        for r in self.db.execute("SELECT kind, finished - started AS s FROM actions WHERE env = ? AND status = 'done'"
                                 " AND finished IS NOT NULL AND kind IN ('heal', 'start', 'take')", (env,)):
            took.setdefault(r["kind"], []).append(float(r["s"]))
        return counts, took

    def actions(self, env: str, limit: int = 20) -> list[dict[str, object]]:
        rows = self.db.execute("SELECT * FROM actions WHERE env = ? ORDER BY id DESC LIMIT ?", (env, limit))
        return [dict(r) for r in rows]

    def set_running(self, name: str, pid: int | None) -> None:
        with self.write() as db:
            db.execute("UPDATE images SET pid = ?, started = ? WHERE name = ?",
                       (pid, time.time() if pid else None, name))

    def forget_releases(self, host: str) -> None:
        """The host's disk was discarded: nothing is deployed there any more (nor pinned)."""
        with self.write() as db:
            db.execute("DELETE FROM releases WHERE host = ?", (host,))
            db.execute("DELETE FROM pins WHERE host = ?", (host,))

    def release_image(self, name: str) -> None:
        """Delete the image record: its IP and MAC go back to the pool."""
        with self.write() as db:
            for table in ("images", "hosts", "releases", "pins", "guest_times", "timelines"):
                db.execute(f"DELETE FROM {table} WHERE {'name' if table in ('images', 'hosts') else 'host'} = ?",
                           (name,))

    # boot events and the current host list ----------------------------------------------------
    def bootlog_cursor(self, log: str) -> tuple[int, int, int, int]:
        row = self.db.execute("SELECT inode, offset, lines, skipped FROM bootlog_cursor WHERE log = ?",
                              (log,)).fetchone()
        return (row["inode"], row["offset"], row["lines"], row["skipped"]) if row else (0, 0, 0, 0)

    def bootlog_reset(self, log: str) -> None:
        """Forget how far the boot log was read (hosts_reset re-reads it from the start)."""
        with self.write() as db:
            db.execute("DELETE FROM bootlog_cursor WHERE log = ?", (log,))

    def record_boots(self, log: str, events: list[BootEvent], cursor: tuple[int, int, int, int],
                     also: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Store new boot events, move the cursor and update the host list (and `also`), in one transaction."""
        latest: dict[str, BootEvent] = {}  # only a host's latest boot can change its host-list entry
        for ev in events:
            if ev.host not in latest or ev.at >= latest[ev.host].at:
                latest[ev.host] = ev
        with self.write() as db:
            db.executemany("INSERT INTO boot_events (at, remote, host, ip, mac, hostkey, log) VALUES (?,?,?,?,?,?,?)",
                           [(ev.at, ev.remote, ev.host, ev.ip, ev.mac, ev.hostkey, log) for ev in events])
            db.executemany(
                "INSERT INTO hosts (name, ip, mac, hostkey, booted_at, serving) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET ip=excluded.ip, mac=excluded.mac, hostkey=excluded.hostkey,"
                " booted_at=excluded.booted_at, reachable=NULL, checked_at=NULL, serving=excluded.serving"
                " WHERE excluded.booted_at >= hosts.booted_at",
                [(ev.host, ev.ip, ev.mac, ev.hostkey, ev.at, ev.serving) for ev in latest.values()])
            db.execute("INSERT INTO bootlog_cursor (log, inode, offset, lines, skipped) VALUES (?,?,?,?,?)"
                       " ON CONFLICT(log) DO UPDATE SET inode=excluded.inode, offset=excluded.offset,"
                       " lines=excluded.lines, skipped=excluded.skipped", (log, *cursor))
            if also is not None:  # what the same lines said beside (state/timelines.py: the guest's times)
                also(db)

    def list_host(self, name: str, ip: str, mac: str, hostkey: str, booted_at: float) -> None:
        """Put a host on the current list without a boot event (it booted before this boot log)."""
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO hosts (name, ip, mac, hostkey, booted_at, reachable, checked_at)"
                       " VALUES (?,?,?,?,?,1,?)", (name, ip, mac, hostkey, booted_at, time.time()))

    def hosts(self) -> list[Host]:
        return [Host(name=r["name"], ip=r["ip"], mac=r["mac"], hostkey=r["hostkey"], booted_at=r["booted_at"],
                     reachable=None if r["reachable"] is None else bool(r["reachable"]), checked_at=r["checked_at"],
                     serving=r["serving"])
                for r in self.db.execute("SELECT * FROM hosts ORDER BY name")]

    def count_hosts(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM hosts").fetchone()[0])

    def set_reachable(self, results: dict[str, bool]) -> None:
        now = time.time()
        with self.write() as db:
            db.executemany("UPDATE hosts SET reachable = ?, checked_at = ? WHERE name = ?",
                           [(int(ok), now, name) for name, ok in results.items()])

    def remove_hosts(self, names: list[str] | None = None) -> int:
        """Drop entries from the current host list (all when names is None)."""
        with self.write() as db:
            if names is None:
                return db.execute("DELETE FROM hosts").rowcount
            return sum(db.execute("DELETE FROM hosts WHERE name = ?", (n,)).rowcount for n in names)

    # deployments -------------------------------------------------------------------------------
    def open_deployment(self, service: str, version: str, op: str, hosts: list[str]) -> int:
        with self.write() as db:
            cur = db.execute("INSERT INTO deployments (service, version, op, status, started)"
                             " VALUES (?,?,?,'in progress',?)", (service, version, op, time.time()))
            dep = int(cur.lastrowid or 0)
            db.executemany("INSERT INTO deployment_hosts (deployment, host, status, detail) VALUES (?,?,'open','')",
                           [(dep, h) for h in hosts])
        return dep

    def finish_deployment(self, dep: int, results: list[HostResult]) -> None:
        """Record each host's outcome (what a host runs is recorded once it proved it: record_release)."""
        now = time.time()
        with self.write() as db:
            for r in results:
                db.execute("UPDATE deployment_hosts SET status=?, detail=?, seconds=? WHERE deployment=? AND host=?",
                           ("done" if r.ok else "failed", r.detail, r.seconds, dep, r.host))
            status = "done" if all(r.ok for r in results) else "failed"
            db.execute("UPDATE deployments SET status=?, finished=? WHERE id=?", (status, now, dep))

    def record_release(self, host: str, service: str, version: str) -> None:
        """`version` of `service` now runs on `host`."""
        with self.write() as db:
            db.execute("INSERT INTO releases (host, service, version, at) VALUES (?,?,?,?)"
                       " ON CONFLICT(host, service) DO UPDATE SET version=excluded.version, at=excluded.at",
                       (host, service, version, time.time()))

    def releases(self) -> dict[tuple[str, str], str]:
        """(host, service) -> the version deployed there last."""
        return {(r["host"], r["service"]): r["version"] for r in self.db.execute("SELECT * FROM releases")}

    def deployment_hosts(self, dep: int) -> dict[str, tuple[str, str]]:
        rows = self.db.execute("SELECT host, status, detail FROM deployment_hosts WHERE deployment = ?", (dep,))
        return {r["host"]: (r["status"], r["detail"]) for r in rows}
