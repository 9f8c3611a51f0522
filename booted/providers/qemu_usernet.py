"""QEMU user-mode networking for hosts without root: each VM keeps its lab IP in a private slirp network;
the controller reaches its ports forwarded on 127.0.0.1 (recorded per host in forwards.json); its boot call
to the gateway is relayed to booted's nginx on loopback."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from booted.errors import ProviderError
from booted.hosts.identity import Identity
from booted.providers.lab import Lab
from booted.providers.qemuctl import opt

RELAY = Path(__file__).resolve().parent / "relay.py"
FORWARDS = "forwards.json"  # user-mode networking: guest port -> port on 127.0.0.1
USERNET_MARK = "usernet"


def relay_python() -> str:
    """A python3 QEMU can run the relay with: the system's (stdlib only), else the one running booted."""
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (QEMU binds them a moment later; a clash fails that VM's start)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def read_forwards(hdir: Path) -> dict[int, int]:
    try:
        return {int(k): int(v) for k, v in json.loads((hdir / FORWARDS).read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def write_forwards(hdir: Path, forwards: dict[int, int]) -> None:
    (hdir / FORWARDS).write_text(json.dumps({str(k): v for k, v in forwards.items()}) + "\n")


def user_netdev(lab: Lab, host: Identity, forwards: dict[int, int]) -> str:
    """QEMU user-mode networking: the guest keeps its lab IP in a private slirp network of its own;
    `restrict=on` lets it reach nothing but its boot URL (guestfwd to a relay into nginx on loopback);
    the controller reaches its ports on 127.0.0.1 (hostfwd). VMs do not reach each other this way."""
    net = lab.network
    slirp_host, slirp_dns = str(net.broadcast_address - 1), str(net.broadcast_address - 2)
    if host.ip in (slirp_host, slirp_dns):
        raise ProviderError(f"{host.name}: {host.ip} is reserved for user-mode networking in {net}; "
                            "use a larger network")
    boot = urlsplit(host.boot_url)
    relay = f"{opt(relay_python())} {opt(RELAY)} 127.0.0.1 {boot.port or 80}"
    parts = [f"user,id=n0,restrict=on,net={net},host={slirp_host},dns={slirp_dns}"]
    parts += [f"hostfwd=tcp:127.0.0.1:{fwd}-{host.ip}:{guest}" for guest, fwd in sorted(forwards.items())]
    parts.append(f"guestfwd=tcp:{boot.hostname}:{boot.port or 80}-cmd:{relay}")
    if host.apt_proxy:  # the apt proxy on the gateway, relayed to booted's apt-cacher-ng on loopback
        apt = urlsplit(host.apt_proxy)
        relay = f"{opt(relay_python())} {opt(RELAY)} 127.0.0.1 {apt.port or 80}"
        parts.append(f"guestfwd=tcp:{apt.hostname}:{apt.port or 80}-cmd:{relay}")
    return ",".join(parts)
