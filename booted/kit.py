"""One run's shared parts below the tasks: settings, the state database, keys, locks and where progress
lines go. The run (booted/context.py) makes one and hands it down; nothing below reaches back up for more."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from booted.config import Settings
from booted.hosts.identity import Keys
from booted.state.inventory import Inventory
from booted.state.locks import Locks


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Kit:
    """Opened on first use (a task that never reads the database never opens it)."""

    settings: Settings
    say: Callable[[str], None] = field(default=to_stderr)

    @cached_property
    def inventory(self) -> Inventory:
        return Inventory(self.settings.db_path)

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.settings.state_dir / "keys", self.settings.path)

    @cached_property
    def locks(self) -> Locks:
        return Locks(self.settings.state_dir / "locks", self.say, self.settings.lock_wait)

    def close(self) -> None:
        if "inventory" in self.__dict__:
            self.inventory.close()
