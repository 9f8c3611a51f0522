"""The one per-host result type, used by every engine operation and printed by every task."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostResult:
    """One host's outcome of one step: ok or not, a one-line reason, how long it took, and for steps that
    change what runs there (deploy, rollback) the version the host now runs."""

    host: str
    ok: bool
    detail: str
    seconds: float | None = None
    version: str | None = None


@dataclass(frozen=True)
class Done:
    """What a remote step returns when it also reports the version it left running."""

    detail: str
    version: str
