"""The decisions of snapshots, pure: is a name valid, and may a snapshot be restored into the environment
environments.py describes now (same hosts, roles, services, network, provider; every saved host's image
still there with the identity it had)."""

from __future__ import annotations

from typing import Any

from booted.environments import Environment
from booted.errors import ConfigError
from booted.rules import SNAPSHOT_NAME
from booted.snapshots.store import Manifest
from booted.state.records import Image


def check_name(name: str) -> str:
    if not SNAPSHOT_NAME.match(name or ""):
        raise ConfigError(f"snapshot name {name!r}: use lowercase letters, digits, - and _, starting with a letter "
                          "or digit, at most 40 characters")
    return name


def defined(env: Environment) -> dict[str, dict[str, Any]]:
    """environments.py's hosts as a snapshot keeps them: name -> role and service."""
    return {h.name: {"role": h.role, "service": h.service} for h in env.hosts}


def differences(snap: Manifest, env: Environment, images: dict[str, Image], saved: set[str]) -> list[str]:
    """Why `snap` cannot be restored into `env` now ([] : it can). `images`: the host images of the
    environment now; `saved`: the hosts whose saved state is still in the snapshot's folder."""
    out = []
    if snap.provider != env.provider:
        out.append(f"provider: {snap.provider} in the snapshot, {env.provider} now")
    if snap.network != str(env.network):
        out.append(f"network: {snap.network} in the snapshot, {env.network} now")
    now = defined(env)
    for name in sorted(set(snap.defined) - set(now)):
        out.append(f"host {name}: in the snapshot, no longer in environments.py")
    for name in sorted(set(now) - set(snap.defined)):
        out.append(f"host {name}: in environments.py, not in the snapshot")
    for name in sorted(set(now) & set(snap.defined)):
        for key in ("role", "service"):
            if now[name][key] != snap.defined[name].get(key):
                out.append(f"host {name}: {key} {snap.defined[name].get(key)} in the snapshot, {now[name][key]} now")
    for host in snap.hosts:
        image = images.get(host.name)
        if image is None:
            out.append(f"host {host.name}: its host image was deleted since the snapshot (image_del)")
        elif (image.ip, image.mac) != (host.ip, host.mac):
            out.append(f"host {host.name}: address {host.ip} in the snapshot, {image.ip} now")
        elif host.saved and host.name not in saved:
            out.append(f"host {host.name}: its saved state is gone from the snapshot (image_del)")
    return out
