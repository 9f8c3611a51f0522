"""The libvirt provider: lab hosts as libvirt domains on one or more hypervisors (providers/hypervisors.py).

On each hypervisor booted owns a storage pool with the bootable golden disk and each host's volumes
(providers/libvirt_store.py); the lab network is a libvirt network per lab over a bridge
(providers/libvirt_net.py); a host is a domain, kvm where KVM works, else qemu (TCG), remembered per
hypervisor (providers/libvirt_domain.py). State is libvirt's own listing, one `virsh list` per hypervisor.
A hypervisor that is down fails its hosts with that reason; the others go on. Snapshots are libvirt's own,
internal, with memory (providers/libvirt_snapshot.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from booted.config import Settings
from booted.errors import ProviderError
from booted.hosts.identity import Identity
from booted.hosts.seed import write_seed
from booted.providers import libvirt_snapshot as snap
from booted.providers import libvirt_store as store
from booted.providers.base import Progress, Started
from booted.providers.bridge import remove_bridge
from booted.providers.hypervisors import Hypervisor, place
from booted.providers.lab import Lab
from booted.providers.libvirt_domain import KvmRecord, domain_type, host_domain, shut_down, start_domain
from booted.providers.libvirt_hypervisors import Hypervisors, placed_on
from booted.providers.libvirt_net import ensure_lab_bridge, ensure_lab_network, remove_lab_network
from booted.providers.libvirt_options import libvirt_of
from booted.providers.qemuctl import QEMU, detect_accel
from booted.providers.virsh import MISSING, HypervisorDown, Virsh, VirshError
from booted.providers.vm import INITS, Launch, VmProvider, vm_name


@dataclass(frozen=True)
class Ready:
    """A hypervisor ready for this start's hosts: its pool's directory, the golden volume, the domain type,
    the volumes already there."""

    hypervisor: Hypervisor
    pool_dir: Path
    golden: str
    kind: str
    volumes: set[str]


class LibvirtProvider(VmProvider):
    name = "libvirt"
    tools: ClassVar[dict[str, str]] = {"virsh": "libvirt-clients", "qemu-img": "qemu-utils", "ip": "iproute2"}
    needs_root = True  # the lab bridge with the gateway address, and the uplink into it
    process = QEMU
    name_option = "-name"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.hypervisors = Hypervisors(settings.which("virsh") or "virsh")
        self._pools: dict[str, str] = {}

    @staticmethod
    def name_in_option(value: str) -> str:
        """libvirt's QEMU: `-name guest=booted-<lab id>-<host>,debug-threads=on`."""
        return value.removeprefix("guest=").split(",")[0]

    # hypervisors -------------------------------------------------------------------------------------
    def virsh(self, hv: Hypervisor) -> Virsh:
        return self.hypervisors.virsh(hv)

    def place(self, lab: Lab, hosts: list[Identity], recorded: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        caps, down = self.hypervisors.capacity(lab)
        return place([(h.name, h.memory, h.cpus) for h in hosts], caps, recorded, libvirt_of(lab).pinned(), down)

    def _state_file(self, hv: Hypervisor, suffix: str) -> Path:
        """A file of this state dir about one hypervisor (its upload lock; what KVM did there)."""
        folder = self.settings.state_dir / "libvirt"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{hashlib.sha256(hv.uri.encode()).hexdigest()[:12]}.{suffix}"

    # observing ---------------------------------------------------------------------------------------
    def running(self, lab: Lab) -> dict[str, int]:
        """libvirt's listing of each hypervisor; the PID of a domain's QEMU where it runs on this machine
        (0 on another)."""
        found, _ = self.hypervisors.domains(lab)
        pids = self._pids(lab) if found else {}
        return {name: pids.get(name, 0) for name in found}

    def _pids(self, lab: Lab) -> dict[str, int]:
        """PIDs of the lab's domains' QEMU processes that run on this machine (from /proc)."""
        return {name: pid for name, (pid, _) in self.processes(lab).items()}

    def console(self, lab: Lab, name: str) -> Path:
        """The host's serial console, fetched from its hypervisor's pool (the last copy if it is down)."""
        local = lab.host_dir(name) / "console.log"
        hv = placed_on(lab, name)
        if hv is not None:
            try:
                store.fetch_console(self.virsh(hv), vm_name(lab, name), local)
            except VirshError:
                pass
        return local

    def why_not_booted(self, lab: Lab, name: str) -> str:
        """A domain that stopped or paused; or hosts on another machine, whose bridge may not reach the lab."""
        hv = placed_on(lab, name)
        if hv is None:
            return ""
        try:
            state = self.virsh(hv).run("domstate", vm_name(lab, name), "--reason").strip()
        except VirshError as exc:
            return str(exc)
        if not state.startswith("running"):
            return f"the domain is {state} on {hv.name} while booting (fab image_console {name})"
        if not hv.local:
            return (f"hosts on {hv.name} may not reach the lab network; its bridge {hv.bridge} must carry "
                    f"{lab.network} to this machine's lab bridge (README: libvirt across machines)")
        return ""

    # the network -------------------------------------------------------------------------------------
    def prepare_network(self, lab: Lab) -> None:
        """The lab bridge with the gateway, and the uplink to other machines in it. The lab's libvirt network
        on each hypervisor is made where its hosts launch, so a failure there is that host's."""
        ensure_lab_bridge(lab)

    def teardown(self, lab: Lab) -> None:
        """Once no host of the lab runs: its libvirt networks and the lab bridge (which lets the uplink go)."""
        if self.running(lab):
            return
        self.hypervisors.each(lab, lambda hv: remove_lab_network(self.virsh(hv), lab))
        remove_bridge(lab)

    # launching ---------------------------------------------------------------------------------------
    def launcher(self, lab: Lab, hosts: list[Identity], progress: Progress) -> tuple[Launch, dict[str, str]]:
        assets = self.golden_assets(lab.packages, progress)
        disk = self.bootable_disk(assets, INITS["busybox"], progress, "qcow2")
        hypervisors = libvirt_of(lab).hypervisors
        # a local hypervisor is this machine: the qemu provider's verdict on its KVM (cached per machine, not per
        # state dir) spares every fresh state dir a kvm domain that fails first
        local_tcg = any(hv.local for hv in hypervisors) and \
            detect_accel(self.settings.cache_dir, assets.kernel.vmlinuz, self.settings.accel)[0] == "tcg"
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)], capture_output=True,
                                         text=True, check=True).stdout)
        size = int(info["virtual-size"])  # a host's volume is as large as the disk it is backed by
        errors: dict[str, str] = {}
        counts: dict[str, int] = {}
        for host in hosts:
            if any(hv.name == host.hypervisor for hv in hypervisors):
                counts[host.hypervisor] = counts.get(host.hypervisor, 0) + 1
            else:
                errors[host.name] = f"not placed on a hypervisor of the lab (got {host.hypervisor!r})"
        if counts:
            on = ", ".join(f"{name} ({count})" for name, count in counts.items())
            progress(f"starting {sum(counts.values())} libvirt domain(s) on {on}")
        used = [hv for hv in hypervisors if hv.name in counts]
        with ThreadPoolExecutor(max_workers=max(1, len(used))) as pool:
            prepared = dict(zip((hv.name for hv in used),
                                pool.map(lambda hv: self._ready(lab, hv, disk, progress, local_tcg), used)))
        ready = {name: hv for name, hv in prepared.items() if isinstance(hv, Ready)}
        errors |= {h.name: why for h in hosts if isinstance(why := prepared.get(h.hypervisor), str)}
        return (lambda host: self._launch(lab, ready[host.hypervisor], host, size)), errors

    def _ready(self, lab: Lab, hv: Hypervisor, disk: Path, progress: Progress, local_tcg: bool) -> Ready | str:
        """The hypervisor's pool, golden volume, domain type and the lab's network there; or why not."""
        virsh = self.virsh(hv)
        try:
            if hv.uri not in self._pools:
                definition = self.settings.state_dir / "libvirt" / f"pool-{hv.name}.xml"
                self._pools[hv.uri] = store.ensure_pool(virsh, hv.pool_dir, definition)
            golden = store.upload_golden(virsh, hv.name, disk, self._state_file(hv, "lock"), progress)
            kind = "qemu" if hv.local and local_tcg else domain_type(virsh, self._kvm(hv))
            ensure_lab_network(virsh, lab, hv, lab.dir / f"net-{hv.name}.xml")
            return Ready(hv, Path(self._pools[hv.uri]), golden, kind, store.volumes(virsh))
        except VirshError as exc:
            if isinstance(exc, HypervisorDown):
                return f"hypervisor {hv.name} ({hv.uri}) is down: {exc}"
            return f"hypervisor {hv.name}: {exc}"

    def _kvm(self, hv: Hypervisor) -> KvmRecord:
        return KvmRecord(self._state_file(hv, "no-kvm"), self._state_file(hv, "kvm"))

    def _launch(self, lab: Lab, ready: Ready, host: Identity, size: int) -> tuple[int | None, str | None]:
        """A host's volumes (its disk made once, its seed disk new), then its domain defined and started."""
        hv, virsh = ready.hypervisor, self.virsh(ready.hypervisor)
        vm, hdir = vm_name(lab, host.name), lab.host_dir(host.name)
        try:
            hdir.mkdir(parents=True, exist_ok=True)
            host.write_dir(hdir / "identity")
            seed = write_seed(hdir / "identity", hdir / "seed.img", self.settings.path)
            disk = store.working_disk(virsh, vm)  # a new name once env_stop kept its disk for snapshots
            store.make_disks(virsh, vm, ready.golden, size, seed, disk not in ready.volumes, disk)
            seed.unlink(missing_ok=True)
            spec = host_domain(lab, host, ready.pool_dir, ready.kind, disk)
            start_domain(virsh, spec, hdir / "domain.xml", self._kvm(hv))
        except (VirshError, OSError) as exc:
            return None, str(exc)
        return self._pids(lab).get(host.name, 0), None

    def launch_label(self, host: Identity) -> str:
        return f"{host.name} on {host.hypervisor}"

    # the rest of the contract ------------------------------------------------------------------------
    def stop(self, lab: Lab, names: list[str]) -> dict[str, str]:
        running, down = self.hypervisors.domains(lab)
        errors: dict[str, str] = {}
        for name in names:
            hv = placed_on(lab, name)
            if name not in running and hv is not None and hv.name in down:
                errors[name] = f"hypervisor {hv.name} is down ({down[hv.name]}): cannot stop it"
        targets = [n for n in names if n in running]
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(targets)))) as pool:
            stopped = pool.map(lambda n: shut_down(self.virsh(running[n]), vm_name(lab, n), running[n].name), targets)
            errors |= {name: error for name, error in zip(targets, stopped) if error}
        return errors

    def destroy(self, lab: Lab, name: str) -> None:
        """Undefine the domain and delete its volumes (disk, seed, console) where it was defined."""
        defined, down = self.hypervisors.domains(lab, every=True)
        hv = defined.get(name) or placed_on(lab, name)
        if hv is not None and hv.name in down:
            raise ProviderError(f"host {name}: hypervisor {hv.name} is down ({down[hv.name]}): cannot delete its "
                                "domain and volumes there")
        if name in self.running(lab):
            raise ProviderError(f"host {name} is running: stop it first (fab image_stop {name})")
        if hv is not None:
            virsh, vm = self.virsh(hv), vm_name(lab, name)
            virsh.run("undefine", vm, "--snapshots-metadata", ok=MISSING)
            store.delete_disks(virsh, vm)
        shutil.rmtree(lab.host_dir(name), ignore_errors=True)

    def discard(self, lab: Lab, name: str) -> None:
        """env_stop: the host's domain and volumes go, except a disk snapshots live in (libvirt_snapshot.py)."""
        hv = placed_on(lab, name)
        if hv is not None and name not in self.running(lab) and \
                snap.keep_disk(self.virsh(hv), lab, name, self._named(lab)):
            shutil.rmtree(lab.host_dir(name), ignore_errors=True)
            return
        self.destroy(lab, name)

    def clone(self, lab: Lab, src: str, new: str) -> None:
        """A copy of src's volume on src's hypervisor (src paused meanwhile if it runs); new lives there too."""
        hv = placed_on(lab, src)
        if hv is None:
            return  # never started: the clone starts from the golden disk too
        virsh, source, target = self.virsh(hv), vm_name(lab, src), vm_name(lab, new)
        if store.disk_volumes(target, store.volumes(virsh)):
            raise ProviderError(f"host {new} already has a volume on {hv.name}")
        store.copy_disk(virsh, source, store.working_disk(virsh, source), store.volume_names(target)[0],
                        lab.host_dir(new) / f".clone.{os.getpid()}", source in virsh.names())

    # snapshots (libvirt_snapshot.py) -----------------------------------------------------------------
    snapshot_keeps = ("libvirt's internal snapshot of each domain (disk and memory, in its qcow2 volume on its "
                      "hypervisor); a restore continues it")
    restore_resumes = True

    def _on(self, lab: Lab) -> dict[str, Hypervisor]:
        return self.hypervisors.domains(lab)[0]

    def pause(self, lab: Lab, names: list[str]) -> dict[str, str]:
        return snap.pause(self.virsh, lab, self._on(lab), names)

    def resume(self, lab: Lab, names: list[str]) -> dict[str, str]:
        return snap.pause(self.virsh, lab, self._on(lab), names, resume=True)

    def resume_command(self, lab: Lab, names: list[str]) -> list[str] | None:
        return snap.resume_command(self.hypervisors.binary, lab, self._on(lab), names)

    def drop(self, lab: Lab, names: list[str]) -> None:
        snap.drop(self.virsh, lab, self._on(lab), names)

    def save(self, lab: Lab, name: str, folder: Path) -> list[str]:
        snap.save(self.virsh, lab, name, folder)
        return []  # the golden volume it is backed by stays on the hypervisor (booted never deletes one)

    def restore(self, lab: Lab, name: str, folder: Path) -> None:
        snap.restore(self.virsh, lab, name, folder)

    def start_saved(self, lab: Lab, hosts: list[Identity]) -> tuple[list[Started], dict[str, str]]:
        errors = snap.start_all(self.virsh, lab, [h.name for h in hosts])
        pids = self._pids(lab)
        return [Started(h.name, pids.get(h.name, 0)) for h in hosts if h.name not in errors], errors

    def forget(self, lab: Lab, name: str, folder: Path) -> None:
        snap.forget(self.virsh, lab, name, folder, self._named(lab))

    def _named(self, lab: Lab) -> set[str]:
        """libvirt snapshots that booted's snapshot folders of the lab name (state dir: snapshots/<env>/)."""
        return snap.known(self.settings.state_dir / "snapshots" / lab.env)
