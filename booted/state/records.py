"""The state database's schema and the typed records read from it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY, env TEXT NOT NULL, provider TEXT NOT NULL,
    role TEXT NOT NULL, service TEXT, version TEXT,
    ip TEXT NOT NULL, mac TEXT NOT NULL UNIQUE, hostkey TEXT NOT NULL,
    memory INTEGER NOT NULL DEFAULT 256, cpus INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL, pid INTEGER, started REAL, boot_token TEXT, held INTEGER NOT NULL DEFAULT 0,
    hypervisor TEXT NOT NULL DEFAULT '',
    UNIQUE (env, ip)
);
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY, ip TEXT NOT NULL, mac TEXT NOT NULL, hostkey TEXT NOT NULL,
    booted_at REAL NOT NULL, reachable INTEGER, checked_at REAL, serving TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS boot_events (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, remote TEXT NOT NULL, host TEXT NOT NULL,
    ip TEXT NOT NULL, mac TEXT NOT NULL, hostkey TEXT NOT NULL, log TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bootlog_cursor (
    log TEXT PRIMARY KEY, inode INTEGER NOT NULL, offset INTEGER NOT NULL,
    lines INTEGER NOT NULL DEFAULT 0, skipped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY, service TEXT NOT NULL, version TEXT NOT NULL, op TEXT NOT NULL,
    status TEXT NOT NULL, started REAL NOT NULL, finished REAL
);
CREATE TABLE IF NOT EXISTS deployment_hosts (
    deployment INTEGER NOT NULL, host TEXT NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL,
    seconds REAL, PRIMARY KEY (deployment, host)
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY, env TEXT NOT NULL, kind TEXT NOT NULL, host TEXT NOT NULL, reason TEXT NOT NULL,
    status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', started REAL NOT NULL, finished REAL
);
CREATE TABLE IF NOT EXISTS pins (
    host TEXT NOT NULL, service TEXT NOT NULL, version TEXT NOT NULL, env_version TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (host, service)
);
CREATE TABLE IF NOT EXISTS releases (
    host TEXT NOT NULL, service TEXT NOT NULL, version TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (host, service)
);
CREATE TABLE IF NOT EXISTS guest_times (
    host TEXT PRIMARY KEY, logged REAL NOT NULL, wall REAL NOT NULL, uptime REAL NOT NULL,
    init REAL, boot REAL, sshd REAL, serving REAL
);
CREATE TABLE IF NOT EXISTS timelines (
    id INTEGER PRIMARY KEY, env TEXT NOT NULL, host TEXT NOT NULL, start REAL NOT NULL, created REAL,
    kernel REAL, init REAL, boot REAL, sshd REAL, serving REAL, logged REAL, verified REAL,
    clock TEXT NOT NULL DEFAULT '', offset REAL, note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS timelines_by_env ON timelines (env, start);
CREATE TABLE IF NOT EXISTS warm (
    host TEXT PRIMARY KEY, env TEXT NOT NULL, pid INTEGER NOT NULL, at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Image:
    """A host image: one lab host's machine and its identity."""

    name: str
    env: str
    provider: str
    role: str
    service: str | None
    version: str | None
    ip: str
    mac: str
    hostkey: str
    memory: int
    cpus: int
    created: float
    pid: int | None
    started: float | None
    boot_token: str | None = None  # the secret of its current boot: only a line carrying it is believed
    held: int = 0  # 1: stopped by a user (the monitor does not restart it)
    hypervisor: str = ""  # libvirt: where it was placed (its disk is there); "" for other providers


@dataclass(frozen=True)
class Host:
    """An entry of the current host list (discovered from the boot log)."""

    name: str
    ip: str
    mac: str
    hostkey: str
    booted_at: float
    reachable: bool | None
    checked_at: float | None
    serving: str = ""  # the release its last boot said it serves ("" : none; then booted deploys over SSH)


@dataclass(frozen=True)
class Pin:
    """A version a user deployed by hand on a host: kept (the monitor does not revert it) while the
    environment still asks for `env_version`, the version environments.py named when the user deployed."""

    host: str
    service: str
    version: str
    env_version: str

    def holds(self, wanted: str | None) -> bool:
        """Still in force: environments.py's version for the host has not changed since."""
        return (wanted or "") == self.env_version


@dataclass(frozen=True)
class BootEvent:
    """One valid boot-log line."""

    at: float
    remote: str
    host: str
    ip: str
    mac: str
    hostkey: str
    token: str = ""  # the boot token it carried (checked, never stored)
    serving: str = ""  # the release it started at boot, if any


def mac_for(ip: ipaddress.IPv4Address) -> str:
    """A locally administered MAC derived from the IP: stable across runs, unique per IP."""
    octets = ip.packed
    return "52:54:" + ":".join(f"{b:02x}" for b in octets)


@dataclass(frozen=True)
class GuestTimes:
    """What a host's boot script said at its phone-home (the boot-log line's `times`): display only, never
    trusted. Its wall clock and uptime (seconds since its kernel started) then, and the uptime at which its
    PID 1, booted's boot script, sshd (listening) and its service (serving) started; None: not known."""

    wall: float
    uptime: float
    init: float | None
    boot: float | None
    sshd: float | None
    serving: float | None


@dataclass(frozen=True)
class Timeline:
    """One host start, as moments on the controller's clock (epoch seconds; None: did not happen or not
    known): the start began (the controller), the host's process was created (the controller), its kernel
    and PID 1 started, the boot script ran, sshd listened, its service served (the guest, placed on the
    controller's clock), its boot-log line was written (nginx) and booted verified it (SSH banner)."""

    env: str
    host: str
    start: float
    created: float | None
    kernel: float | None
    init: float | None
    boot: float | None
    sshd: float | None
    serving: float | None
    logged: float | None
    verified: float | None
    clock: str = ""  # "machine": the host runs on the machine's kernel and clock (netns); "guest": its own; "": unknown
    offset: float | None = None  # the guest's wall clock minus the controller's at the phone-home
    note: str = ""  # why a start failed, or what was adjusted
