"""The context every engine function gets: settings, state, keys, and how to talk to the user."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from booted.config import Settings
from booted.environments import Environment, load_environments, select_environment
from booted.fanout import Fleet
from booted.identity import Keys
from booted.inventory import Inventory
from booted.providers import Lab, Provider, get_provider


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Booted:
    """One run's context. Created by the task layer (or a test) and passed down; no globals."""

    settings: Settings
    say: Callable[[str], None] = field(default=_stderr)

    @cached_property
    def inventory(self) -> Inventory:
        return Inventory(self.settings.db_path)

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.settings.state_dir / "keys")

    @cached_property
    def environments(self) -> dict[str, Environment]:
        return load_environments(self.settings.environments_file)

    def environment(self, name: str | None = None) -> Environment:
        """--env NAME, else BOOTED_ENV, else the file's only environment."""
        return select_environment(self.environments, name or self.settings.env_name,
                                  self.settings.environments_file)

    def lab(self, env: Environment) -> Lab:
        s = self.settings
        return Lab(env.name, s.lab_id(env.name), env.network, s.state_dir / "labs" / env.name, s.boot_timeout,
                   s.boot_parallel, s.qemu_net)

    def provider(self, env: Environment) -> Provider:
        return get_provider(env.provider)

    def fleet(self) -> Fleet:
        self.keys.ensure_lab_key()
        return Fleet(self.keys.lab_key, self.keys.known_hosts, self.settings.user, self.settings.parallel)

    def close(self) -> None:
        if "inventory" in self.__dict__:
            self.inventory.close()
