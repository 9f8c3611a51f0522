"""Waiting for hosts to boot: their boot-log line (believed only when it matches what booted made: see
bootlog.vet), then the SSH banner."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from booted.discovery import bootlog
from booted.netcheck import ssh_banner
from booted.results import HostResult
from booted.state.inventory import Inventory


def boot_timeout(seconds: float, booting: int, cores: int | None = None) -> float:
    """How long `booting` VMs booting at once may take to answer: BOOTED_BOOT_TIMEOUT (`seconds`), longer
    when more than 2 VMs per core boot (they share the CPUs: TCG is CPU-bound)."""
    cores = cores or os.cpu_count() or 1
    return seconds * max(1.0, booting / (2 * cores))


@dataclass(frozen=True)
class Expected:
    """A host booted started, and where its SSH answers."""

    name: str
    ssh: tuple[str, int]


def wait_booted(inventory: Inventory, boot_log: Path, hosts: list[Expected], since: float, timeout: float,
                say: Callable[[str], None], why: Callable[[str], str]) -> dict[str, HostResult]:
    """Poll the boot log until every host phoned home after `since`, then wait for its SSH banner. A host
    that made it has its seconds from `since` to its banner (verified); `why(name)` adds a hint (the
    console's last lines) to one that did not."""
    pending = {h.name: h for h in hosts}
    result: dict[str, HostResult] = {}
    deadline = time.monotonic() + timeout
    shown = -1
    while pending and time.monotonic() < deadline:
        bootlog.read_new(inventory, boot_log)
        booted = {h.name: h for h in inventory.hosts() if h.booted_at >= since - 1}
        for name in [n for n in pending if n in booted]:  # listed = a believed line of this boot
            pending.pop(name)
            result[name] = HostResult(name, True, f"booted in {booted[name].booted_at - since:.1f}s")
        if len(result) != shown:
            shown = len(result)
            say(f"  discovered {len(result)}/{len(hosts)} host(s)")
        if pending:
            time.sleep(0.1)
    for name in pending:
        result[name] = HostResult(name, False, f"no boot-log line within {timeout:.0f}s{why(name)}")
    ok = [h for h in hosts if result[h.name].ok]
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(ok)))) as pool:
        banners = dict(zip([h.name for h in ok], pool.map(lambda h: verified(h.ssh, deadline), ok)))
    for name, at in banners.items():
        if at is None:
            result[name] = HostResult(name, False, f"phoned home but SSH does not answer{why(name)}")
        else:
            result[name] = HostResult(name, True, result[name].detail, seconds=at - since)
    inventory.set_reachable({n: r.ok for n, r in result.items() if n in banners})
    return result


def verified(ssh: tuple[str, int], deadline: float) -> float | None:
    """When (epoch seconds) the host's SSH banner answered; None: not before the deadline."""
    return time.time() if wait_banner(ssh[0], ssh[1], deadline) else None


def wait_banner(addr: str, port: int, deadline: float) -> bool:
    """Poll until an SSH banner answers on addr:port, or the deadline passes. Each probe waits longer for the
    banner (1 s, then up to 5 s): a TCG guest's sshd forks and re-executes itself per connection, which on a
    machine loaded far past its cores takes more than a second, and a probe that always gives up first never
    sees it."""
    probe = 1.0
    while True:
        if ssh_banner(addr, probe, port):
            return True
        if time.monotonic() > deadline:
            return False
        probe = min(5.0, probe * 1.5)
        time.sleep(0.05)
