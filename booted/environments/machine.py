"""An environment's network against this machine's: the lab network may not overlap an address or a
(non-default) route of the machine, other than the lab's own bridge. Read when a lab is about to start,
not when environments.py is loaded (the file is the same on every machine; the machine's networks differ)."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from booted.environments.model import Environment
from booted.errors import ConfigError

BOOTED_BRIDGE_RE = re.compile(r"^bt[0-9a-f]{6}(x\d)?\Z")  # a booted lab's bridge (Lab.bridges): bt + lab id [x k]


@dataclass(frozen=True)
class Claim:
    """A part of the IPv4 space this machine uses: an interface's address or a route."""

    network: ipaddress.IPv4Network
    device: str
    what: str  # "address 192.168.1.5/24 on wlan0", "route 10.0.0.0/8 via 192.168.1.1 dev wlan0"
    exact_gateway: bool = False  # the address is the lab's gateway with the lab's prefix


def claims(env: Environment, ip_tool: str | None = None) -> list[Claim]:
    """This machine's IPv4 addresses and non-default main-table routes (`ip -j`); none without `ip`."""
    tool = ip_tool or shutil.which("ip") or ""
    if not tool:
        return []
    try:
        addrs = json.loads(_ip(tool, "addr", "show") or "[]")
        routes = json.loads(_ip(tool, "route", "show", "table", "main") or "[]")
    except ValueError:
        return []
    found = []
    for link in addrs:
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and "local" in a:
                net = ipaddress.IPv4Network(f"{a['local']}/{a.get('prefixlen', 32)}", strict=False)
                found.append(Claim(net, link.get("ifname", ""), f"address {a['local']}/{net.prefixlen} on "
                                   f"{link.get('ifname', '?')}", a["local"] == str(env.gateway)
                                   and net == env.network))
    for r in routes:
        dst = r.get("dst", "default")
        if dst == "default":
            continue
        try:
            net = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue
        via = f" via {r['gateway']}" if r.get("gateway") else ""
        found.append(Claim(net, r.get("dev", ""), f"route {net}{via} dev {r.get('dev', '?')}"))
    return found


def check_machine(env: Environment, own: Iterable[str], found: list[Claim]) -> None:
    """ConfigError when `env`'s network overlaps one of this machine's addresses or routes that is not on
    the lab's own interfaces (`own`: its bridge; an interface holding exactly the lab's gateway address is
    the lab's too, unless it is another booted lab's bridge)."""
    mine = set(own) | {c.device for c in found if c.exact_gateway and not BOOTED_BRIDGE_RE.match(c.device)}
    for claim in found:
        net = next((n for n in env.networks if claim.network.overlaps(n.cidr)), None)
        if claim.device in mine or net is None:
            continue
        other = " (another booted lab's bridge, from another state directory?)" \
            if BOOTED_BRIDGE_RE.match(claim.device) else ""
        raise ConfigError(f"{net.where or env.source}: environment {env.name!r}: network {net.cidr} "
                          f"overlaps this machine's {claim.what}{other}: hosts could not reach it, nor it them; "
                          "choose a network no interface or route of this machine uses (see ip addr, ip route)")


def _ip(tool: str, *args: str) -> str:
    try:
        proc = subprocess.run([tool, "-j", "-4", *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout if proc.returncode == 0 else ""
