"""Hypervisors of a libvirt lab and where each host goes.

An environment with provider libvirt lists its hypervisors (`hypervisors = [URI or {"uri", "name",
"bridge", "pool"}, ...]`, default the local `qemu:///system`). A local one (no host in its URI) plugs its
hosts into the lab bridge on this machine, where the gateway address is; another machine's plugs them into a
bridge there that the user connects to the lab network (README: "libvirt across machines").

Placement is Nova's filter-and-weigh in small: a hypervisor qualifies if it is up, has the free memory and
stays within 16 vCPUs per CPU (Nova's default allocation ratio); among those the one with the most free
memory wins (Nova's RAM weigher: spreading), counting what this run already placed there. A host may pin a
hypervisor by name; a host placed before stays where its disk is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from booted.rules import HOST_NAME

URI_RE = re.compile(r"^qemu(\+(ssh|libssh|libssh2|tcp|tls|unix|ext))?://[A-Za-z0-9@._:\[\]-]*/system(\?[A-Za-z0-9=&/._,-]*)?\Z")
BRIDGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\Z")
POOL_DIR_RE = re.compile(r"^/[A-Za-z0-9/._-]{1,200}\Z")
DEFAULT_URI = "qemu:///system"
DEFAULT_POOL_DIR = "/var/lib/libvirt/booted"
CPU_RATIO = 16  # vCPUs per physical CPU (Nova's default cpu_allocation_ratio)


@dataclass(frozen=True)
class Hypervisor:
    """One libvirt daemon a lab's hosts run on."""

    name: str
    uri: str
    bridge: str = ""  # another machine's bridge that carries the lab network ("" : the lab bridge here)
    pool_dir: str = DEFAULT_POOL_DIR  # where booted's storage pool lives on that machine

    @property
    def local(self) -> bool:
        return not urlsplit(self.uri).hostname


def parse_hypervisors(raw: Any) -> tuple[Hypervisor, ...]:
    """Validate an environment's `hypervisors` (ValueError with what is wrong and what is allowed)."""
    if raw is None:
        return (Hypervisor("local", DEFAULT_URI),)
    if not isinstance(raw, list | tuple) or not raw:
        raise ValueError("'hypervisors' must be a non-empty list of libvirt URIs or dicts "
                         "{'uri': ..., 'name': ..., 'bridge': ..., 'pool': ...}")
    out: list[Hypervisor] = []
    for item in raw:
        spec = {"uri": item} if isinstance(item, str) else item
        if not isinstance(spec, dict) or set(spec) - {"uri", "name", "bridge", "pool"} or "uri" not in spec:
            raise ValueError(f"hypervisor {item!r}: a libvirt URI string or a dict with 'uri' and optionally "
                             "'name', 'bridge', 'pool'")
        uri = spec["uri"]
        if not isinstance(uri, str) or not URI_RE.match(uri):
            raise ValueError(f"hypervisor URI {uri!r}: a libvirt system URI such as qemu:///system or "
                             "qemu+ssh://root@hv2.example/system")
        host = urlsplit(uri).hostname or ""
        name = spec.get("name", host.split(".")[0] if host else "local")
        if not isinstance(name, str) or not HOST_NAME.match(name):
            raise ValueError(f"hypervisor {uri}: name {name!r}: lowercase letters, digits and -, starting with a "
                             "letter (give 'name' when the host name does not make one)")
        bridge = spec.get("bridge", "")
        if not isinstance(bridge, str) or (bridge and not BRIDGE_RE.match(bridge)):
            raise ValueError(f"hypervisor {name}: bridge {bridge!r}: an interface name (letters, digits, _ . -, at "
                             "most 15)")
        pool = spec.get("pool", DEFAULT_POOL_DIR)
        if not isinstance(pool, str) or not POOL_DIR_RE.match(pool) or ".." in pool.split("/"):
            raise ValueError(f"hypervisor {name}: pool {pool!r}: an absolute directory on that machine")
        hv = Hypervisor(name, uri, bridge, pool)
        if hv.local and bridge:
            raise ValueError(f"hypervisor {name} ({uri}) is this machine: its hosts join the lab bridge, where "
                             "the gateway is; leave out 'bridge'")
        if not hv.local and not bridge:
            raise ValueError(f"hypervisor {name} ({uri}) is another machine: give 'bridge', the bridge there that "
                             "carries the lab network to this machine (README: libvirt across machines)")
        if any(h.name == name or h.uri == uri for h in out):
            raise ValueError(f"hypervisor {name} ({uri}) is listed twice: names and URIs are unique")
        out.append(hv)
    return tuple(out)


@dataclass(frozen=True)
class Capacity:
    """What a hypervisor has left: free memory (MiB), CPUs, vCPUs already given to running domains."""

    free_mb: int
    cpus: int
    vcpus_used: int


def place(wanted: list[tuple[str, int, int]], capacity: dict[str, Capacity | None], recorded: dict[str, str],
          pins: dict[str, str], down: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Hosts (name, memory MiB, vCPUs) -> hypervisor names. `capacity` is None for a hypervisor that is down
    (`down` has why). Returns (placement, host -> why it could not be placed)."""
    free = {n: c.free_mb for n, c in capacity.items() if c is not None}
    vcpus = {n: c.vcpus_used for n, c in capacity.items() if c is not None}
    placement: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, memory, cpus in wanted:
        fixed = recorded.get(name) or ""
        pin = pins.get(name) or ""
        if fixed and fixed in capacity and pin and pin != fixed:
            errors[name] = (f"pinned to hypervisor {pin} but its disk is on {fixed}: delete the host (fab image_del "
                            f"{name}) to move it")
            continue
        choice = fixed if fixed in capacity else pin
        if choice:
            if capacity.get(choice) is None:
                errors[name] = f"hypervisor {choice} is down: {down.get(choice, 'no answer')}"
                continue
        else:
            fits = [n for n in free if free[n] >= memory
                    and vcpus[n] + cpus <= CPU_RATIO * max(1, capacity[n].cpus)]  # type: ignore[union-attr]
            if not fits:
                why = "; ".join(f"{n}: down ({down.get(n, 'no answer')})" if c is None else
                                f"{n}: {free[n]} MiB free, {vcpus[n]}/{CPU_RATIO * c.cpus} vCPUs"
                                for n, c in capacity.items())
                errors[name] = f"no hypervisor has room for {memory} MiB and {cpus} vCPU(s) ({why})"
                continue
            choice = max(fits, key=lambda n: (free[n], -list(capacity).index(n)))
        placement[name] = choice
        free[choice] -= memory
        vcpus[choice] += cpus
    return placement, errors
