"""The boot log: nginx's access log of /booted requests, read incrementally into boot events.

A line looks like `booted1 1700000000.123 10.77.0.2 "host=web01&mac=52%3A54...&ip=10.77.0.2&hostkey=SHA256...
&token=<32 hex>[&serving=<release id>][&times=<clock report>]"` (serving: the release the host started at
boot; times: its clocks for the boot timeline, display only: GuestTimes, parse_times). Lines are data
from the network: anything malformed or oversized is skipped and counted, never executed. A well-formed
line is believed only when it matches what booted made (vet): a host image of that name, its leased IP
claimed and sent from (or from loopback: the relay of a user-mode VM), its pinned host key, and the secret
token of its current boot, which only that host was given. Anything else is rejected and counted, and never
reaches the host list. What a host says it serves is verified by booted (the HTTP test) before it counts;
what it says about its clocks is only ever shown (state/timelines.py), never decides anything.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from booted.hosts.identity import fingerprint
from booted.state import timelines
from booted.state.inventory import BootEvent, Image, Inventory
from booted.state.records import GuestTimes

LINE_RE = re.compile(r'^booted1 (\d{1,12}\.\d{3}) (\d{1,3}(?:\.\d{1,3}){3}) "([A-Za-z0-9%&=._~+-]{1,1024})"$')
HOST_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")
MAC_RE = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z")
HOSTKEY_RE = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}\Z")
TOKEN_RE = re.compile(r"^[0-9a-f]{32}\Z")
FIELDS = ("host", "mac", "ip", "hostkey", "token")
RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}\Z")  # the optional `serving` field: a release id
# the optional `times` field: WALL_UPTIME_INIT_BOOT_SSHD_SERVING, the guest's wall clock (epoch) and uptime at
# the phone-home, then the uptime at which PID 1, the boot script, sshd and the service started ('-': unknown)
_UP = r"[0-9]{1,9}\.[0-9]{2}"
TIMES = rf"[0-9]{{1,11}}\.[0-9]{{1,6}}_{_UP}(?:_(?:{_UP}|-)){{4}}"
TIMES_RE = re.compile(rf"^{TIMES}\Z")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IP = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
# The exact line booted's boot script sends (curl --data-urlencode, this field order), parsed without
# parse_qs and ipaddress (3x faster on a large log). Any other line takes the general path below, so what
# is accepted does not change.
FAST_RE = re.compile(rf'booted1 ([0-9]{{1,12}}\.[0-9]{{3}}) ({_IP}) "host=([a-z][a-z0-9-]{{0,62}})'
                     r"&mac=([0-9a-f]{2}(?:%3[aA][0-9a-f]{2}){5})"
                     rf'&ip=({_IP})&hostkey=SHA256%3[aA]((?:[A-Za-z0-9]|%2[bBfF]){{43}})&token=([0-9a-f]{{32}})'
                     r'(?:&serving=([A-Za-z0-9][A-Za-z0-9._-]{0,79}))?'
                     rf'(?:&times=({TIMES}))?"')
_KEY_ESC = re.compile(r"%2[bBfF]")
CHUNK = 8 << 20


class BadLine(ValueError):
    """A boot-log line that is not a valid boot event."""


def parse_line(line: str) -> BootEvent:
    """Parse one boot-log line; raise BadLine with the reason when it is not a valid boot event."""
    return parse_entry(line)[0]


def parse_times(value: str) -> GuestTimes:
    """The `times` field (already matched against TIMES) as numbers."""
    wall, up, *rest = value.split("_")
    init, boot, sshd, serving = (None if v == "-" else float(v) for v in rest)
    return GuestTimes(float(wall), float(up), init, boot, sshd, serving)


def parse_entry(line: str) -> tuple[BootEvent, GuestTimes | None]:
    """Parse one boot-log line into its boot event and the clocks it reported (if it carried `times`)."""
    fast = FAST_RE.fullmatch(line)
    if fast:
        at, remote, host, mac, ip, key, token, serving, times = fast.groups()
        if ip == remote:
            key = _KEY_ESC.sub(lambda m: "+" if m.group()[2] in "bB" else "/", key)
            return (BootEvent(float(at), remote, host, ip, mac.replace("%3a", ":").replace("%3A", ":"),
                              f"SHA256:{key}", token, serving or ""), parse_times(times) if times else None)
    if len(line) > 2048:
        raise BadLine("line too long")
    match = LINE_RE.match(line.rstrip("\n"))
    if not match:
        raise BadLine("not in the booted1 format")
    at, remote, args = match.groups()
    try:
        fields = parse_qs(args, keep_blank_values=False, strict_parsing=True, max_num_fields=8)
    except ValueError as exc:
        raise BadLine(f"bad query string: {exc}") from None
    if sorted(set(fields) - {"serving", "times"}) != sorted(FIELDS) or any(len(v) != 1 for v in fields.values()):
        raise BadLine("needs exactly host, mac, ip, hostkey and token once each (and serving, times at most once)")
    host, mac, ip, hostkey, token = (fields[k][0] for k in FIELDS)
    serving = fields.get("serving", [""])[0]
    if serving and not RELEASE_RE.match(serving):
        raise BadLine(f"bad release {serving[:40]!r}")
    times = fields.get("times", [""])[0]
    if times and not TIMES_RE.match(times):
        raise BadLine(f"bad times {times[:40]!r}")
    if not HOST_RE.match(host):
        raise BadLine(f"bad host name {host[:40]!r}")
    if not MAC_RE.match(mac):
        raise BadLine(f"bad mac {mac[:40]!r}")
    if not HOSTKEY_RE.match(hostkey):
        raise BadLine("bad hostkey fingerprint")
    if not TOKEN_RE.match(token):
        raise BadLine("bad token")
    try:
        ipaddress.IPv4Address(ip)
        ipaddress.IPv4Address(remote)
    except ValueError:
        raise BadLine("bad address") from None
    if ip != remote and remote != "127.0.0.1":  # loopback: the relay of a user-mode VM, on this machine
        raise BadLine(f"claimed ip {ip} is not the sender {remote}")
    return BootEvent(float(at), remote, host, ip, mac, hostkey, token, serving), parse_times(times) if times else None


def vet(event: BootEvent, image: Image | None, fingerprints: dict[str, str]) -> str | None:
    """Why a well-formed boot event is not believed (None: it matches what booted made for that host)."""
    if image is None:
        return f"no host image {event.host!r}"
    if event.ip != image.ip:
        return f"{event.host} claims {event.ip}, its lease is {image.ip}"
    if event.remote not in (image.ip, "127.0.0.1"):
        return f"{event.host}'s line came from {event.remote}"
    if image.hostkey not in fingerprints:
        fingerprints[image.hostkey] = fingerprint(image.hostkey)
    if event.hostkey != fingerprints[image.hostkey]:
        return f"{event.host} reports a host key that is not its pinned one"
    if not image.boot_token or not hmac.compare_digest(event.token, image.boot_token):
        return f"{event.host}'s line does not carry the token of its current boot"
    return None


@dataclass(frozen=True)
class ReadResult:
    """What one incremental read found."""

    new_events: list[BootEvent]  # believed: they updated the host list
    skipped: int  # malformed
    lines: int
    bytes_read: int
    listed: int = 0  # hosts on the list after this read
    rejected: int = 0  # well-formed, but not matching what booted made (spoofed, stale, unknown)
    dropped: int = 0  # calls nginx answered but could not log: the boot log is full (BOOTED_BOOT_LOG_MAX)


def tally_of(log: Path) -> Path:
    """nginx's tally beside the boot log: one newline per answered call, whether its line fit or not."""
    return log.with_name(f"{log.name}.tally")


