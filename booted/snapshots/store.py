"""Where snapshots live: `<state dir>/snapshots/<env>/<name>/` with `manifest.json` (what was taken: the
hosts, booted's records, the pause), `golden.ref` (the image files the snapshot depends on: golden generations
are kept while a snapshot names them, images/generations.py) and `hosts/<host>/` (what the provider saved).

A snapshot is written into `.partial-<name>-<pid>-<random>` beside and renamed into place once complete:
a run killed half-way leaves no half snapshot listed, and the next snapshot run removes its leftovers. Only
folders whose manifest reads are listed. The folder is outside the lab's own (`labs/<env>`), so env_stop,
which discards the hosts' disks, keeps every snapshot.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from booted.errors import StateError
from booted.images.generations import SNAPSHOT_REF as GOLDEN_REF

MANIFEST, PARTIAL = "manifest.json", ".partial-"


@dataclass(frozen=True)
class SavedHost:
    """One host as the snapshot has it."""

    name: str
    role: str
    service: str | None
    ip: str
    mac: str
    running: bool  # it ran at the snapshot (a restore boots it)
    saved: bool  # its state (disk) is in the snapshot


@dataclass(frozen=True)
class Manifest:
    name: str
    env: str
    provider: str
    network: str
    taken: float
    pause_s: float  # how long the running hosts were paused, all together
    keeps: str  # what the provider saved of each host
    hosts: list[SavedHost]
    defined: dict[str, dict[str, Any]]  # environments.py's hosts then: name -> {role, service}
    records: dict[str, Any]  # booted's records then (state/snapshots.py capture())
    golden: list[str] = field(default_factory=list)

    def ran(self) -> dict[str, str]:
        """host -> 'service version' it ran (its recorded release), '' when none."""
        versions = self.versions()
        return {h.name: " ".join(versions[h.name]) if h.name in versions else "" for h in self.hosts}

    def versions(self) -> dict[str, tuple[str, str]]:
        """host -> (service, version) of its recorded release."""
        return {r["host"]: (r["service"], r["version"]) for r in self.records.get("releases", [])}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data["hosts"] = [SavedHost(**h) for h in data["hosts"]]
        return cls(**data)


class Store:
    """The snapshots of one environment."""

    def __init__(self, state_dir: Path, env: str) -> None:
        self.env = env
        self.dir = state_dir / "snapshots" / env

    def folder(self, name: str) -> Path:
        return self.dir / name

    def exists(self, name: str) -> bool:
        return (self.folder(name) / MANIFEST).is_file()

    def load(self, name: str) -> Manifest:
        try:
            return Manifest.from_json((self.folder(name) / MANIFEST).read_text())
        except FileNotFoundError:
            known = ", ".join(m.name for m in self.all()) or "none"
            raise StateError(f"environment {self.env!r} has no snapshot {name!r} (its snapshots: {known}; "
                             "fab env_snapshots)") from None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise StateError(f"snapshot {name!r} of {self.env!r} cannot be read ({exc}): delete it with "
                             f"'fab env_snapshot_del {name}'") from None

    def all(self) -> list[Manifest]:
        """Every complete snapshot, oldest first (a folder whose manifest does not read is not listed)."""
        out = []
        for entry in sorted(self.dir.iterdir()) if self.dir.is_dir() else ():
            if entry.name.startswith(".") or not (entry / MANIFEST).is_file():
                continue
            try:
                out.append(Manifest.from_json((entry / MANIFEST).read_text()))
            except (OSError, ValueError, TypeError, KeyError):
                continue
        return sorted(out, key=lambda m: m.taken)

    def partial(self, name: str) -> Path:
        """A fresh folder to write a snapshot into (renamed into place by commit)."""
        path = self.dir / f"{PARTIAL}{name}-{os.getpid()}-{secrets.token_hex(4)}"
        (path / "hosts").mkdir(parents=True)
        return path

    def commit(self, partial: Path, manifest: Manifest) -> Path:
        """Write the manifest and the golden refs, then rename the folder into place (atomic)."""
        (partial / GOLDEN_REF).write_text("".join(f"{p}\n" for p in manifest.golden))
        tmp = partial / f".{MANIFEST}"
        tmp.write_text(manifest.to_json())
        with open(tmp) as f:
            os.fsync(f.fileno())
        tmp.replace(partial / MANIFEST)
        target = self.folder(manifest.name)
        os.rename(partial, target)  # fails if it exists: a snapshot is never overwritten
        return target

    def remove_partials(self) -> list[str]:
        """Folders of snapshot runs that were killed (the caller holds the lab lock: none is being written)."""
        gone = []
        for entry in self.dir.glob(f"{PARTIAL}*") if self.dir.is_dir() else ():
            shutil.rmtree(entry, ignore_errors=True)
            gone.append(entry.name)
        return gone

    def delete(self, name: str) -> None:
        """Remove a snapshot: renamed aside first, so a killed delete never leaves a half one listed."""
        folder = self.folder(name)
        aside = self.dir / f"{PARTIAL}deleted-{name}-{os.getpid()}"
        os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)

    def saved_of(self, host: str) -> list[Path]:
        """The folders of every snapshot that holds this host's saved state."""
        return [self.folder(m.name) / "hosts" / host for m in self.all()
                if (self.folder(m.name) / "hosts" / host).exists()]

def size_on_disk(path: Path) -> int:
    """Bytes the files under `path` take on disk (allocated blocks; a file linked twice counts once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total
