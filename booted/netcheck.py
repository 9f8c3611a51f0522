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


def ssh_banner(ip: str, timeout: float = 2.0, port: int = 22) -> bool:
    """True when something on ip:port greets with an SSH banner."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(16).startswith(b"SSH-")
    except OSError:
        return False


def banners(endpoints: dict[str, tuple[str, int]], deadline: float = 0.5, most: float = 10.0) -> dict[str, bool]:
    """name -> whether its SSH endpoint greets with a banner, all probed at once: the silent ones fail once no
    host greeted for `deadline` seconds (a frozen host accepts the connection but never greets), and at most
    `most` deadlines in all (hundreds of sshd starting a session each at once greet over seconds, not within one
    deadline: at 500 netns hosts under load, 209 of them greeted after the first 0.5 s)."""
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
        now = time.monotonic()
        end, last = now + deadline, now + deadline * most
        while sel.get_map() and (left := min(end, last) - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    out[key.data] = conn.recv(16).startswith(b"SSH-")
                except OSError:
                    pass
                if out[key.data]:
                    end = time.monotonic() + deadline
                sel.unregister(conn)
    finally:
        sel.close()
        for sock in socks:
            sock.close()
    return out


# A host in a network namespace of its own (provider netns) is checked without a connection: its namespace's
# listening socket on ip:22 is looked up over sock_diag netlink (one hash lookup in the kernel; a dump of the
# namespace's listeners walks the machine's whole listening hash, 0.3 ms a namespace here, and /proc/net/tcp every
# connection, 7 ms), and the process holding it is looked at. An SSH banner makes the host's sshd fork and re-exec
# a session per probe: 500 of them cost 2.5 s here.
CLONE_NEWNET = 0x40000000
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
NLM_F_REQUEST, NLMSG_ERROR = 0x1, 2
TCP_LISTEN = 10
NO_COOKIE = 0xFFFFFFFF
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


def listening(hosts: dict[str, tuple[int, str]], port: int = 22, settle: float = 0.2) -> dict[str, bool | None]:
    """name -> whether the host (pid, ip), whose process `pid` runs in a network namespace of its own, serves
    ip:`port` there: a TCP socket listens on it, the process holding it is neither stopped, frozen nor a zombie,
    and no connection waits in its accept queue untaken for `settle` seconds (hung, or too slow to serve). None:
    cannot tell this way (the process is in this machine's own namespace, as a VM's is, or not ours to look
    into): probe it another way."""
    out: dict[str, bool | None] = {}
    spaces: dict[str, tuple[str, str]] = {}
    own = _netns_inode("self")
    for name, (pid, ip) in hosts.items():
        try:
            ino = _netns_inode(str(pid)) if pid > 0 else own
        except OSError:  # gone since it was listed, or not ours to look into: the other probe says which
            ino = own
        if ino == own:
            out[name] = None
        else:
            spaces[name] = (f"/proc/{pid}/ns/net", ip)
    try:
        seen = listeners(spaces, port)
    except OSError:  # no right to enter namespaces (not root): the caller probes another way
        return out | {name: None for name in spaces}
    waiting: dict[str, Listener] = {}
    for name, sock in seen.items():
        out[name] = sock is not None and _holder_serves(hosts[name][0], sock.inode)
        if out[name] and sock is not None and sock.queued:
            waiting[name] = sock
    if waiting:  # connections not taken yet: taken within `settle` by a live server, never by a hung one
        time.sleep(settle)
        again = listeners({n: spaces[n] for n in waiting}, port)
        for name, before in waiting.items():
            now = again.get(name)
            out[name] = now is not None and now.inode == before.inode and now.queued < before.queued
    return out


def _netns_inode(pid: str) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def listeners(spaces: dict[str, tuple[str, str]], port: int = 22) -> dict[str, Listener | None]:
    """name -> the TCP socket listening on ip:`port` (or on any address) in the network namespace at path, for
    name -> (path, ip); None when none does. Namespaces are entered from one short-lived thread (setns changes
    only the calling thread's); a namespace gone meanwhile has none. OSError when this process may not enter
    namespaces."""
    out: dict[str, Listener | None] = {}
    failed: list[OSError] = []

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/thread-self/ns/net", "rb") as home:
            try:
                for name, (path, ip) in spaces.items():
                    try:
                        with open(path, "rb") as ns:
                            if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                                raise OSError(ctypes.get_errno(), f"setns {path}: {os.strerror(ctypes.get_errno())}")
                    except FileNotFoundError:
                        out[name] = None
                        continue
                    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
                        out[name] = lookup(nl, ip, port)
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


def lookup(nl: socket.socket, ip: str, port: int) -> Listener | None:
    """The TCP socket listening on ip:port in the namespace of sock_diag socket `nl`, by one exact request
    (inet_diag_req_v2 naming the local address and port: the kernel looks it up as an incoming connection's
    listener would be found); None when nothing listens there."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    addr = socket.inet_pton(family, ip).ljust(16, b"\0")
    sockid = struct.pack("=HH16s16sIII", socket.htons(port), 0, addr, bytes(16), 0, NO_COOKIE, NO_COOKIE)
    req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN) + sockid
    nl.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + req)
    data = nl.recv(65536)
    length, kind = struct.unpack_from("=IH", data) if len(data) >= 16 else (0, 0)
    if kind == NLMSG_ERROR:
        code = -struct.unpack_from("=i", data, 16)[0]
        if code == errno.ENOENT:
            return None
        raise OSError(code, f"sock_diag: {os.strerror(code)}")
    if kind != SOCK_DIAG_BY_FAMILY or length < 16 + DIAG_MSG.size:
        raise OSError(errno.EPROTO, f"sock_diag: unexpected reply (type {kind}, {len(data)} bytes)")
    f = DIAG_MSG.unpack_from(data, 16)
    if f[1] != TCP_LISTEN:
        return None
    return Listener(port=socket.ntohs(f[4]), queued=f[11], backlog=f[12], inode=f[14])


