"""Providers make hosts exist. The registry below is the one list of them; each is imported lazily."""

from __future__ import annotations

import importlib

from booted.errors import ConfigError
from booted.providers.base import Provider
from booted.providers.lab import Lab

REGISTRY = {"netns": "booted.providers.netns:NetnsProvider", "qemu": "booted.providers.qemu:QemuProvider",
            "virtualbox": "booted.providers.virtualbox:VirtualBoxProvider",
            "libvirt": "booted.providers.libvirt:LibvirtProvider"}
NAMES = tuple(REGISTRY)


def provider_class(name: str) -> type[Provider]:
    """The provider class registered under `name` (imported on first use)."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown provider {name!r}: choose one of {', '.join(NAMES)}")
    module, _, attr = REGISTRY[name].partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module), attr)
    return cls


__all__ = ["NAMES", "Lab", "Provider", "provider_class"]
