"""qemu's keys of an environment: `boot`, how its hosts boot."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from booted.errors import ConfigError
from booted.providers.lab import Lab, Options


class Boot(StrEnum):
    """How a qemu host boots. A str: "disk" == Boot.DISK."""

    KERNEL = "kernel"  # QEMU hands in the kernel and the identity (fw_cfg)
    DISK = "disk"  # the bootable golden disk (its own boot loader), the identity on a seed disk
    INSTALLED = "installed"  # the host's own disk from an installer, the identity on a seed disk


BOOTS = {Boot.KERNEL: "QEMU boots the kernel and hands in the identity (fast)",
         Boot.DISK: "the bootable golden disk (extlinux) with the identity on a seed disk, as other hypervisors boot",
         Boot.INSTALLED: "each host's own disk from an installer (fab image_build --installer), with the seed disk"}
QEMU_KEYS: tuple[frozenset[str], frozenset[str]] = (frozenset({"boot"}), frozenset())


@dataclass(frozen=True)
class QemuOptions(Options):
    boot: Boot = Boot.KERNEL


def parse_qemu(env: str, raw: Mapping[str, Any], hosts: Mapping[str, tuple[str, Mapping[str, Any]]],
               at: Callable[..., str]) -> QemuOptions:
    boot = raw.get("boot", Boot.KERNEL)
    if boot not in {b.value for b in Boot}:
        raise ConfigError(f"{at(env, 'boot')}: environment {env!r}: boot {boot!r}: for provider qemu, one of "
                          f"{', '.join(Boot)} (other providers boot their own way)")
    return QemuOptions(Boot(boot))


def boot_of(lab: Lab) -> Boot:
    """How the lab's hosts boot (a lab of another provider's options: the kernel, QEMU's default)."""
    return lab.options.boot if isinstance(lab.options, QemuOptions) else Boot.KERNEL
