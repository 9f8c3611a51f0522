"""This machine's network links, through iproute2 and /proc: bulk changes (`ip -batch`), whether a link
exists, the IPv4 addresses each link has, and IPv6 switched off on a link booted makes."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def ip_batch(lines: list[str]) -> str:
    """Run `ip -force -batch -`; returns stderr (errors of single lines do not stop the others)."""
    if not lines:
        return ""
    proc = subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, check=False)
    return proc.stderr


def add_netns(names: list[str], processes: int = 4, least: int = 64) -> str:
    """`ip netns add` each name; returns ip's errors. Most of a namespace's making is the kernel waiting (RCU
    grace periods), which goes on side by side: past `least` names, up to `processes` ip runs at once (500
    namespaces: 4.0-5.8 s in one run, 2.2-3.3 s in 8, loaded machine). The first is made alone: it makes
    /run/netns a shared mount if it is not one yet, which two ip runs must not both do."""
    lines = [f"netns add {name}" for name in names]
    runs = min(processes, len(lines) // least)
    if runs < 2:
        return ip_batch(lines)
    err = ip_batch(lines[:1])
    with ThreadPoolExecutor(max_workers=runs) as pool:
        return err + "".join(pool.map(ip_batch, [lines[1 + k::runs] for k in range(runs)]))


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def ipv4_addresses() -> dict[str, list[str]]:
    """The IPv4 addresses configured on this machine, by link: {ifname: [address, ...]} (`ip -j -4 addr`;
    empty when ip's answer cannot be read)."""
    out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=False).stdout
    try:
        links = json.loads(out or "[]")
        return {str(link.get("ifname")): [str(a["local"]) for a in link.get("addr_info", []) if "local" in a]
                for link in links}
    except (ValueError, AttributeError, TypeError):
        return {}


def disable_ipv6(link: str) -> None:
    """No IPv6 on a link booted made (no router solicitations, no SLAAC noise on the lab network); a link
    that is already gone is no error."""
    try:
        Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6").write_text("1")
    except OSError:
        pass
