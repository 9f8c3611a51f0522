"""Providers make hosts exist. One module per provider, imported lazily by name."""

from __future__ import annotations

import importlib

from booted.errors import ConfigError
from booted.providers.base import Lab, Provider

MODULES = {"netns": "booted.providers.netns", "qemu": "booted.providers.qemu",
           "virtualbox": "booted.providers.virtualbox"}


def get_provider(name: str) -> Provider:
    """The provider registered under `name` (imported on first use)."""
    if name not in MODULES:
        raise ConfigError(f"unknown provider {name!r}: choose one of {', '.join(MODULES)}")
    try:
        module = importlib.import_module(MODULES[name])
    except ModuleNotFoundError:
        raise ConfigError(f"provider {name!r} is not available in this version of booted; "
                          "use provider = 'netns'") from None
    provider: Provider = module.PROVIDER
    return provider


__all__ = ["Lab", "Provider", "get_provider"]
