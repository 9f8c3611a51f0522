"""The monitor follows the user's edits of environments.py: a changed file is read again between passes;
one that does not validate (or changes what cannot change under running hosts) is reported once and the
last good environment kept."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from booted.environments import Environment
from booted.errors import ConfigError

LIVE_FIXED = ("provider", "network", "init")  # need env_stop + env_start_all (so do the provider's own keys)


def stamp(path: Path) -> str:
    """What changes when the file does (its bytes; "" when it cannot be read)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


@dataclass
class Watch:
    """The environments file as the monitor last took it."""

    path: Path
    seen: str

    def changed(self) -> bool:
        now = stamp(self.path)
        if now == self.seen:
            return False
        self.seen = now
        return True


def take(old: Environment, load: Callable[[], dict[str, Environment]]) -> tuple[Environment | None, str]:
    """The environment to run from now on (None: keep `old`) and what to say about it."""
    try:
        new = load().get(old.name)
    except ConfigError as exc:
        return None, f"{old.source} changed but does not validate; keeping the last good one: {exc}"
    if new is None:
        return None, f"{old.source} changed and no longer defines {old.name!r}; keeping the last good one " \
                     f"(fab env_stop --env {old.name} stops it)"
    fixed = [k for k in LIVE_FIXED if getattr(new, k) != getattr(old, k)]
    if type(new.options) is type(old.options):  # qemu's boot, libvirt's hypervisors, uplink, pins
        fixed += [f.name for f in fields(old.options) if getattr(new.options, f.name) != getattr(old.options, f.name)]
    if fixed:
        return None, f"{old.source} changed {', '.join(fixed)} of {old.name!r}: that needs fab env_stop and " \
                     "fab env_start_all; keeping the last good one"
    if new == old:
        return None, ""
    return new, f"{old.source} changed: following it"
