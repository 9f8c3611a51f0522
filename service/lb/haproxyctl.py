"""lb's control of HAProxy on its host: `run` writes haproxy.cfg from the backend list and runs HAProxy in
the foreground (booted's supervisor restarts it if it exits); `apply` makes the running HAProxy send to
exactly the hosts of the backend list, live, through its runtime API; `stats` prints its counters as JSON.

The runtime API is a Unix socket in the service's folder on this host (mode 600, owned by the service's
user): it is reached only over booted's SSH, never through the lab network. HAProxy has SLOTS server
lines; a backend taken out is put in maintenance (its requests in flight finish), one added takes a free
slot (`set server ... addr`, then `state ready`): no reload, no dropped connection.

Layout (BASE = /srv/booted/lb): releases/<id>/ (this file), backends (ip:port,... written by booted),
haproxy.cfg, haproxy.sock."""

import argparse
import csv
import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent.parent
BACKENDS, CONFIG, SOCKET = BASE / "backends", BASE / "haproxy.cfg", BASE / "haproxy.sock"
SLOTS = 64
BACKEND = "upstream"
WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
ADDR = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})\Z")
PARKED = "127.0.0.1:9"
CHECKS = ("check inter 1s fastinter 500ms downinter 1s rise 1 fall 2 observe layer4 error-limit 3 on-error mark-down "
          "maxconn 8")

CONFIG_TEXT = """\
# written by booted's lb (haproxyctl.py run) from {backends_file}; the runtime API changes it live
global
    stats socket {sock} mode 600 level admin
    stats timeout 10s
    # no global maxconn: HAProxy sizes it from the open-files limit (a fixed 4096 cannot start as a login
    # user whose limit is 1024)

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    # a lab service answers quickly: a request to a backend that died under it (no reset comes when a host
    # vanishes) is retried on another after 3 s instead of hanging; raise it for slower services
    timeout server 3s
    timeout queue 5s
    # an idempotent request whose backend refused, reset or did not answer is retried on another one
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend lb
    bind {ip}:{port}
    http-request return status 200 content-type application/json lf-string "{health}" if {{ path /health }}
    default_backend {backend}

backend {backend}
    balance roundrobin
    # a backend that fails a connection is out at once; back when its port answers again (checked every s)
    default-server {checks}
{servers}
"""


def read_backends() -> list[str]:
    """The backend list booted wrote (ip:port,...), each entry checked."""
    try:
        text = BACKENDS.read_text()
    except FileNotFoundError:
        return []
    found = [b for b in text.replace(",", " ").split() if b]
    for b in found:
        m = ADDR.match(b)
        if not m or not all(int(x) < 256 for x in m.group(1).split(".")) or not 0 < int(m.group(2)) < 65536:
            sys.exit(f"{BACKENDS}: {b!r} is not ip:port")
    if len(found) > SLOTS:
        sys.exit(f"{BACKENDS}: {len(found)} backends, the lb has {SLOTS} slots")
    return found


def render(ip: str, port: int, host: str, version: str) -> str:
    for name, value in (("host", host), ("version", version), ("ip", ip)):
        if not WORD.match(value):
            sys.exit(f"--{name} {value!r}: letters, digits, . _ - only")
    backends = read_backends()
    servers = []
    for n in range(1, SLOTS + 1):
        addr = backends[n - 1] if n <= len(backends) else PARKED
        servers.append(f"    server b{n} {addr}" + ("" if n <= len(backends) else " disabled"))
    body = json.dumps({"service": "lb", "host": host, "version": version, "status": "ok"})
    health = (body[:-1] + f', "backends_up": %[nbsrv({BACKEND})]}}').replace('"', '\\"')
    return CONFIG_TEXT.format(backends_file=BACKENDS, sock=SOCKET, ip=ip, port=port, health=health,
                              backend=BACKEND, checks=CHECKS,
                              servers="\n".join(servers))


