"""The current host list: filled from the boot log, filtered by who answers, shown as a table."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from booted.discovery import bootlog
from booted.discovery.netcheck import ssh_banner
from booted.remote.fanout import Target
from booted.results import HostResult

if TYPE_CHECKING:
    from booted.context import Booted


def logged(ctx: Booted) -> bootlog.ReadResult:
    """Read new boot-log lines into the host list (incremental: from where the last read stopped)."""
    return bootlog.read_new(ctx.inventory, ctx.settings.boot_log)


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


def filter_hosts(ctx: Booted) -> list[HostResult]:
    """Probe every listed host; keep the ones that answer, drop the others (and say so)."""
    targets = ctx.targets()
    with ThreadPoolExecutor(max_workers=max(1, min(ctx.settings.parallel, len(targets) or 1))) as pool:
        probes = list(pool.map(probe, targets))
    ctx.inventory.set_reachable({t.name: ok for t, (ok, _) in zip(targets, probes)})
    ctx.inventory.remove_hosts([t.name for t, (ok, _) in zip(targets, probes) if not ok])
    return [HostResult(t.name, ok, why if ok else f"{why}: removed from the host list")
            for t, (ok, why) in zip(targets, probes)]


def clear(ctx: Booted) -> int:
    """Empty the host list (hosts keep running); returns how many were listed."""
    return ctx.inventory.remove_hosts()


def reset(ctx: Booted) -> tuple[bootlog.ReadResult, list[HostResult]]:
    """Clear the list, re-read the whole boot log, keep who answers."""
    ctx.inventory.remove_hosts()
    ctx.inventory.bootlog_reset(str(ctx.settings.boot_log))
    return logged(ctx), filter_hosts(ctx)


def rows(ctx: Booted) -> list[dict[str, object]]:
    """One dict per listed host: what hosts_list prints (table or JSON)."""
    images = {i.name: i for i in ctx.inventory.images()}
    deployed = ctx.inventory.releases()
    out: list[dict[str, object]] = []
    for h in ctx.inventory.hosts():
        img = images.get(h.name)
        service = img.service if img else None
        out.append({
            "name": h.name, "ip": h.ip, "env": img.env if img else None, "role": img.role if img else None,
            "service": service, "version": deployed.get((h.name, service or "")) if service else None,
            "booted_at": h.booted_at, "reachable": h.reachable, "known": img is not None,
            "hypervisor": (img.hypervisor or None) if img else None,
        })
    return out
