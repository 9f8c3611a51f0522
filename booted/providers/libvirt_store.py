"""booted's storage on a libvirt hypervisor: a directory pool (`booted`) holding the bootable golden disk,
uploaded once (`vol-upload`: another machine needs no shared folder), and per host a qcow2 volume backed by
it (copy-on-write, kept across stop/start), its seed disk (uploaded per start: the boot token changes) and
its serial console (a file libvirt writes there, fetched with `vol-download`).

A host's disk is `<vm>.qcow2` until a disk that snapshots live in is kept at env_stop (libvirt_snapshot.py):
then its domain is defined with the next free `<vm>.<n>.qcow2`; the disk a domain is defined with is the
host's (`working_disk`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from booted.providers.base import Progress
from booted.providers.libvirt_xml import pool_xml
from booted.providers.virsh import MISSING, Virsh, VirshError
from booted.state.locks import hold

POOL = "booted"
UPLOAD_SECONDS = 900


def ensure_pool(virsh: Virsh, pool_dir: str, definition: Path) -> str:
    """booted's storage pool (defined, built and started once, `definition` a copy of its XML): its
    directory on the hypervisor."""
    if POOL not in virsh.run("pool-list", "--all", "--name").split():
        virsh.define("pool-define", pool_xml(POOL, Path(pool_dir)), definition)
        virsh.run("pool-build", POOL)
    if POOL not in virsh.run("pool-list", "--name").split():
        virsh.run("pool-start", POOL)
    path = virsh.xml("pool-dumpxml", POOL).findtext("target/path")
    if not path:
        raise VirshError(f"storage pool {POOL} on {virsh.uri} has no target path")
    return path


def volumes(virsh: Virsh) -> set[str]:
    """Names of the volumes in booted's pool (after a refresh: files libvirt made, like consoles)."""
    virsh.run("pool-refresh", POOL)
    return {line.split()[0] for line in virsh.run("vol-list", POOL).splitlines() if line.strip()}


def upload_golden(virsh: Virsh, hypervisor: str, disk: Path, lock: Path, progress: Progress) -> str:
    """The golden disk's volume on the hypervisor, uploaded once (one uploader per hypervisor: `lock`)."""
    volume = f"golden-{disk.stem.removeprefix('bootdisk-')}.qcow2"
    with hold(lock, f"uploading the golden disk to {hypervisor}", UPLOAD_SECONDS, progress):
        if volume not in volumes(virsh):
            progress(f"uploading {disk.name} ({disk.stat().st_size >> 20} MiB) to {hypervisor} as {volume}")
            virsh.run("vol-create-as", POOL, volume, str(disk.stat().st_size), "--format", "raw")
            try:
                virsh.run("vol-upload", "--pool", POOL, volume, str(disk), timeout=UPLOAD_SECONDS)
            except VirshError:
                virsh.run("vol-delete", "--pool", POOL, volume, ok=MISSING)  # never a half-uploaded golden
                raise
    return volume


def volume_names(vm: str) -> tuple[str, str, str]:
    """A host's volumes (VM name `vm`): its disk, its seed disk and its console."""
    return f"{vm}.qcow2", f"{vm}-seed.img", f"{vm}.console"


def disk_volumes(vm: str, names: set[str]) -> list[str]:
    """Of volume `names`, the host's disks: `<vm>.qcow2` and `<vm>.<n>.qcow2` (kept for snapshots)."""
    pattern = re.compile(re.escape(vm) + r"(\.[0-9]+)?\.qcow2")
    return sorted(n for n in names if pattern.fullmatch(n))


def spare_disk(vm: str, taken: set[str]) -> str:
    """A name for a host's new disk while `<vm>.qcow2` (or another in `taken`) is kept for snapshots."""
    return next(f"{vm}.{n}.qcow2" for n in range(1, len(taken) + 2) if f"{vm}.{n}.qcow2" not in taken)


def working_disk(virsh: Virsh, vm: str) -> str:
    """The volume the host's domain is defined with as its disk (vda); `<vm>.qcow2` when none is defined."""
    try:
        domain = virsh.xml("dumpxml", "--inactive", vm)
    except VirshError as exc:
        if any(m in str(exc) for m in MISSING):
            return volume_names(vm)[0]
        raise
    for disk in domain.iterfind("devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is not None and target.get("dev") == "vda" and source is not None and source.get("file"):
            return Path(source.get("file", "")).name
    return volume_names(vm)[0]


def make_disks(virsh: Virsh, vm: str, golden: str, size: int, seed: Path, fresh: bool, disk: str = "") -> None:
    """A new host's (`fresh`) disk (`disk`, else `<vm>.qcow2`), backed by the golden volume and as large; its
    seed disk replaced by `seed`."""
    default, seed_volume, _ = volume_names(vm)
    disk = disk or default
    if fresh:
        virsh.run("vol-create-as", POOL, disk, str(size), "--format", "qcow2", "--backing-vol", golden,
                  "--backing-vol-format", "qcow2")
    virsh.run("vol-delete", "--pool", POOL, seed_volume, ok=MISSING)
    virsh.run("vol-create-as", POOL, seed_volume, str(seed.stat().st_size), "--format", "raw")
    virsh.run("vol-upload", "--pool", POOL, seed_volume, str(seed))


def delete_disks(virsh: Virsh, vm: str) -> None:
    """A host's disks (those kept for snapshots too), seed disk and console volumes."""
    _, seed, console = volume_names(vm)
    for volume in [*disk_volumes(vm, volumes(virsh)), seed, console]:
        virsh.run("vol-delete", "--pool", POOL, volume, ok=MISSING)


def copy_disk(virsh: Virsh, source: str, source_disk: str, target_disk: str, through: Path, paused: bool) -> None:
    """A new disk volume `target_disk` as a copy of host `source`'s (VM name) `source_disk`, through the local
    file `through`; `source` suspended meanwhile when `paused`. vol-clone and vol-create-from flatten the copy
    (qemu-img convert without -B, libvirt 9): a byte copy keeps it an overlay over the same golden volume (the
    backing path in its header is absolute; internal snapshots in it come along)."""
    through.parent.mkdir(parents=True, exist_ok=True)
    if paused:
        virsh.run("suspend", source)
    try:
        virsh.run("vol-download", "--pool", POOL, source_disk, str(through), "--sparse", timeout=UPLOAD_SECONDS)
    finally:
        if paused:
            virsh.run("resume", source)
    try:
        virsh.run("vol-create-as", POOL, target_disk, "0", "--format", "raw")
        virsh.run("vol-upload", "--pool", POOL, target_disk, str(through), "--sparse", timeout=UPLOAD_SECONDS)
    finally:
        through.unlink(missing_ok=True)


def fetch_console(virsh: Virsh, vm: str, local: Path) -> None:
    """The host's serial console from the pool into `local` (replaced whole)."""
    virsh.run("pool-refresh", POOL)
    tmp = local.with_name(f".console.{os.getpid()}")
    virsh.run("vol-download", "--pool", POOL, volume_names(vm)[2], str(tmp))
    os.replace(tmp, local)


def console_size(virsh: Virsh, vm: str) -> int:
    """The bytes the host's console holds, as its hypervisor sees the file (0 while the pool does not list it:
    `pool-refresh` lists a new one)."""
    try:
        info = virsh.info("vol-info", "--pool", POOL, volume_names(vm)[2], "--bytes")
        return int(info.get("Capacity", "0").split()[0])
    except (VirshError, ValueError, IndexError):
        return 0
