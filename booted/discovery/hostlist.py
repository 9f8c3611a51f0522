"""The current host list: filled from the boot log, filtered by who answers, shown as a table."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from booted.discovery import bootlog
from booted.hosts.identity import fingerprint
from booted.kit import Kit
from booted.netcheck import ssh_banner
from booted.remote.fanout import Target
from booted.results import HostResult
from booted.state.inventory import Image, Inventory

Targets = Callable[[], list[Target]]  # every listed host, reached as its lab's provider says


def logged(kit: Kit) -> bootlog.ReadResult:
    """Read new boot-log lines into the host list (incremental: from where the last read stopped)."""
    return bootlog.read_new(kit.inventory, kit.settings.boot_log)


def _ping(ip: str) -> bool:
    return subprocess.run(["ping", "-c", "1", "-W", "1", "-q", ip], capture_output=True, check=False).returncode == 0


def probe(target: Target) -> tuple[bool, str]:
    """Does the host answer? Ping (when ping is installed and the host is at its lab IP) and SSH's banner."""
    addr, port = target.endpoint(22)
    if (addr, port) == (target.ip, 22):
        try:
            pinged = _ping(target.ip)
        except FileNotFoundError:
            pinged = True  # no ping binary: the SSH banner decides
        if not pinged:
            return False, "no ping reply"
    if not ssh_banner(addr, port=port):
        return False, f"no SSH banner on {addr}:{port}"
    return True, "answers SSH" if (addr, port) != (target.ip, 22) else "answers ping and SSH"


def filter_hosts(kit: Kit, listed: Targets) -> list[HostResult]:
    """Probe every listed host; keep the ones that answer, drop the others (and say so)."""
    targets = listed()
    with ThreadPoolExecutor(max_workers=max(1, min(kit.settings.parallel, len(targets) or 1))) as pool:
        probes = list(pool.map(probe, targets))
    kit.inventory.set_reachable({t.name: ok for t, (ok, _) in zip(targets, probes)})
    kit.inventory.remove_hosts([t.name for t, (ok, _) in zip(targets, probes) if not ok])
    return [HostResult(t.name, ok, why if ok else f"{why}: removed from the host list")
            for t, (ok, why) in zip(targets, probes)]


def clear(kit: Kit) -> int:
    """Empty the host list (hosts keep running); returns how many were listed."""
    return kit.inventory.remove_hosts()


def reset(kit: Kit, listed: Targets) -> tuple[bootlog.ReadResult, list[HostResult]]:
    """Clear the list, re-read the whole boot log, keep who answers."""
    kit.inventory.remove_hosts()
    kit.inventory.bootlog_reset(str(kit.settings.boot_log))
    return logged(kit), filter_hosts(kit, listed)


def rows(kit: Kit, networks: Callable[[Image], dict[str, str]] | None = None) -> list[dict[str, object]]:
    """One dict per listed host: what hosts_list prints (table or JSON); `networks`: a host image's address on
    each of its networks (Booted.networks_of)."""
    images = {i.name: i for i in kit.inventory.images()}
    deployed = kit.inventory.releases()
    out: list[dict[str, object]] = []
    for h in kit.inventory.hosts():
        img = images.get(h.name)
        service = img.service if img else None
        out.append({
            "name": h.name, "ip": h.ip, "env": img.env if img else None, "role": img.role if img else None,
            "service": service, "version": deployed.get((h.name, service or "")) if service else None,
            "booted_at": h.booted_at, "reachable": h.reachable, "known": img is not None,
            "hypervisor": (img.hypervisor or None) if img else None,
            "networks": networks(img) if img and networks else {img.env if img else "": h.ip},
        })
    return out


def relist(inventory: Inventory, img: Image, ssh: tuple[str, int]) -> HostResult:
    """A host that runs but is not in the host list (cleared, or booted before the current boot log):
    list it again from its pinned identity if it answers SSH at `ssh` (connections still verify its host key)."""
    addr, port = ssh
    if not ssh_banner(addr, port=port):
        return HostResult(img.name, False, "running but SSH does not answer: fab env_start_worker " + img.name)
    inventory.list_host(img.name, img.ip, img.mac, fingerprint(img.hostkey), img.started or time.time())
    return HostResult(img.name, True, "already running (listed again)")
