"""A provider's own keys of an environment (and of its hosts), parsed and checked by the provider into its
own options type, with the same file:line messages as the rest of environments.py. The environments loader
hands each environment's raw dict here; `Lab.options` carries the result to the provider. Only this module
and the small per-provider option modules are imported for it (no provider is loaded to read a file)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from booted.errors import ConfigError
from booted.providers.lab import Options
from booted.providers.libvirt_options import LIBVIRT_KEYS, parse_libvirt
from booted.providers.qemu_options import QEMU_KEYS, parse_qemu

At = Callable[..., str]  # file:line of a key path in environments.py
# (environment, its raw dict, host name -> (the key it was defined under, its raw dict), at) -> options
Parse = Callable[[str, Mapping[str, Any], Mapping[str, tuple[str, Mapping[str, Any]]], At], Options]


@dataclass(frozen=True)
class OptionKeys:
    env: frozenset[str]  # keys of an environment only this provider reads
    host: frozenset[str]  # keys of a host only this provider reads
    parse: Parse


PROVIDER_KEYS: dict[str, OptionKeys] = {
    "qemu": OptionKeys(*QEMU_KEYS, parse_qemu),
    "libvirt": OptionKeys(*LIBVIRT_KEYS, parse_libvirt),
}


def env_keys() -> frozenset[str]:
    return frozenset().union(*(k.env for k in PROVIDER_KEYS.values()))


def host_keys() -> frozenset[str]:
    return frozenset().union(*(k.host for k in PROVIDER_KEYS.values()))


def parse_options(provider: str, env: str, raw: Mapping[str, Any],
                  hosts: Mapping[str, tuple[str, Mapping[str, Any]]], at: At) -> Options:
    """The provider's options of one environment; a key of another provider is a mistake that names it."""
    mine = PROVIDER_KEYS.get(provider)
    for other, keys in PROVIDER_KEYS.items():
        if other == provider:
            continue
        for key in sorted(keys.env & set(raw)):
            raise ConfigError(f"{at(env, key)}: environment {env!r}: {key!r} is for provider {other} "
                              f"(this environment uses {provider})")
        for name, (defined, spec) in hosts.items():
            for key in sorted(keys.host & set(spec) - (mine.host if mine else frozenset())):
                raise ConfigError(f"{at(env, defined, key)}: environment {env!r}: host {name!r}: {key!r} is for "
                                  f"provider {other}")
    return mine.parse(env, raw, hosts, at) if mine else Options()
