"""The libvirt provider: lab hosts as libvirt domains on one or more hypervisors (providers/hypervisors.py).

On each hypervisor booted owns a directory storage pool (`booted`): the bootable golden disk
(images/bootdisk.py, qcow2) is uploaded into it once (`vol-upload`, so another machine needs no shared
folder), each host is a qcow2 volume backed by it (copy-on-write, kept across stop/start), its identity
a seed disk uploaded per start (hosts/seed.py: the boot token changes) and its serial console a file in the
pool, fetched with `vol-download` for `image_console`. The lab network is a libvirt network per lab over a
bridge: here the lab bridge (the gateway, where booted's nginx and apt proxy listen), on another machine
the bridge the user connects to it. Domain type kvm when the hypervisor offers it and it starts, qemu (TCG)
otherwise (remembered per hypervisor). State is libvirt's own listing, one `virsh list` per hypervisor.
Stop: ACPI shutdown, then destroy. A hypervisor that is down fails its hosts with that reason; the others go on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, TypeVar

from booted.config import Settings
from booted.errors import ProviderError
from booted.hosts.identity import Identity
from booted.hosts.seed import write_seed
from booted.images.bootdisk import ensure_bootdisk
from booted.images.golden import ensure_golden
from booted.images.vm_assets import ensure_assets
from booted.netcheck import ssh_banner
from booted.providers.base import Lab, Progress, Provider, Started
from booted.providers.bridge import ensure_bridge, ip_batch, link_exists, remove_bridge
from booted.providers.hypervisors import Capacity, Hypervisor, place
from booted.providers.libvirt_xml import DomainSpec, domain_xml, network_xml, pool_xml
from booted.providers.virsh import HypervisorDown, Virsh, VirshError
from booted.state.locks import hold

T = TypeVar("T")
POOL = "booted"
INIT = "init=/usr/lib/booted/init"
SHUTDOWN_SECONDS = 6.0
MISSING = ("not found", "failed to get", "no storage vol", "no network with matching name", "is not running",
           "not active")


def vm_name(lab: Lab, host: str) -> str:
    return f"booted-{lab.lab_id}-{host}"


def net_name(lab: Lab) -> str:
    return f"booted-{lab.lab_id}"


class LibvirtProvider(Provider):
    name = "libvirt"
    tools: ClassVar[dict[str, str]] = {"virsh": "libvirt-clients", "qemu-img": "qemu-utils", "ip": "iproute2"}
    needs_root = True  # the lab bridge with the gateway address, and the uplink into it

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._virsh: dict[str, Virsh] = {}
        self._pools: dict[str, str] = {}

    # hypervisors -------------------------------------------------------------------------------------
    def virsh(self, hv: Hypervisor) -> Virsh:
        if hv.uri not in self._virsh:
            self._virsh[hv.uri] = Virsh(hv.uri, self.settings.which("virsh") or "virsh")
        return self._virsh[hv.uri]

    def _each(self, lab: Lab, fn: Callable[[Hypervisor], T]) -> dict[str, T | VirshError]:
        """fn(hv) on every hypervisor of the lab at once: name -> result or the VirshError it raised."""
        def call(hv: Hypervisor) -> T | VirshError:
            try:
                return fn(hv)
            except VirshError as exc:
                return exc
        with ThreadPoolExecutor(max_workers=max(1, len(lab.hypervisors))) as pool:
            return dict(zip((hv.name for hv in lab.hypervisors), pool.map(call, lab.hypervisors)))

    def hypervisor(self, lab: Lab, name: str) -> Hypervisor | None:
        """The hypervisor a host was placed on (recorded in its folder when it was started)."""
        try:
            wanted = (lab.host_dir(name) / "hypervisor").read_text().strip()
        except OSError:
            return None
        return next((hv for hv in lab.hypervisors if hv.name == wanted), None)

    def where(self, lab: Lab, every: bool = False) -> tuple[dict[str, Hypervisor], dict[str, str]]:
        """The lab's domains (running, or every defined one) -> their hypervisor; and hypervisor -> why it
        could not be asked."""
        prefix = f"booted-{lab.lab_id}-"
        found: dict[str, Hypervisor] = {}
        down: dict[str, str] = {}
        by_name = {hv.name: hv for hv in lab.hypervisors}
        for hv_name, result in self._each(lab, lambda hv: self.virsh(hv).names(every)).items():
            if isinstance(result, Exception):
                down[hv_name] = str(result)
                continue
            for vm in result:
                if vm.startswith(prefix):
                    found[vm[len(prefix):]] = by_name[hv_name]
        return found, down

    def capacity(self, lab: Lab) -> tuple[dict[str, Capacity | None], dict[str, str]]:
        """Free memory and CPUs of every hypervisor (None and why for one that is down)."""
        def one(hv: Hypervisor) -> Capacity:
            v = self.virsh(hv)
            mem = v.info("nodememstats")
            free_kib = sum(int(mem.get(k, "0").split()[0]) for k in ("free", "buffers", "cached"))
            cpus = int(v.info("nodeinfo").get("CPU(s)", "1"))
            return Capacity(free_kib // 1024, cpus, vcpus_in_use(v.run("domstats", "--vcpu", "--list-active")))
        caps: dict[str, Capacity | None] = {}
        down: dict[str, str] = {}
        for name, result in self._each(lab, one).items():
            if isinstance(result, Exception):
                caps[name], down[name] = None, str(result)
            else:
                caps[name] = result
        return caps, down

    def place(self, lab: Lab, hosts: list[Identity], recorded: dict[str, str], pins: dict[str, str]
              ) -> tuple[dict[str, str], dict[str, str]]:
        caps, down = self.capacity(lab)
        return place([(h.name, h.memory, h.cpus) for h in hosts], caps, recorded, pins, down)

    # observing ---------------------------------------------------------------------------------------
    def host_of(self, lab: Lab, argv: list[str]) -> str | None:
        """libvirt's QEMU: `qemu-system-x86_64 -name guest=booted-<lab id>-<host>,debug-threads=on ...`"""
        if "-name" not in argv[:-1] or not argv[0].endswith("qemu-system-x86_64"):
            return None
        value = argv[argv.index("-name") + 1].removeprefix("guest=").split(",")[0]
        prefix = f"booted-{lab.lab_id}-"
        return value[len(prefix):] if value.startswith(prefix) else None

    def running(self, lab: Lab) -> dict[str, int]:
        """libvirt's listing of each hypervisor; the PID of a domain's QEMU where it runs on this machine
        (0 on another)."""
        found, _ = self.where(lab)
        pids = self._pids(lab) if found else {}
        return {name: pids.get(name, 0) for name in found}

    def _pids(self, lab: Lab) -> dict[str, int]:
        """PIDs of the lab's domains' QEMU processes that run on this machine (from /proc)."""
        return {name: pid for name, (pid, _) in self.processes(lab).items()}

    def console(self, lab: Lab, name: str) -> Path:
        """The host's serial console, fetched from its hypervisor's pool (the last copy if it is down)."""
        local = lab.host_dir(name) / "console.log"
        hv = self.hypervisor(lab, name)
        if hv is not None:
            try:
                v = self.virsh(hv)
                v.run("pool-refresh", POOL)
                tmp = local.with_name(f".console.{os.getpid()}")
                v.run("vol-download", "--pool", POOL, f"{vm_name(lab, name)}.console", str(tmp))
                os.replace(tmp, local)
            except VirshError:
                pass
        return local

    # the network -------------------------------------------------------------------------------------
    def prepare_network(self, lab: Lab) -> None:
        """The lab bridge with the gateway, and the uplink to other machines in it. The lab's libvirt network
        on each hypervisor is made where its hosts start (_start_on), so a failure there is that host's."""
        ensure_bridge(lab)
        if lab.uplink:
            if not link_exists(lab.uplink):
                raise ProviderError(f"environment {lab.env!r}: uplink {lab.uplink!r} is not an interface on this "
                                    "machine (it connects the lab bridge to the other hypervisors' bridges)")
            err = ip_batch([f"link set {lab.uplink} master {lab.bridge}", f"link set {lab.uplink} up"])
            if err.strip():
                raise ProviderError(f"could not put uplink {lab.uplink} into {lab.bridge}: {err.strip()}")

    def _network(self, lab: Lab, hv: Hypervisor) -> None:
        v, name = self.virsh(hv), net_name(lab)
        if name not in v.run("net-list", "--all", "--name").split():
            self._define(v, "net-define", network_xml(name, hv.bridge or lab.bridge), lab.dir / f"net-{hv.name}.xml")
        if name not in v.run("net-list", "--name").split():
            v.run("net-start", name)

    def teardown(self, lab: Lab) -> None:
        """Once no host of the lab runs: its libvirt networks and the lab bridge (which lets the uplink go)."""
        if self.running(lab):
            return
        name = net_name(lab)
        self._each(lab, lambda hv: (self.virsh(hv).run("net-destroy", name, ok=MISSING),
                                    self.virsh(hv).run("net-undefine", name, ok=MISSING)))
        remove_bridge(lab)

    # disks -------------------------------------------------------------------------------------------
    def _pool(self, hv: Hypervisor, v: Virsh) -> str:
        """booted's storage pool on the hypervisor (defined, built and started once): its directory there."""
        if hv.uri not in self._pools:
            if POOL not in v.run("pool-list", "--all", "--name").split():
                self._define(v, "pool-define", pool_xml(POOL, Path(hv.pool_dir)),
                             self.settings.state_dir / "libvirt" / f"pool-{hv.name}.xml")
                v.run("pool-build", POOL)
            if POOL not in v.run("pool-list", "--name").split():
                v.run("pool-start", POOL)
            path = v.xml("pool-dumpxml", POOL).findtext("target/path")
            if not path:
                raise VirshError(f"storage pool {POOL} on {hv.uri} has no target path")
            self._pools[hv.uri] = path
        return self._pools[hv.uri]

    @staticmethod
    def _define(v: Virsh, command: str, text: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        try:
            v.run(command, str(tmp))
        finally:
            tmp.unlink(missing_ok=True)

    def _golden(self, hv: Hypervisor, v: Virsh, disk: Path, progress: Progress) -> str:
        """The golden disk's volume on the hypervisor, uploaded once (one uploader per hypervisor here)."""
        volume = f"golden-{disk.stem.removeprefix('bootdisk-')}.qcow2"
        lock = self._mark(hv, "lock")
        with hold(lock, f"uploading the golden disk to {hv.name}", 900, progress):
            if volume not in volumes(v):
                progress(f"uploading {disk.name} ({disk.stat().st_size >> 20} MiB) to {hv.name} as {volume}")
                v.run("vol-create-as", POOL, volume, str(disk.stat().st_size), "--format", "raw")
                try:
                    v.run("vol-upload", "--pool", POOL, volume, str(disk), timeout=900)
                except VirshError:
                    v.run("vol-delete", "--pool", POOL, volume, ok=MISSING)  # never a half-uploaded golden
                    raise
        return volume

    def _kind(self, hv: Hypervisor, v: Virsh) -> str:
        """kvm if the hypervisor offers it and it has not failed there before, else qemu (TCG)."""
        if self._kvm_failed(hv).exists():
            return "qemu"
        caps = v.xml("capabilities")
        return "kvm" if caps.find("guest/arch/domain[@type='kvm']") is not None else "qemu"

    def _kvm_failed(self, hv: Hypervisor) -> Path:
        return self._mark(hv, "no-kvm")

    def _mark(self, hv: Hypervisor, suffix: str) -> Path:
        """A file of this state dir about one hypervisor (its upload lock; that kvm failed there)."""
        folder = self.settings.state_dir / "libvirt"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{hashlib.sha256(hv.uri.encode()).hexdigest()[:12]}.{suffix}"

    # lifecycle ---------------------------------------------------------------------------------------
    def start(self, lab: Lab, hosts: list[Identity], progress: Progress) -> tuple[list[Started], dict[str, str]]:
        golden = ensure_golden(self.settings, progress, lab.packages)
        cache = self.settings.cache_dir
        assets = ensure_assets(cache, golden, progress, self.settings.path)
        disk = ensure_bootdisk(cache, assets, INIT, progress, self.settings.path, "qcow2")
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)], capture_output=True,
                                         text=True, check=True).stdout)
        size = int(info["virtual-size"])  # a host's volume is as large as the disk it is backed by
        self.prepare_network(lab)
        running, _ = self.where(lab)
        by_hv: dict[str, list[Identity]] = {}
        errors: dict[str, str] = {}
        for host in hosts:
            if host.name in running:
                continue
            if not any(hv.name == host.hypervisor for hv in lab.hypervisors):
                errors[host.name] = f"not placed on a hypervisor of the lab (got {host.hypervisor!r})"
                continue
            by_hv.setdefault(host.hypervisor, []).append(host)
        pids = self._pids(lab) if running else {}
        started = [Started(h.name, pids.get(h.name, 0)) for h in hosts if h.name in running]
        todo = sum(len(hs) for hs in by_hv.values())
        if todo:
            on = ", ".join(f"{n} ({len(hs)})" for n, hs in by_hv.items())
            progress(f"starting {todo} libvirt domain(s) on {on}")
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, len(by_hv))) as pool:
            futures = [pool.submit(self._start_on, lab, next(hv for hv in lab.hypervisors if hv.name == n), hs, disk,
                                   size, progress, t0) for n, hs in by_hv.items()]
            for future in futures:
                ok, failed = future.result()
                started += ok
                errors.update(failed)
        return started, errors

    def _start_on(self, lab: Lab, hv: Hypervisor, hosts: list[Identity], disk: Path, size: int, progress: Progress,
                  t0: float) -> tuple[list[Started], dict[str, str]]:
        v = self.virsh(hv)
        try:
            pool_dir = self._pool(hv, v)
            golden = self._golden(hv, v, disk, progress)
            kind = self._kind(hv, v)
            self._network(lab, hv)  # a bridge missing there fails here, with libvirt's reason
            have = volumes(v)
        except VirshError as exc:
            why = f"hypervisor {hv.name} ({hv.uri}) is down: {exc}" if isinstance(exc, HypervisorDown) else \
                f"hypervisor {hv.name}: {exc}"
            return [], {h.name: why for h in hosts}
        started: list[Started] = []
        errors: dict[str, str] = {}
        parallel = max(1, min(self.settings.boot_parallel, len(hosts)))
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            for name, pid, error in pool.map(lambda h: self._boot(lab, hv, v, h, kind, golden, size, pool_dir,
                                                                  f"{vm_name(lab, h.name)}.qcow2" in have), hosts):
                if pid is not None:
                    started.append(Started(name, pid))
                if error:
                    errors[name] = error
                progress(f"  [{time.monotonic() - t0:5.1f}s] {name} on {hv.name}: {error or 'answers SSH'}")
        return started, errors

    def _boot(self, lab: Lab, hv: Hypervisor, v: Virsh, host: Identity, kind: str, golden: str, size: int,
              pool_dir: str, exists: bool) -> tuple[str, int | None, str | None]:
        vm, hdir = vm_name(lab, host.name), lab.host_dir(host.name)
        try:
            hdir.mkdir(parents=True, exist_ok=True)
            (hdir / "hypervisor").write_text(hv.name + "\n")
            host.write_dir(hdir / "identity")
            seed = write_seed(hdir / "identity", hdir / "seed.img", self.settings.path)
            volume, seed_vol = f"{vm}.qcow2", f"{vm}-seed.img"
            if not exists:
                v.run("vol-create-as", POOL, volume, str(size), "--format", "qcow2", "--backing-vol", golden,
                      "--backing-vol-format", "qcow2")
            v.run("vol-delete", "--pool", POOL, seed_vol, ok=MISSING)
            v.run("vol-create-as", POOL, seed_vol, str(seed.stat().st_size), "--format", "raw")
            v.run("vol-upload", "--pool", POOL, seed_vol, str(seed))
            seed.unlink(missing_ok=True)
            kind = self._define_and_start(lab, hv, v, host, kind, Path(pool_dir))
        except (VirshError, OSError) as exc:
            return host.name, None, str(exc)
        deadline, checked = time.monotonic() + self.settings.boot_timeout, time.monotonic()
        while time.monotonic() < deadline:
            if ssh_banner(host.ip, 1.0):
                return host.name, self._pid(lab, host.name), None
            if time.monotonic() - checked >= 1.0:  # is the domain still running (and KVM not failing)?
                checked = time.monotonic()
                try:
                    state = v.run("domstate", vm, "--reason").strip()
                except VirshError as exc:
                    return host.name, None, str(exc)
                if kind == "kvm" and not state.startswith("running"):  # "KVM internal error": paused
                    self._kvm_failed(hv).write_text(f"{time.strftime('%F %T')}: a kvm domain went {state}\n")
                    try:
                        v.run("destroy", vm, ok=MISSING)
                        kind = self._define_and_start(lab, hv, v, host, "qemu", Path(pool_dir))
                    except VirshError as exc:
                        return host.name, None, str(exc)
                    deadline = time.monotonic() + self.settings.boot_timeout
                elif not state.startswith("running"):
                    return host.name, None, (f"the domain is {state} on {hv.name} while booting (fab image_console "
                                             f"{host.name})")
            time.sleep(0.2)
        why = f"no SSH banner within {self.settings.boot_timeout:.0f}s on {hv.name} (still running)"
        if not hv.local:
            why += (f": hosts on {hv.name} may not reach the lab network; its bridge {hv.bridge} must carry "
                    f"{lab.network} to this machine's lab bridge (README: libvirt across machines)")
        return host.name, self._pid(lab, host.name), why

    def _define_and_start(self, lab: Lab, hv: Hypervisor, v: Virsh, host: Identity, kind: str, pool: Path) -> str:
        """Define the domain (again: memory, CPUs and MAC follow environments.py) and start it; kvm that fails
        to start is remembered and the domain redefined as qemu. Returns the type it runs as."""
        vm = vm_name(lab, host.name)
        spec = DomainSpec(vm, str(uuid.uuid5(uuid.NAMESPACE_URL, f"booted:{lab.lab_id}:{host.name}")), host.memory,
                          host.cpus, pool / f"{vm}.qcow2", pool / f"{vm}-seed.img", net_name(lab), host.mac,
                          pool / f"{vm}.console", kind)
        self._define(v, "define", domain_xml(spec), lab.host_dir(host.name) / "domain.xml")
        try:
            v.run("start", vm)
        except VirshError as exc:
            if kind != "kvm" or "kvm" not in str(exc).lower():
                raise
            self._kvm_failed(hv).write_text(f"{time.strftime('%F %T')}: {exc}\n")
            return self._define_and_start(lab, hv, v, host, "qemu", pool)
        return kind

    def _pid(self, lab: Lab, name: str) -> int:
        return self._pids(lab).get(name, 0)

    def stop(self, lab: Lab, names: list[str]) -> dict[str, str]:
        running, down = self.where(lab)
        errors: dict[str, str] = {}
        for name in names:
            hv = self.hypervisor(lab, name)
            if name not in running and hv is not None and hv.name in down:
                errors[name] = f"hypervisor {hv.name} is down ({down[hv.name]}): cannot stop it"
        targets = [n for n in names if n in running]

        def one(name: str) -> str | None:
            v, vm = self.virsh(running[name]), vm_name(lab, name)
            try:
                v.run("shutdown", vm, ok=MISSING)  # the ACPI power button: the guest syncs and powers off
                deadline = time.monotonic() + SHUTDOWN_SECONDS
                while time.monotonic() < deadline and vm in v.names():
                    time.sleep(0.3)
                if vm in v.names():
                    v.run("destroy", vm, ok=MISSING)
                return None if vm not in v.names() else f"domain {vm} still runs on {running[name].name}"
            except VirshError as exc:
                return str(exc)

        with ThreadPoolExecutor(max_workers=max(1, min(16, len(targets)))) as pool:
            for name, error in zip(targets, pool.map(one, targets)):
                if error:
                    errors[name] = error
        return errors

    def destroy(self, lab: Lab, name: str) -> None:
        """Undefine the domain and delete its volumes (disk, seed, console) where it was defined."""
        defined, down = self.where(lab, every=True)
        hv = defined.get(name) or self.hypervisor(lab, name)
        if hv is not None and hv.name in down:
            raise ProviderError(f"host {name}: hypervisor {hv.name} is down ({down[hv.name]}): cannot delete its "
                                "domain and volumes there")
        if name in self.running(lab):
            raise ProviderError(f"host {name} is running: stop it first (fab image_stop {name})")
        if hv is not None:
            v, vm = self.virsh(hv), vm_name(lab, name)
            v.run("undefine", vm, ok=MISSING)
            v.run("pool-refresh", POOL)
            for volume in (f"{vm}.qcow2", f"{vm}-seed.img", f"{vm}.console"):
                v.run("vol-delete", "--pool", POOL, volume, ok=MISSING)
        shutil.rmtree(lab.host_dir(name), ignore_errors=True)

    def clone(self, lab: Lab, src: str, new: str) -> None:
        """A copy of src's volume on src's hypervisor (src paused meanwhile if it runs); new lives there too."""
        hv = self.hypervisor(lab, src)
        if hv is None:
            return  # never started: the clone starts from the golden disk too
        v, source, target = self.virsh(hv), vm_name(lab, src), vm_name(lab, new)
        if f"{target}.qcow2" in volumes(v):
            raise ProviderError(f"host {new} already has a volume on {hv.name}")
        # vol-clone and vol-create-from flatten the copy (qemu-img convert without -B, libvirt 9): a byte copy
        # keeps it an overlay over the same golden volume (the backing path in its header is absolute)
        copy = lab.host_dir(new) / f".clone.{os.getpid()}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        paused = source in v.names()
        if paused:
            v.run("suspend", source)
        try:
            v.run("vol-download", "--pool", POOL, f"{source}.qcow2", str(copy), "--sparse", timeout=900)
        finally:
            if paused:
                v.run("resume", source)
        try:
            v.run("vol-create-as", POOL, f"{target}.qcow2", "0", "--format", "raw")
            v.run("vol-upload", "--pool", POOL, f"{target}.qcow2", str(copy), "--sparse", timeout=900)
        finally:
            copy.unlink(missing_ok=True)
        (lab.host_dir(new) / "hypervisor").write_text(hv.name + "\n")


def vcpus_in_use(domstats: str) -> int:
    """vCPUs of the running domains, from `virsh domstats --vcpu --list-active` (`vcpu.current=N` lines)."""
    return sum(int(line.split("=", 1)[1]) for line in domstats.splitlines()
               if line.strip().startswith("vcpu.current=") and line.split("=", 1)[1].strip().isdigit())


def volumes(v: Virsh) -> set[str]:
    """Names of the volumes in booted's pool (after a refresh: files libvirt made, like consoles)."""
    v.run("pool-refresh", POOL)
    return {line.split()[0] for line in v.run("vol-list", POOL).splitlines() if line.strip()}

