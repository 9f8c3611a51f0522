"""The qemu hosts' taps on the lab bridge (root): one per host, named from its IP (b q <lab id> <host
number>), guarded by the port filter before its VM starts, recorded in the host's folder (`tap`) so that a
stop finds it, and removed with the VM or, left over by a crashed run, at teardown."""

from __future__ import annotations

import os
import re
from pathlib import Path

from booted.hosts.identity import Identity
from booted.providers.lab import Lab
from booted.providers.links import disable_ipv6, ip_batch, link_exists
from booted.providers.portfilter import guard
from booted.providers.qemu_cmdline import tap_name


def make_taps(lab: Lab, hosts: list[Identity]) -> dict[str, str]:
    """A tap on the lab bridge per host (a crashed run's leftover replaced); host -> error for those whose
    tap could not be made."""
    return make_taps_for(lab, {h.name: (h.ip, h.mac) for h in hosts})


def make_taps_for(lab: Lab, hosts: dict[str, tuple[str, str]]) -> dict[str, str]:
    """make_taps for hosts given as name -> (IP, MAC)."""
    taps = [tap_name(lab, ip) for ip, _ in hosts.values()]
    lines = [f"link del {t}" for t in taps if link_exists(t)]  # leftover of a crashed run
    lines += [f"tuntap add dev {t} mode tap" for t in taps]
    err = ip_batch(lines)
    for tap in taps:
        disable_ipv6(tap)
    guard(lab, [(tap_name(lab, ip), mac, ip) for ip, mac in hosts.values()])
    err += ip_batch([f"link set {t} master {lab.bridge} up" for t in taps])
    return {n: f"could not create tap {tap_name(lab, ip)}: {err.strip()[-300:]}"
            for n, (ip, _) in hosts.items() if not link_exists(tap_name(lab, ip))}


def record_tap(lab: Lab, host: Identity) -> None:
    (lab.host_dir(host.name) / "tap").write_text(tap_name(lab, host.ip) + "\n")


def recorded_tap(hdir: Path) -> str | None:
    """The tap a host's VM was started with (None: user-mode networking, or never started)."""
    try:
        return (hdir / "tap").read_text().strip() or None
    except OSError:
        return None


def remove_taps(taps: list[str]) -> None:
    ip_batch([f"link del {t}" for t in taps if link_exists(t)])


def remove_stale_taps(lab: Lab, in_use: set[str]) -> None:
    """The lab's taps no VM uses (leftovers of crashed runs)."""
    pattern = re.compile(rf"bq{lab.lab_id}\d+")
    try:
        links = os.listdir("/sys/class/net")
    except OSError:
        links = []
    ip_batch([f"link del {t}" for t in links if pattern.fullmatch(t) and t not in in_use])