def dropped_lines(tally_bytes: int, lines: int) -> int:
    """Calls answered but not in the boot log: the tally (taken before the log was read: every call in it
    is in the log by then, if it fit) minus the log's complete lines. Capped tallies count no further."""
    return max(0, tally_bytes - lines)


def read_new(inventory: Inventory, log: Path) -> ReadResult:
    """Read the boot log from where the last read stopped and record the new events.

    The cursor is (inode, offset): a new file (restart_nginx, rotation) or a shorter one starts from 0.
    A partial last line is left for the next read.
    """
    key = str(log)
    inode, offset, total_lines, total_skipped = inventory.bootlog_cursor(key)
    try:
        tally = tally_of(log).stat().st_size  # before the log: nginx writes a call's line, then its tally
    except OSError:
        tally = 0
    try:
        handle = open(log, "rb")
    except FileNotFoundError:
        return ReadResult([], 0, 0, 0)
    with handle:
        st = os.fstat(handle.fileno())
        if st.st_ino != inode or st.st_size < offset:
            offset, total_lines, total_skipped = 0, 0, 0
        handle.seek(offset)
        entries: list[tuple[BootEvent, GuestTimes | None]] = []
        skipped = lines = consumed = 0
        rest = b""
        while chunk := handle.read(CHUNK):
            data = rest + chunk
            end = data.rfind(b"\n")
            if end < 0:
                rest = data
                continue
            rest = data[end + 1:]
            for raw in data[:end].split(b"\n"):
                lines += 1
                try:
                    entries.append(parse_entry(raw.decode("utf-8")))
                except (BadLine, UnicodeDecodeError):
                    skipped += 1
            consumed += end + 1
    images = inventory.images_named({e.host for e, _ in entries}) if entries else {}
    fingerprints: dict[str, str] = {}
    believed = [(e, t) for e, t in entries if vet(e, images.get(e.host), fingerprints) is None]
    cursor = (st.st_ino, offset + consumed, total_lines + lines, total_skipped + skipped)
    inventory.record_boots(key, [e for e, _ in believed], cursor,
                           timelines.guest_writer([(e.host, e.at, t) for e, t in believed if t is not None]))
    return ReadResult([e for e, _ in believed], skipped, lines, consumed, inventory.count_hosts(),
                      len(entries) - len(believed), dropped_lines(tally, cursor[2]))
