"""Lab snapshots (README: Snapshots): one consistent point of a whole lab, kept in the state directory and
put back on demand. The provider-independent core lives here (take.py, restore.py, store.py, decide.py);
what a snapshot keeps of a host is each provider's (Provider.pause/resume/save/restore/forget)."""

from __future__ import annotations

import shutil

from booted.lab.handle import LabHandle
from booted.remote.reach import Remote
from booted.results import HostResult
from booted.snapshots import decide
from booted.snapshots.clock import correct_all
from booted.snapshots.restore import restore
from booted.snapshots.store import Manifest, Store, size_on_disk
from booted.snapshots.take import resume_leftovers, take
from booted.state import snapshots as records

__all__ = ["Manifest", "Snapshots"]


class Snapshots:
    """The snapshots of one environment: its lab handle below, remote work beside it (a restore starts
    and tests the services it brings back)."""

    def __init__(self, handle: LabHandle, remote: Remote) -> None:
        self.handle, self.remote = handle, remote
        self.store = Store(handle.kit.settings.state_dir, handle.env.name)

    def take(self, name: str) -> Manifest:
        snap = take(self.handle, name, self.handle.kit.settings.snapshot_hold)
        if self.handle.provider.restore_resumes:  # VMs whose clocks stood still while paused: set them
            bad = [r for r in correct_all(self.remote, [h.name for h in snap.hosts if h.running],
                                          self.handle.env.name).values() if not r.ok]
            for r in bad:
                self.handle.kit.say(f"{r.host}: its clock could not be set after the pause: {r.detail}")
        return snap

    def restore(self, name: str) -> tuple[Manifest, list[HostResult]]:
        return restore(self.handle, self.remote, name)

    def listing(self) -> list[tuple[Manifest, int]]:
        """Every complete snapshot with its size on disk (bytes)."""
        if records.paused(self.handle.kit.inventory, self.handle.env.name):  # a killed snapshot run's
            with self.handle.locked("resuming hosts a killed snapshot left paused in"):
                resume_leftovers(self.handle)
        return [(m, size_on_disk(self.store.folder(m.name))) for m in self.store.all()]

    def unfinished_restore(self) -> tuple[int, str, str] | None:
        return records.unfinished_restore(self.handle.kit.inventory, self.handle.env.name)

    def delete(self, name: str) -> int:
        """Delete a snapshot (and what the provider keeps of it); returns the bytes freed."""
        decide.check_name(name)
        handle = self.handle
        with handle.locked("deleting a snapshot of"):
            snap = self.store.load(name)
            folder = self.store.folder(name)
            size = size_on_disk(folder)
            event = records.open_event(handle.kit.inventory, handle.env.name, name, "delete")
            for host in snap.hosts:
                if host.saved:
                    handle.provider.forget(handle.lab, host.name, folder / "hosts" / host.name)
            self.store.delete(name)
            records.finish_event(handle.kit.inventory, event, True, f"{size} bytes freed")
            return size

    def forget_host(self, host: str) -> int:
        """A host image was deleted: its saved state leaves every snapshot (image_del frees the space; a
        restore of such a snapshot is then refused, naming the host). Returns how many snapshots held it."""
        folders = self.store.saved_of(host)
        for folder in folders:
            self.handle.provider.forget(self.handle.lab, host, folder)
            shutil.rmtree(folder, ignore_errors=True)
        return len(folders)
