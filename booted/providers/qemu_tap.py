"""The qemu hosts' taps on the lab bridges (root): one per host and network, named from its address there
(b q <lab id> <host number>[x<network number>]), guarded by the port filter before its VM starts, recorded
in the host's folder (`tap`: a `NETWORK TAP` line each, eth0's first) so that a stop finds them, and
removed with the VM or, left over by a crashed run, at teardown."""

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
    """A tap per host and network, on that network's bridge (a crashed run's leftover replaced); host ->
    error for those whose taps could not be made."""
    nics = [(h, tap_name(lab, nic.ip), nic, lab.bridge_of(nic.network) if k else lab.bridge)
            for h in hosts for k, nic in enumerate(h.nics)]
    lines = [f"link del {t}" for _, t, _, _ in nics if link_exists(t)]  # leftover of a crashed run
    lines += [f"tuntap add dev {t} mode tap" for _, t, _, _ in nics]
    err = ip_batch(lines)
    for _, tap, _, _ in nics:
        disable_ipv6(tap)
    guard(lab, [(tap, nic.mac, nic.ip) for _, tap, nic, _ in nics])
    err += ip_batch([f"link set {t} master {bridge} up" for _, t, _, bridge in nics])
    return {h.name: f"could not create tap {t}: {err.strip()[-300:]}" for h, t, _, _ in nics if not link_exists(t)}


def host_taps(lab: Lab, host: Identity) -> list[str]:
    return [tap_name(lab, nic.ip) for nic in host.nics]


def record_tap(lab: Lab, host: Identity) -> None:
    (lab.host_dir(host.name) / "tap").write_text(
        "".join(f"{nic.network or lab.env} {tap_name(lab, nic.ip)}\n" for nic in host.nics))


def recorded_taps(hdir: Path) -> dict[str, str]:
    """network -> the tap a host's VM was started with there ({}: user-mode networking, or never started);
    a one-word line (an older booted's) is the first network's."""
    try:
        lines = [line.split() for line in (hdir / "tap").read_text().splitlines() if line.strip()]
    except OSError:
        return {}
    return {(words[0] if len(words) > 1 else ""): words[-1] for words in lines}


def recorded_tap(hdir: Path) -> str | None:
    """The tap of a host's first NIC (None: user-mode networking, or never started)."""
    return next(iter(recorded_taps(hdir).values()), None)


def remove_taps(taps: list[str]) -> None:
    ip_batch([f"link del {t}" for t in taps if link_exists(t)])


def remove_stale_taps(lab: Lab, in_use: set[str]) -> None:
    """The lab's taps no VM uses (leftovers of crashed runs)."""
    pattern = re.compile(rf"bq{lab.lab_id}\d+(x\d)?")
    try:
        links = os.listdir("/sys/class/net")
    except OSError:
        links = []
    ip_batch([f"link del {t}" for t in links if pattern.fullmatch(t) and t not in in_use])
