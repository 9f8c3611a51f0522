"""Generations of one golden image: which is current, when the mirrors were last asked, and which older ones
may go.

A golden image (one package set from one pair of mirrors: its key) is built again when its suites move on;
each build is a generation, `rootfs-<key>-<UTC build time>`, beside the others. `golden-<key>.json` in the
cache says which generation is current, the package-list hashes it was built from, when it was built and when
the mirrors were last checked, and which generations it replaced. A replaced generation stays until nothing
refers to it: no process on this machine names or holds it (a netns host's overlay names its rootfs in its
argv; a VM holds its base disk open) and no qcow2 disk under a state directory that used this cache is backed
by its disk (stopped VMs, kept disks). Then its rootfs and its packed disks are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from booted.state.locks import hold

CHECK_EVERY = 86400  # seconds between two checks of the mirrors for one image (at most daily)
GRACE = 900  # a generation replaced this recently is kept: a run that chose it just before may not use it yet
USERS = "golden-users"  # the state directories that took images from this cache, one per line
SKIP_DIRS = {"upper", "work", "root", "served", "releases", "apt-cacher-ng", "cache", "nginx", "keys"}
SNAPSHOT_REF = "golden.ref"  # in a snapshot's folder: the image files it depends on, one a line
Ref = tuple[str, str]  # (who refers, the path it names): ("pid 4242", "/…/disk-….img")


@dataclass
class Record:
    """golden-<key>.json: the current generation of one golden image and what it replaced."""

    current: str
    suites: dict[str, str]  # suite -> package-list hash the current generation was built from
    built: float
    checked: float  # when the mirrors were last asked (or the build's time)
    superseded: dict[str, float] = field(default_factory=dict)  # older generation -> when it was replaced

    @staticmethod
    def path(cache_dir: Path, key: str) -> Path:
        return cache_dir / f"golden-{key}.json"

    @classmethod
    def load(cls, path: Path) -> Record | None:
        try:
            data = json.loads(path.read_text())
            return cls(str(data["current"]), {str(k): str(v) for k, v in data["suites"].items()},
                       float(data["built"]), float(data["checked"]),
                       {str(k): float(v) for k, v in data.get("superseded", {}).items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")
        tmp.replace(path)

    def replaced_by(self, name: str, suites: dict[str, str], now: float) -> Record:
        """This record after `name` (built now from `suites`) became current."""
        old = {} if self.current == name else {self.current: now}
        return Record(name, suites, now, now, {**self.superseded, **old})


def generation_name(key: str, now: float) -> str:
    return f"rootfs-{key}-{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}"


def check_due(record: Record | None, now: float) -> bool:
    """Whether to ask the mirrors now: never asked, a day since, or the clock went back."""
    return record is None or not 0 <= now - record.checked < CHECK_EVERY


def moved_on(built: dict[str, str], served: dict[str, str]) -> list[str]:
    """The suites whose package list the mirrors serve differs from the one the image was built from."""
    return [suite for suite, digest in served.items() if built.get(suite) != digest]


def register_user(cache_dir: Path, state_dir: Path) -> None:
    """Remember that `state_dir` takes images from this cache (its VM disks may be backed by them)."""
    try:
        with hold(cache_dir / f"{USERS}.lock", "registering a state directory", 60):
            known = users(cache_dir)
            if state_dir not in known:
                _write_users(cache_dir, [*known, state_dir])
    except OSError:
        pass  # another user's read-only cache: this run builds nothing in it, and prunes nothing


def _write_users(cache_dir: Path, dirs: list[Path]) -> None:
    tmp = cache_dir / f".{USERS}.{os.getpid()}"
    tmp.write_text("".join(f"{d}\n" for d in dirs))
    tmp.replace(cache_dir / USERS)


def process_refs(proc: Path = Path("/proc")) -> list[Ref]:
    """Every path a process on this machine names in its argv or holds open (fds, cwd, root)."""
    refs: list[Ref] = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        who = f"pid {entry.name}"
        try:
            refs += [(who, a) for a in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0") if a]
            links = [entry / "cwd", entry / "root", *(entry / "fd").iterdir()]
        except OSError:
            continue
        for link in links:
            try:
                refs.append((who, os.readlink(link)))
            except OSError:
                continue
    return refs


def qcow2_backing(path: Path) -> str | None:
    """The backing file a qcow2 disk names in its header (absolute), or None."""
    try:
        with path.open("rb") as disk:
            head = disk.read(20)
            if len(head) < 20 or head[:4] != b"QFI\xfb":
                return None
            offset, size = int.from_bytes(head[8:16], "big"), int.from_bytes(head[16:20], "big")
            if not offset or not 0 < size < 4096:
                return None
            disk.seek(offset)
            name = disk.read(size).decode(errors="replace")
    except OSError:
        return None
    return os.path.normpath(path.parent / name)


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line]
    except OSError:
        return []


def disk_refs(state_dirs: Iterable[Path]) -> list[Ref]:
    """The backing files of every qcow2 disk under these state directories (host disks, kept or copied),
    and the image files every lab snapshot names (booted/snapshots/store.py: golden.ref)."""
    refs: list[Ref] = []
    for state in state_dirs:
        for folder, dirs, files in os.walk(state):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            for name in files:
                if name.endswith(".qcow2") and (backing := qcow2_backing(Path(folder) / name)):
                    refs.append((f"disk {Path(folder) / name}", backing))
                elif name == SNAPSHOT_REF:  # a lab snapshot keeps the generation it was taken on
                    refs += [(f"snapshot {folder}", line) for line in _lines(Path(folder) / name)]
    return refs


def users(cache_dir: Path) -> list[Path]:
    try:
        return [Path(line) for line in (cache_dir / USERS).read_text().splitlines() if line.strip()]
    except OSError:
        return []


def live_users(cache_dir: Path) -> list[Path]:
    """The registered state directories that still exist (the others are forgotten)."""
    with hold(cache_dir / f"{USERS}.lock", "registering a state directory", 60):
        known = users(cache_dir)
        live = [d for d in known if d.is_dir()]
        if live != known:
            with contextlib.suppress(OSError):
                _write_users(cache_dir, live)
    return live


def in_use(cache_dir: Path, name: str, refs: list[Ref]) -> str | None:
    """Who refers to generation `name` (its rootfs or a disk packed from it), or None."""
    paths = [str(cache_dir / name), str(cache_dir / f"disk-{name.removeprefix('rootfs-')}-")]
    for who, ref in refs:
        if any(p in ref for p in paths):
            return f"{who} uses {ref}"
    return None


def prune(cache_dir: Path, now: float, refs: list[Ref], grace: float = GRACE) -> list[str]:
    """Remove the replaced generations nothing refers to (rootfs and packed disks); say what went and what
    stays. The caller holds the cache's build lock (no generation is being built or packed meanwhile)."""
    said: list[str] = []
    for path in sorted(cache_dir.glob("golden-*.json")):
        record = Record.load(path)
        if record is None or not record.superseded:
            continue
        for name, when in sorted(record.superseded.items()):
            user = f"replaced {int(now - when) // 60} min ago" if now - when < grace else in_use(cache_dir, name, refs)
            if user:
                said.append(f"older golden image {name} kept: {user}")
                continue
            for disk in cache_dir.glob(f"disk-{name.removeprefix('rootfs-')}-*.img"):
                disk.unlink(missing_ok=True)
            shutil.rmtree(cache_dir / name, ignore_errors=True)
            del record.superseded[name]
            said.append(f"older golden image {name} removed: nothing uses it")
        record.save(path)
    return said
