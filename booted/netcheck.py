"""Cheap reachability checks (an SSH banner, many at once) used by discovery, the fan-out and providers."""

from __future__ import annotations

import errno
import selectors
import socket
import time


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
