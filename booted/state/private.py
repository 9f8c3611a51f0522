"""The state directory is for its owner only: boot tokens (state.db), the lab SSH key, host keys and
identities live there. The folder is 0700 and the database with its WAL and SHM 0600 (SQLite gives the
WAL and SHM the database's mode); a folder or database made more open by an earlier booted is tightened
on the next run."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def make_private(db: Path) -> None:
    """The database's folder 0700 (made if missing) and the database, WAL and SHM 0600 (made if missing)."""
    folder = db.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _tighten(folder)
    if not db.exists():
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    for path in (db, db.with_name(f"{db.name}-wal"), db.with_name(f"{db.name}-shm")):
        _tighten(path)


def _tighten(path: Path) -> None:
    """Take group and other permissions away (the owner's stay)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(mode & 0o700)
    except (FileNotFoundError, PermissionError):  # gone, or not ours to change
        pass
