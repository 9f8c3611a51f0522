"""Boot-log benchmark: first `fab hosts_logged` over a big boot log, then refreshes after 100 new lines.

    .venv/bin/python bench/bootlog.py --lines 1000000   # the full benchmark (a ~150 MB log)
    .venv/bin/python bench/bootlog.py --lines 2000      # smoke

Writes a log in the format of booted's nginx (`booted1 $msec $remote_addr "$args"`, nginx/nginx.conf.j2) with
garbage and hostile lines mixed in (tests/data/bootlog/*.log, binary, overlong, spoofed), then:
  1. times the first `fab hosts_logged` (the fab CLI, BOOTED_LOG pointing at the log) and checks its counts;
  2. --refreshes times: appends 100 lines, times `fab hosts_logged` again, checks it read exactly 100 lines;
  3. proves a refresh does not re-read the log: the engine's cursor offset equals the file size after each
     read; `booted.discovery.bootlog.read_new` (in-process) reports bytes_read == the appended bytes only; and
     count of bytes the process read (/proc/self/io rchar), for the same fab task run in a wrapper, exceeds
     an idle refresh's (nothing new) by about the appended bytes, far below the log size.
Needs no root and starts no host.
Last line: `bootlog_first_s=X bootlog_refresh_s=Y refresh_bytes_read=B log_bytes=L rereads=no`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import random
import re
import sys
import time
from pathlib import Path

import _benchlib as lib
from _benchlib import BenchError, run_in_tmp, say

from booted.discovery import bootlog
from booted.hosts.identity import fingerprint
from booted.state.inventory import Inventory

DATA = lib.ROOT / "tests" / "data" / "bootlog"
COUNTS_RE = re.compile(r"read (\d+) new line\(s\) of .*: (\d+) boot\(s\), (\d+) malformed line\(s\) skipped, "
                       r"\d+ rejected .*; (\d+) host\(s\) listed")
# Runs the fab CLI's entry point (what the `fab` script runs) and reports the bytes this process read.
IO_WRAPPER = """\
import atexit, sys
def _io():
    with open("/proc/self/io") as fh:
        rchar = dict(line.split(": ") for line in fh.read().splitlines())["rchar"]
    sys.stderr.write(f"BENCH-RCHAR {rchar}\\n")
