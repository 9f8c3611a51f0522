"""Lab hosts cannot spoof the lab: each host's port on the lab bridge accepts only its leased MAC and IP.

What libvirt's clean-traffic filter does, in nftables: one table per lab (`bridge booted_<lab id>`) whose
`prerouting` chain sends every frame that enters through a guarded port (netns veth `bv...`, qemu tap
`bq...`) to that port's chain: its source MAC must be the lease's, it must be IPv4 or ARP, its IPv4 source
and its ARP sender (MAC and IP) the lease's; anything else is dropped. Prerouting, as libvirt does, and
not forward + input: it sees frames to other hosts (forward) and to the gateway (input: nginx, the apt
proxy) alike, and it runs before the bridge learns the source MAC, so a forged MAC never moves another
host's (or the gateway's) entry in the bridge's forwarding table to the forger's port. Every port is
guarded when it is made, before its host starts. Ports are matched by `iifname`: this kernel lacks
NFT_BRIDGE_META (no `ibrname`). Each change is one `nft -f -` transaction; removing the lab bridge
removes the table.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from booted.config import CHILD_ENV
from booted.errors import ProviderError
from booted.providers.lab import Lab

MAC_RE = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z")
IP_RE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}\Z")
PORT_RE = re.compile(r"^[a-z0-9]{1,15}\Z")


def table(lab: Lab) -> str:
    return f"booted_{lab.lab_id}"


def script(lab: Lab, ports: list[tuple[str, str, str]]) -> str:
    """The nft transaction that guards `ports` ((port, MAC, IP) each) and keeps the ports guarded before:
    the table, its base chain and the port map are made if missing; each port's chain is rewritten."""
    nft_table = f"bridge {table(lab)}"
    lines = [f"add table {nft_table}", f"add map {nft_table} ports {{ type ifname : verdict; }}"]
    lines += [f"add chain {nft_table} prerouting {{ type filter hook prerouting priority filter; policy accept; }}",
              f"flush chain {nft_table} prerouting", f"add rule {nft_table} prerouting iifname vmap @ports"]
    for port, mac, ip in ports:
        mac = mac.lower()
        if not (PORT_RE.match(port) and MAC_RE.match(mac) and IP_RE.match(ip)):
            raise ProviderError(f"port filter: bad port {port!r}, MAC {mac!r} or IP {ip!r}")
        chain = f"{nft_table} p_{port}"
        lines += [f"add chain {chain}", f"flush chain {chain}",
                  f"add rule {chain} ether saddr != {mac} drop",
                  f"add rule {chain} ether type != {{ ip, arp }} drop",
                  f"add rule {chain} ether type ip ip saddr != {ip} drop",
                  f"add rule {chain} ether type arp arp hlen != 6 drop",
                  f"add rule {chain} ether type arp arp plen != 4 drop",
                  f"add rule {chain} ether type arp arp saddr ether != {mac} drop",
                  f"add rule {chain} ether type arp arp saddr ip != {ip} drop",
                  f'add element {nft_table} ports {{ "{port}" : goto p_{port} }}']
    return "\n".join(lines) + "\n"


def guard(lab: Lab, ports: list[tuple[str, str, str]]) -> None:
    """Let each (port, MAC, IP) send only as that MAC and IP; raise ProviderError when nft refuses (a host
    is never started on an unguarded port)."""
    if ports:
        _nft(script(lab, ports), f"could not guard the ports of lab {lab.env!r}")


def unguard(lab: Lab) -> None:
    """Remove the lab's table (the lab bridge is going). Made first, so a missing table is no error."""
    nft_table = f"bridge {table(lab)}"
    if shutil.which("nft", path=CHILD_ENV["PATH"]):  # without nft there is no table either
        _nft(f"add table {nft_table}\ndelete table {nft_table}\n",
             f"could not remove the port filter of lab {lab.env!r}")


def _nft(text: str, failure: str) -> None:
    try:
        proc = subprocess.run(["nft", "-f", "-"], input=text, capture_output=True, text=True, check=False,
                              env=CHILD_ENV)
    except FileNotFoundError:
        raise ProviderError(f"{failure}: nft not found (apt-get install nftables, or run setup.sh)") from None
    if proc.returncode != 0:
        raise ProviderError(f"{failure}: nft: {proc.stderr.strip()[-600:]}")