def _holder_serves(pid: int, inode: int, most: int = 64) -> bool:
    """Whether the process holding socket `inode` (one under the host's process `pid`, or `pid` itself) runs:
    not stopped, traced, a zombie, nor in a frozen cgroup. False when no such process is found. The children
    are looked at first: a netns host's handle (unshare) holds no socket, its child sshd does."""
    link, todo, looked = f"socket:[{inode}]", _children(pid) + [pid], 0
    while todo and looked < most:
        cur = todo.pop(0)
        looked += 1
        try:
            fds = sorted(os.listdir(f"/proc/{cur}/fd"), key=int, reverse=True)  # a listener is seldom fd 0-2
            if any(os.readlink(f"/proc/{cur}/fd/{fd}") == link for fd in fds):
                return _runs(cur)
        except OSError:
            continue
        if cur != pid:
            todo += _children(cur)
    return False


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in _read(f"/proc/{pid}/task/{pid}/children").split()]
    except (OSError, ValueError):
        return []


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _runs(pid: int) -> bool:
    try:
        state = _read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[0]
        groups = _read(f"/proc/{pid}/cgroup").splitlines()
    except (OSError, IndexError):
        return False
    return state not in NOT_SERVING and not any(_frozen(line) for line in groups)


def _frozen(line: str, root: str = "/sys/fs/cgroup") -> bool:
    """Whether the cgroup on this /proc/PID/cgroup line is frozen (cgroup v1's freezer, or v2's)."""
    _, controllers, path = line.split(":", 2)
    if path == "/" or (controllers and "freezer" not in controllers.split(",")):
        return False
    try:
        if controllers:
            return _read(f"{root}/freezer{path}/freezer.state").strip() != "THAWED"
        return "frozen 1" in _read(f"{root}{path}/cgroup.events").splitlines()
    except OSError:
        return False
