"""Asking a libvirt lab's hypervisors (providers/hypervisors.py) through virsh: one client per URI, every
hypervisor at once (one that is down answers with its VirshError, the others go on): the lab's domains,
and what each hypervisor has left for placement."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from booted.providers.hypervisors import Capacity, Hypervisor
from booted.providers.lab import Lab
from booted.providers.libvirt_options import libvirt_of
from booted.providers.virsh import Virsh, VirshError
from booted.providers.vm import host_of_vm

T = TypeVar("T")


class Hypervisors:
    """The virsh clients of the hypervisors booted talks to (kept per URI)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self._clients: dict[str, Virsh] = {}

    def virsh(self, hv: Hypervisor) -> Virsh:
        if hv.uri not in self._clients:
            self._clients[hv.uri] = Virsh(hv.uri, self.binary)
        return self._clients[hv.uri]

    def each(self, lab: Lab, fn: Callable[[Hypervisor], T]) -> dict[str, T | VirshError]:
        """fn(hv) on every hypervisor of the lab at once: name -> result or the VirshError it raised."""
        def call(hv: Hypervisor) -> T | VirshError:
            try:
                return fn(hv)
            except VirshError as exc:
                return exc
        hypervisors = libvirt_of(lab).hypervisors
        with ThreadPoolExecutor(max_workers=max(1, len(hypervisors))) as pool:
            return dict(zip((hv.name for hv in hypervisors), pool.map(call, hypervisors)))

    def domains(self, lab: Lab, every: bool = False) -> tuple[dict[str, Hypervisor], dict[str, str]]:
        """The lab's domains (running, or every defined one): host -> its hypervisor; and hypervisor -> why it
        could not be asked."""
        found: dict[str, Hypervisor] = {}
        down: dict[str, str] = {}
        by_name = {hv.name: hv for hv in libvirt_of(lab).hypervisors}
        for hv_name, result in self.each(lab, lambda hv: self.virsh(hv).names(every)).items():
            if isinstance(result, Exception):
                down[hv_name] = str(result)
                continue
            for host in filter(None, (host_of_vm(lab, vm) for vm in result)):
                found[host] = by_name[hv_name]
        return found, down

    def capacity(self, lab: Lab) -> tuple[dict[str, Capacity | None], dict[str, str]]:
        """Free memory and CPUs of every hypervisor (None and why for one that is down)."""
        def one(hv: Hypervisor) -> Capacity:
            virsh = self.virsh(hv)
            mem = virsh.info("nodememstats")
            free_kib = sum(int(mem.get(k, "0").split()[0]) for k in ("free", "buffers", "cached"))
            cpus = int(virsh.info("nodeinfo").get("CPU(s)", "1"))
            return Capacity(free_kib // 1024, cpus, vcpus_in_use(virsh.run("domstats", "--vcpu", "--list-active")))
        caps: dict[str, Capacity | None] = {}
        down: dict[str, str] = {}
        for name, result in self.each(lab, one).items():
            if isinstance(result, Exception):
                caps[name], down[name] = None, str(result)
            else:
                caps[name] = result
        return caps, down


def placed_on(lab: Lab, name: str) -> Hypervisor | None:
    """The hypervisor a host was placed on (the database's record, handed in as `lab.placed`)."""
    wanted = lab.placed(name)
    return next((hv for hv in libvirt_of(lab).hypervisors if hv.name == wanted), None) if wanted else None


def vcpus_in_use(domstats: str) -> int:
    """vCPUs of the running domains, from `virsh domstats --vcpu --list-active` (`vcpu.current=N` lines)."""
    return sum(int(line.split("=", 1)[1]) for line in domstats.splitlines()
               if line.strip().startswith("vcpu.current=") and line.split("=", 1)[1].strip().isdigit())
