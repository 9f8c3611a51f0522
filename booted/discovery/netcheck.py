"""Cheap reachability checks used by discovery, hosts_filter and providers."""

from __future__ import annotations

import socket


def ssh_banner(ip: str, timeout: float = 2.0, port: int = 22) -> bool:
    """True when something on ip:port greets with an SSH banner."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(16).startswith(b"SSH-")
    except OSError:
        return False