def command(line: str) -> str:
    """One runtime API command; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(SOCKET))
        s.sendall(line.encode() + b"\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks).decode()
            chunks.append(data)


def rows() -> list[dict[str, str]]:
    """The backend's rows of `show stat`: its servers (name, addr, status, counters), then BACKEND."""
    text = command("show stat").lstrip("# ")
    return [r for r in csv.DictReader(text.splitlines()) if r.get("pxname") == BACKEND]


def serving(row: dict[str, str]) -> bool:
    return not row["status"].startswith("MAINT")


def apply() -> str:
    """Send to exactly the listed backends: take out those not listed, put the new ones in free slots."""
    want = read_backends()
    try:
        slots = [r for r in rows() if r["svname"] != "BACKEND"]
    except OSError:
        return "haproxy is not running: it reads the backend list when it starts"
    active = {r["addr"]: r["svname"] for r in slots if serving(r)}
    free = [r["svname"] for r in slots if not serving(r)]
    removed = [a for a in active if a not in want]
    added = [a for a in want if a not in active]
    for addr in removed:
        check(command(f"set server {BACKEND}/{active[addr]} state maint"), addr)
    if len(added) > len(free):
        sys.exit(f"lb: {len(added)} backends to add, {len(free)} free slots")
    for addr, slot in zip(added, free):
        ip, port = addr.split(":")
        check(command(f"set server {BACKEND}/{slot} addr {ip} port {port}"), addr)
        check(command(f"set server {BACKEND}/{slot} state ready"), addr)
    if not added and not removed:
        return f"lb: unchanged ({len(want)} backends)"
    return f"lb: {' '.join(['+' + a for a in added] + ['-' + a for a in removed])} ({len(want)} backends)"


def check(answer: str, addr: str) -> None:
    """The runtime API answers nothing (or a note) on success, a sentence starting with a capital on error."""
    text = answer.strip()
    if text and not text.startswith(("no need to change", "IP changed", "port changed")):
        sys.exit(f"lb: haproxy refused the change for {addr}: {text}")


def stats() -> dict[str, object]:
    """What the monitor reads: requests forwarded in total, the backends in service, and per backend its
    requests, errors (connect + response), requests in flight and mean time (ms, last 1024 requests)."""
    found = rows()
    backend = next(r for r in found if r["svname"] == "BACKEND")
    per = {r["addr"]: {"status": r["status"], "requests": int(r["stot"] or 0),
                       "errors": int(r["econ"] or 0) + int(r["eresp"] or 0), "in_flight": int(r["scur"] or 0),
                       "mean_ms": int(r["ttime"] or 0)} for r in found if r["svname"] != "BACKEND" and serving(r)}
    return {"requests": int(backend.get("req_tot") or backend["stot"] or 0), "backends": sorted(per),
            "servers": per}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="op", required=True)
    run = sub.add_parser("run", help="write haproxy.cfg from the backend list and run HAProxy")
    run.add_argument("--bind", required=True)
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--host", required=True)
    run.add_argument("--version", required=True)
    sub.add_parser("apply", help="make the running HAProxy use the backend list (live)")
    sub.add_parser("stats", help="print the counters as JSON")
    args = parser.parse_args()
    if args.op == "run":
        tmp = CONFIG.with_name(f".{CONFIG.name}.{os.getpid()}")
        tmp.write_text(render(args.bind, args.port, args.host, args.version))
        tmp.replace(CONFIG)
        # Debian puts haproxy in /usr/sbin, which a login user's PATH may not have
        binary = shutil.which("haproxy", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
        if binary is None:
            sys.exit("haproxy is not installed on this host (the lb service's packages = [\"haproxy\"])")
        os.execv(binary, [binary, "-db", "-f", str(CONFIG)])
    elif args.op == "apply":
        print(apply())
    else:
        print(json.dumps(stats()))


if __name__ == "__main__":
    main()
