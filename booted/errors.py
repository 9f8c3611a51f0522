"""Typed errors of the engine; the task layer turns them into messages and exit codes."""

from __future__ import annotations


class BootedError(Exception):
    """Base of every error a user can cause or fix; `exit_code` is what `fab` exits with."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(BootedError):
    """environments.py or a BOOTED_* variable is wrong."""

    exit_code = 2


class NeedsRoot(BootedError):
    """The chosen provider needs root."""

    exit_code = 3


class ToolMissing(BootedError):
    """A program booted relies on is not installed."""

    exit_code = 4


class ProviderError(BootedError):
    """A provider could not make, start or stop a host."""


class ImageError(BootedError):
    """The golden image could not be built."""


class StateError(BootedError):
    """The state store refused an operation (unknown image, duplicate name...)."""


class DeployError(BootedError):
    """A service could not be packaged or deployed."""


class StorageError(BootedError):
    """The state directory cannot be written (full, read-only): nothing was changed half-way."""


STORAGE_SIGNS = ("disk i/o error", "database or disk is full", "readonly database", "unable to open database")


def storage_error(exc: BaseException, state_dir: object) -> StorageError | None:
    """A full or read-only state directory (an OSError or SQLite's error) as a message, else None (a bug)."""
    import errno
    import sqlite3

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        why = {errno.EROFS: "is read-only"}.get(exc.errno, "is full")
        if exc.filename:
            why += f" (writing {exc.filename})"
    elif isinstance(exc, sqlite3.OperationalError) and str(exc).lower().startswith(STORAGE_SIGNS):
        why = f"cannot be written ({exc})"
    else:
        return None
    return StorageError(f"the state directory {state_dir} {why}: free space there (or make it writable) and run "
                        "the command again; what was being recorded was rolled back")
