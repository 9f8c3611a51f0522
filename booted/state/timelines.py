"""Boot timelines: where a host start's time went. What each host's boot script reported at its phone-home
(guest_times, written with the boot-log line that carried it), and each start's moments on the controller's
clock (timelines, written by the lab handle's start), read back as phases: consecutive spans that add up to
the start, each named for what the host did in it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import astuple, dataclass, fields
from typing import Any

from booted.state.inventory import Inventory
from booted.state.records import GuestTimes, Timeline

KEEP = 20  # timelines kept per host (the last starts: enough for the monitor's recent heals)
# phase -> the moment that ends it (a Timeline field) and what happens in it (README, env_timeline's legend)
PHASES = (
    ("prepare", "created", "booted sets up the lab network, nginx, releases and the host's disk; the provider "
                           "makes the host's process"),
    ("firmware", "kernel", "QEMU and the firmware or loader, until the guest's kernel starts"),
    ("kernel", "init", "the guest's kernel, until it starts PID 1"),
    ("init", "boot", "init (busybox or systemd; a netns host: its namespaces and mounts) until booted's boot script"),
    ("sshd", "sshd", "hostname, network, login user, until sshd listens"),
    ("service", "serving", "serve.sh, started beside sshd: fetch the release, start the service, until it is healthy"),
    ("phone-home", "logged", "the call to booted's nginx, until the boot-log line is written"),
    ("verify", "verified", "booted reads and vets the line, then gets the host's SSH banner"),
)
NO_KERNEL = "n/a"  # a host on the machine's own kernel (netns): no firmware, no kernel of its own
NOT_SEEN = "-"  # did not happen (no service at boot, a failed start) or not reported


@dataclass(frozen=True)
class Phase:
    """One span of a start, in seconds after it began (None with `why`: no such span this start)."""

    name: str
    begin: float | None
    end: float | None
    why: str = ""

    @property
    def seconds(self) -> float | None:
        return None if self.begin is None or self.end is None else self.end - self.begin


def phases(t: Timeline) -> list[Phase]:
    """The start's phases in order: each runs from the last moment known before it to its own end."""
    out, last = [], t.start
    for name, moment, _ in PHASES:
        at = getattr(t, moment)
        if at is None:
            out.append(Phase(name, None, None, NO_KERNEL if moment in ("kernel", "init") and t.clock == "machine"
                             else NOT_SEEN))
            continue
        out.append(Phase(name, last - t.start, at - t.start))
        last = at
    return out


def total(t: Timeline) -> float:
    """Seconds from the start to its last moment known (verified, for a host that booted)."""
    known = [at for _, m, _ in PHASES if (at := getattr(t, m)) is not None]
    return max(known) - t.start if known else 0.0


def as_json(t: Timeline) -> dict[str, Any]:
    """A timeline as env_timeline --json and the monitor's API show it: offsets in seconds after the start."""
    def off(at: float | None) -> float | None:
        return None if at is None else round(at - t.start, 3)

    return {"name": t.host, "env": t.env, "start": round(t.start, 3), "ok": t.verified is not None,
            "seconds": round(total(t), 3), "clock": t.clock or None,
            "clock_offset": None if t.offset is None else round(t.offset, 3), "note": t.note,
            "moments": {m: off(getattr(t, m)) for _, m, _ in PHASES},
            "phases": [{"phase": p.name, "from": None if p.begin is None else round(p.begin, 3),
                        "to": None if p.end is None else round(p.end, 3),
                        "seconds": None if p.seconds is None else round(p.seconds, 3), "why": p.why or None}
                       for p in phases(t)]}


# the guest's report: written in the transaction that lists the host (Inventory.record_boots' `also`) ----------
def guest_writer(reports: list[tuple[str, float, GuestTimes]]) -> Callable[[sqlite3.Connection], None] | None:
    """(host, the line's time, what it reported) of believed lines -> what record_boots runs in its transaction."""
    if not reports:
        return None

    def write(db: sqlite3.Connection) -> None:
        db.executemany("INSERT INTO guest_times (host, logged, wall, uptime, init, boot, sshd, serving)"
                       " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(host) DO UPDATE SET logged=excluded.logged,"
                       " wall=excluded.wall, uptime=excluded.uptime, init=excluded.init, boot=excluded.boot,"
                       " sshd=excluded.sshd, serving=excluded.serving WHERE excluded.logged >= guest_times.logged",
                       [(host, at, *astuple(g)) for host, at, g in reports])
    return write


def guest_times(inv: Inventory, host: str, logged: float) -> GuestTimes | None:
    """What `host` reported with its boot-log line of time `logged` (None: that line carried nothing)."""
    row = inv.db.execute("SELECT wall, uptime, init, boot, sshd, serving FROM guest_times WHERE host = ?"
                         " AND abs(logged - ?) < 0.0005", (host, logged)).fetchone()
    return None if row is None else GuestTimes(*row)


# the starts' timelines -----------------------------------------------------------------------------------
COLUMNS = tuple(f.name for f in fields(Timeline))


def save(inv: Inventory, timelines: list[Timeline]) -> None:
    """Record a start's timelines; each host keeps its last KEEP."""
    if not timelines:
        return
    with inv.write() as db:
        db.executemany(f"INSERT INTO timelines ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                       [astuple(t) for t in timelines])
        db.executemany("DELETE FROM timelines WHERE host = ? AND id NOT IN (SELECT id FROM timelines WHERE host = ?"
                       " ORDER BY start DESC, id DESC LIMIT ?)", [(t.host, t.host, KEEP) for t in timelines])


def _read(inv: Inventory, where: str, args: tuple[object, ...]) -> list[Timeline]:
    rows = inv.db.execute(f"SELECT {', '.join(COLUMNS)} FROM timelines WHERE {where} ORDER BY host", args)
    return [Timeline(*row) for row in rows]


def last_start(inv: Inventory, env: str) -> list[Timeline]:
    """The hosts of the environment's last start (one lab handle start: they share its start time)."""
    row = inv.db.execute("SELECT max(start) FROM timelines WHERE env = ?", (env,)).fetchone()
    return [] if row[0] is None else _read(inv, "env = ? AND start = ?", (env, row[0]))


def during(inv: Inventory, env: str, host: str, since: float, until: float) -> list[Timeline]:
    """The starts of `host` that began between `since` and `until` (a monitor action's span)."""
    return _read(inv, "env = ? AND host = ? AND start BETWEEN ? AND ?", (env, host, since, until))
