"""Load and validate environments.py: the user's description of each lab.

The file defines ENVIRONMENTS, a dict: name -> {"provider", "network", "hosts", "min"}. Host keys may
be ranges (`web[01:04]` keeps zero padding, `web[1:4]` does not). Every error names the file, the
line, the environment, the host and the key, and says what is allowed. Running the file is bounded in
time (loader.py); the rules are in validate.py; what this machine's networks allow is in machine.py.
"""

from __future__ import annotations

from pathlib import Path

from booted.environments.loader import LOAD_TIMEOUT, Lines, run_file
from booted.environments.model import Environment, HostSpec, expand_range, packages_of
from booted.environments.validate import environment
from booted.errors import ConfigError

__all__ = ["LOAD_TIMEOUT", "Environment", "HostSpec", "expand_range", "load_environments", "packages_of",
           "select_environment"]


def load_environments(path: Path, timeout: float = LOAD_TIMEOUT) -> dict[str, Environment]:
    """Run the user's file (within `timeout` seconds) and validate every environment in it."""
    namespace = run_file(path, timeout)
    raw = namespace.get("ENVIRONMENTS")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: define ENVIRONMENTS = {{'name': {{'provider': ..., 'network': ..., "
                          "'hosts': {...}}}}} (a non-empty dict)")
    lines = Lines(path, path.read_text(errors="replace"))
    envs: dict[str, Environment] = {}
    owner: dict[str, str] = {}  # host name -> its environment
    for name, value in raw.items():
        env = environment(name, value, lines)
        for other in envs.values():
            for net in env.networks:
                for theirs in other.networks:
                    if net.cidr.overlaps(theirs.cidr):
                        raise ConfigError(f"{net.where}: environment {name!r}: network {net.cidr} overlaps "
                                          f"environment {other.name!r}'s {theirs.cidr}: give each environment "
                                          "its own network")
        for host in env.hosts:
            if host.name in owner:
                raise ConfigError(f"{lines.at(name, 'hosts')}: environment {name!r}: host {host.name!r} is "
                                  f"also defined in environment {owner[host.name]!r}: host names are unique "
                                  "across environments (each names one host image)")
            owner[host.name] = name
        envs[name] = env
    return envs


def select_environment(envs: dict[str, Environment], name: str | None, path: Path) -> Environment:
    """--env / BOOTED_ENV, or the only environment in the file."""
    if name is None:
        if len(envs) == 1:
            return next(iter(envs.values()))
        raise ConfigError(f"{path} has {len(envs)} environments ({', '.join(envs)}): "
                          "choose one with --env NAME or BOOTED_ENV")
    if name not in envs:
        raise ConfigError(f"{path}: no environment {name!r} (defined: {', '.join(envs)})")
    return envs[name]
