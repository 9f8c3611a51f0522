"""Releases served by booted's nginx: a release is published once, content-addressed
(<releases_dir>/<sha256>.tar.gz), and every host pulls it from its lab gateway and checks its checksum,
instead of the controller pushing the same bytes to each host over SFTP."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass

from booted.config import Settings
from booted.remote.packing import Release


@dataclass(frozen=True)
class Published:
    """A release where nginx serves it: the path on its server (/releases/<sha256>.tar.gz) and checksum."""

    sha256: str
    path: str

    def url(self, gateway: str, port: int) -> str:
        return f"http://{gateway}:{port}{self.path}"


def publish(settings: Settings, release: Release) -> Published:
    """Place the release where nginx serves it (once: the name is its checksum); safe beside other runs."""
    digest = release.sha256
    folder = settings.releases_dir
    target = folder / f"{digest}.tar.gz"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)  # nginx's workers (nobody, as root) read it
        folder.parent.chmod(0o755)
        tmp = folder / f".{digest}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as out:  # streamed from the release's file: never whole in memory
            for chunk in release.blob.chunks():
                out.write(chunk)
        tmp.chmod(0o644)
        tmp.replace(target)  # atomic: a host never fetches half a file
    return Published(digest, f"/releases/{digest}.tar.gz")


def discard(settings: Settings) -> None:
    """Remove the releases folder when it lives outside the state directory (/run): nginx stopped, no lab
    is up; the next deploy publishes again."""
    folder = settings.served_dir
    if not folder.is_relative_to(settings.state_dir):
        shutil.rmtree(folder, ignore_errors=True)