atexit.register(_io)
sys.argv = ["fab", *sys.argv[1:]]
from fabric.main import program
program.run()
"""


def _valid(line: bytes) -> bool:
    try:
        bootlog.parse_line(line.decode("utf-8"))
    except (bootlog.BadLine, UnicodeDecodeError):
        return False
    return True


class LogWriter:
    """Valid boot lines for a pool of hosts, with bad lines mixed in (about 1 in 10)."""

    def __init__(self, hosts: int, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.hosts = []
        for i in range(hosts):
            ip = f"10.{213 + i // 65000}.{(i // 250) % 256}.{2 + i % 250}"
            mac = "52%3a54%3a" + "%3a".join(f"{int(o):02x}" for o in ip.split("."))
            pub = "ssh-ed25519 " + base64.b64encode(f"bench-{i}".encode()).decode()  # a stand-in key (never used)
            key = fingerprint(pub).removeprefix("SHA256:")
            token = hashlib.sha256(f"token-{i}".encode()).hexdigest()[:32]
            self.hosts.append((f"h{i:05d}", ip, mac, "SHA256%3a" + key.replace("+", "%2b").replace("/", "%2f"),
                               token, pub))
        self.bad = [line for name in ("garbage.log", "hostile.log")
                    for line in (DATA / name).read_bytes().split(b"\n") if line]
        self.bad += [b"\x00\xff\xfe binary \x80", b"booted1 " + b"A" * 5000, b"x" * 3000,
                     b'booted1 1763712000.123 10.9.9.9 "host=spoof&mac=52%3A54%3A0a%3A09%3A09%3A09&ip=10.9.9.8'
                     b'&hostkey=SHA256%3AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"']
        self.bad = [line for line in self.bad if not _valid(line)]  # the data files hold a few valid lines too
        self.at = 1_763_712_000.0

    def register(self, inv: Inventory) -> None:
        """The host images these boots belong to, with their keys and boot tokens, so discovery believes
        them (written in one transaction: leasing 5000 addresses one by one would time the fixture)."""
        now = time.time()
        with inv.write() as db:
            db.executemany(
                "INSERT INTO images (name, env, provider, role, service, version, ip, mac, hostkey, created,"
                " boot_token) VALUES (?, 'bench', 'netns', 'worker', NULL, NULL, ?, ?, ?, ?, ?)",
                [(name, ip, mac.replace("%3a", ":"), pub, now, token)
                 for name, ip, mac, _, token, pub in self.hosts])

    def lines(self, count: int) -> tuple[bytes, int, int]:
        """`count` lines: (data, valid lines, bad lines)."""
        out: list[bytes] = []
        valid = 0
        for _ in range(count):
            self.at += 0.001
            if self.rng.random() < 0.1:
                out.append(self.rng.choice(self.bad))
                continue
            name, ip, mac, key, token, _ = self.hosts[self.rng.randrange(len(self.hosts))]
            out.append(f'booted1 {self.at:.3f} {ip} "host={name}&mac={mac}&ip={ip}&hostkey={key}&token={token}"'
                       .encode())
            valid += 1
        return b"\n".join(out) + b"\n", valid, count - valid


def fab_logged(env: dict[str, str]) -> tuple[float, tuple[int, int, int, int]]:
    seconds, proc = lib.timed([lib.FAB, "hosts_logged"], env=env)
    match = COUNTS_RE.search(proc.stdout)
    if not match:
        raise BenchError(f"fab hosts_logged printed something unexpected: {proc.stdout!r}")
    return seconds, tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def fab_logged_rchar(env: dict[str, str]) -> int:
    """Bytes the fab hosts_logged process read through read(2) (/proc/self/io rchar), at its exit."""
    _, proc = lib.timed([lib.PYTHON, "-c", IO_WRAPPER, "hosts_logged"], env=env)
    match = re.search(r"BENCH-RCHAR (\d+)", proc.stderr)
    if not match:
        raise BenchError(f"no rchar reported: {proc.stderr[-500:]!r}")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in the initial boot log")
    parser.add_argument("--hosts", type=int, default=5000, help="distinct hosts booting in the log")
    parser.add_argument("--refreshes", type=int, default=5, help="refreshes of 100 lines; the median counts")
    args = parser.parse_args()
    if args.lines < 1 or args.hosts < 1 or args.refreshes < 1:
        parser.error("--lines, --hosts and --refreshes must be at least 1")
    return run_in_tmp("bootlog", lambda tmp: run(args, tmp))


def run(args: argparse.Namespace, tmp: Path) -> int:
    log, state = tmp / "boot.log", tmp / "state"
    envfile = tmp / "environments.py"
    envfile.write_text('ENVIRONMENTS = {"bench": {"provider": "netns", "network": "10.213.180.0/24", '
                       '"hosts": {"b01": {"role": "worker"}}}}\n')
    env = lib.booted_env(state, envfile, BOOTED_LOG=str(log))
    writer = LogWriter(min(args.hosts, args.lines))
    setup = Inventory(state / "state.db")
    writer.register(setup)
    setup.close()
    start = time.perf_counter()
    valid = bad = 0
    with open(log, "wb") as fh:
        left = args.lines
        while left:
            data, v, b = writer.lines(min(left, 100_000))
            fh.write(data)
            valid, bad, left = valid + v, bad + b, left - v - b
    size = log.stat().st_size
    say(f"wrote {args.lines} lines ({valid} valid, {bad} bad), {size / 1e6:.1f} MB in "
        f"{time.perf_counter() - start:.1f}s")

    first, counts = fab_logged(env)
    if counts[:3] != (args.lines, valid, bad):
        raise BenchError(f"first read: (lines, boots, skipped) = {counts[:3]}, expected {(args.lines, valid, bad)}")
    inv = Inventory(state / "state.db")
    cursor = inv.bootlog_cursor(str(log))
    if cursor[1] != size:
        raise BenchError(f"cursor offset {cursor[1]} after the first read, log size {size}")
    say(f"first fab hosts_logged: {first:.2f}s, {counts[3]} hosts listed, cursor at {cursor[1]} = log size")

    refresh: list[float] = []
    appended = 0
    for _ in range(args.refreshes):
        data, v, b = writer.lines(100)
        with open(log, "ab") as fh:
            fh.write(data)
        appended = len(data)
        seconds, counts = fab_logged(env)
        if counts[:3] != (100, v, b):
            raise BenchError(f"refresh read (lines, boots, skipped) = {counts[:3]}, expected (100, {v}, {b})")
        if inv.bootlog_cursor(str(log))[1] != log.stat().st_size:
            raise BenchError("cursor does not stand at the end of the log after a refresh")
        refresh.append(seconds)

    # In-process: the engine's own ReadResult says how much of the log a refresh reads.
    data, v, b = writer.lines(100)
    with open(log, "ab") as fh:
        fh.write(data)
    start = time.perf_counter()
    result = bootlog.read_new(inv, log)
    inproc_refresh = time.perf_counter() - start
    if result.bytes_read != len(data) or result.lines != 100:
        raise BenchError(f"in-process refresh read {result.bytes_read} bytes / {result.lines} lines, "
                         f"appended {len(data)} bytes / 100 lines")
    # ... and a full read of the same log for comparison (fresh database, cursor at 0).
    full_inv = Inventory(tmp / "full.db")
    writer.register(full_inv)
    start = time.perf_counter()
    full = bootlog.read_new(full_inv, log)
    inproc_full = time.perf_counter() - start
    full_inv.close()
    # The kernel's count of bytes the fab process read (everything: Python modules, SQLite, the log).
    data, v, b = writer.lines(100)
    with open(log, "ab") as fh:
        fh.write(data)
    rchar = fab_logged_rchar(env)
    idle = fab_logged_rchar(env)  # same task, nothing new: Python modules, SQLite and the fstat/seek only
    size = log.stat().st_size
    inv.close()
    extra = rchar - idle
    rereads = extra >= size
    if rereads:
        raise BenchError(f"a refresh read {extra} bytes more than an idle one; the log has {size}: it re-reads it")

    lines = [f"boot-log benchmark: {args.lines} lines ({valid} valid boots of {len(writer.hosts)} hosts, "
             f"{bad} garbage/hostile), {size / 1e6:.1f} MB; {lib.machine()}",
             lib.table(["measurement", "seconds", "bytes of the log read"], [
                 ("first fab hosts_logged (whole log)", f"{first:.2f}", f"{cursor[1]}"),
                 (f"refresh: fab hosts_logged after +100 lines (median of {args.refreshes})",
                  f"{lib.median(refresh):.3f}", f"{appended} (100 lines)"),
                 ("in-process read_new, refresh (+100 lines)", f"{inproc_refresh:.4f}", f"{result.bytes_read}"),
                 ("in-process read_new, full log (fresh state)", f"{inproc_full:.2f}", f"{full.bytes_read}"),
                 ("refresh fab process: read(2) bytes (rchar) minus an idle refresh's", "-",
                  f"{extra} (rchar {rchar} - {idle}; log: {size})"),
             ]),
             f"refresh runs s: {' '.join(f'{x:.3f}' for x in refresh)}",
             f"bootlog_first_s={first:.3f} bootlog_refresh_s={lib.median(refresh):.3f} "
             f"refresh_bytes_read={result.bytes_read} log_bytes={size} rereads={'yes' if rereads else 'no'}"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
