"""Cheap reachability checks (an SSH banner, many at once) used by discovery, the fan-out and providers."""

from __future__ import annotations

import ctypes
import errno
import os
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path


def ssh_banner(ip: str, timeout: float = 2.0, port: int = 22) -> bool:
    """True when something on ip:port greets with an SSH banner."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(16).startswith(b"SSH-")
    except OSError:
        return False


def banners(endpoints: dict[str, tuple[str, int]], deadline: float = 0.5) -> dict[str, bool]:
    """name -> whether its SSH endpoint greets with a banner, all probed at once within one `deadline` (so a
    status of hundreds of hosts stays under a second; a frozen host accepts the connection but never greets)."""
    sel = selectors.DefaultSelector()
    out = {name: False for name in endpoints}
    socks: list[socket.socket] = []
    try:
        for name, (ip, port) in endpoints.items():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            socks.append(sock)
            if sock.connect_ex((ip, port)) not in (0, errno.EINPROGRESS):
                continue
            sel.register(sock, selectors.EVENT_READ, name)
        end = time.monotonic() + deadline
        while sel.get_map() and (left := end - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    out[key.data] = conn.recv(16).startswith(b"SSH-")
                except OSError:
                    pass
                sel.unregister(conn)
    finally:
        sel.close()
        for sock in socks:
            sock.close()
    return out


# A host in a network namespace of its own (provider netns) is checked without a connection: its namespace's
# listening TCP sockets are read over sock_diag netlink (the kernel walks only its listening hash for that, not
# every connection of the machine as /proc/net/tcp does), and the process holding port 22's socket is looked at.
# An SSH banner makes the host's sshd fork and re-exec a session per probe: 500 of them cost 2.5 s here.
CLONE_NEWNET = 0x40000000
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
NLM_F_REQUEST, NLM_F_DUMP, NLMSG_ERROR, NLMSG_DONE = 0x1, 0x300, 2, 3
TCP_LISTEN = 10
DIAG_MSG = struct.Struct("=BBBBHH16s16sIQIIIII")  # inet_diag_msg: family, state, ..., id, expires, queues, uid, inode
NOT_SERVING = frozenset("TtZXx")  # stopped, traced, zombie, dead


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket: `queued` connections wait in its accept queue (the kernel finished their
    handshake; the process has not taken them yet)."""
    port: int
    queued: int
    backlog: int
    inode: int


def listening(pids: dict[str, int], port: int = 22, settle: float = 0.2) -> dict[str, bool | None]:
    """name -> whether the host whose process `pid` runs in a network namespace of its own serves `port`
    there: a TCP socket listens on it, the process holding it is neither stopped, frozen nor a zombie, and no
    connection waits in its accept queue untaken for `settle` seconds (hung, or too slow to serve). None: cannot
    tell this way (the process is in this machine's own namespace, as a VM's is, or not ours to look into):
    probe it another way."""
    out: dict[str, bool | None] = {}
    spaces: dict[str, str] = {}
    own = _netns_inode("self")
    for name, pid in pids.items():
        try:
            ino = _netns_inode(str(pid)) if pid > 0 else own
        except OSError:  # gone since it was listed, or not ours to look into: the other probe says which
            ino = own
        if ino == own:
            out[name] = None
        else:
            spaces[name] = f"/proc/{pid}/ns/net"
    try:
        seen = socket_tables(spaces)
    except OSError:  # no right to enter namespaces (not root): the caller probes another way
        return out | {name: None for name in spaces}
    waiting: dict[str, Listener] = {}
    for name, listeners in seen.items():
        sock = next((s for s in listeners if s.port == port), None)
        out[name] = sock is not None and _holder_serves(pids[name], sock.inode)
        if out[name] and sock is not None and sock.queued:
            waiting[name] = sock
    if waiting:  # connections not taken yet: taken within `settle` by a live server, never by a hung one
        time.sleep(settle)
        again = socket_tables({n: spaces[n] for n in waiting})
        for name, before in waiting.items():
            now = next((s for s in again.get(name, []) if s.inode == before.inode), None)
            out[name] = now is not None and now.queued < before.queued
    return out


def _netns_inode(pid: str) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def socket_tables(spaces: dict[str, str]) -> dict[str, list[Listener]]:
    """name -> the listening TCP sockets (IPv4 and IPv6) of the network namespace at that path. Namespaces are
    entered from one short-lived thread (setns changes only the calling thread's); a host whose namespace is
    gone meanwhile has none. OSError when this process may not enter namespaces."""
    out: dict[str, list[Listener]] = {}
    failed: list[OSError] = []

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/thread-self/ns/net", "rb") as home:
            try:
                for name, path in spaces.items():
                    try:
                        with open(path, "rb") as ns:
                            if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                                raise OSError(ctypes.get_errno(), f"setns {path}: {os.strerror(ctypes.get_errno())}")
                    except FileNotFoundError:
                        out[name] = []
                        continue
                    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
                        out[name] = _dump(nl, socket.AF_INET) + _dump(nl, socket.AF_INET6)
            except OSError as exc:
                failed.append(exc)
            finally:
                if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                    failed.append(OSError(ctypes.get_errno(), "setns back to the controller's namespace"))

    thread = threading.Thread(target=work, name="netns-sockets")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return out


def _dump(nl: socket.socket, family: int) -> list[Listener]:
    """One sock_diag dump of the namespace's TCP sockets in LISTEN (inet_diag_req_v2, no bytecode)."""
    req = struct.pack("=BBBBI48x", family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
    nl.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + req)
    out: list[Listener] = []
    while True:
        data = nl.recv(65536)
        at = 0
        while at + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, at)
            if kind == NLMSG_DONE:
                return out
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, at + 16)[0]
                raise OSError(code, f"sock_diag: {os.strerror(code)}")
            if kind == SOCK_DIAG_BY_FAMILY and length >= 16 + DIAG_MSG.size:
                f = DIAG_MSG.unpack_from(data, at + 16)
                out.append(Listener(port=socket.ntohs(f[4]), queued=f[11], backlog=f[12], inode=f[14]))
            if length < 16:
                return out
            at += (length + 3) & ~3


def _holder_serves(pid: int, inode: int, most: int = 64) -> bool:
    """Whether the process holding socket `inode` (the host's process `pid` or one under it) runs: not stopped,
    traced, a zombie, nor in a frozen cgroup. False when no such process is found."""
    link, todo, looked = f"socket:[{inode}]", [pid], 0
    while todo and looked < most:
        cur = todo.pop(0)
        looked += 1
        try:
            if any(os.readlink(f"/proc/{cur}/fd/{fd}") == link for fd in os.listdir(f"/proc/{cur}/fd")):
                return _runs(cur)
            todo += [int(c) for c in Path(f"/proc/{cur}/task/{cur}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return False


def _runs(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        groups = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except (OSError, IndexError):
        return False
    return state not in NOT_SERVING and not any(_frozen(line) for line in groups)


def _frozen(line: str, root: Path = Path("/sys/fs/cgroup")) -> bool:
    """Whether the cgroup on this /proc/PID/cgroup line is frozen (cgroup v1's freezer, or v2's)."""
    _, controllers, path = line.split(":", 2)
    if path == "/":
        return False
    try:
        if "freezer" in controllers.split(","):
            return (root / f"freezer{path}" / "freezer.state").read_text().strip() != "THAWED"
        if controllers == "":
            return "frozen 1" in (root / path.lstrip("/") / "cgroup.events").read_text().splitlines()
    except OSError:
        return False
    return False
