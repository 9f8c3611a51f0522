"""Are booted's own parts up where a lab needs them? nginx (the boot endpoint, releases) and the apt proxy
run while any lab's gateway is up; this says which of them is down (env_status and monitor_status warn, the
monitor restarts them)."""

from __future__ import annotations

from booted.config import Settings
from booted.discovery.aptproxy import AptProxy
from booted.discovery.nginx import Nginx, local_addresses


def down(settings: Settings, addresses: set[str]) -> list[str]:
    """What is down although a lab is up (`addresses`: the gateways of the labs), as warnings."""
    if not addresses & (local_addresses() | {"127.0.0.1"}):
        return []
    out = []
    if Nginx(settings).pid() is None:
        out.append("booted's nginx is down: hosts cannot phone home or fetch releases (the monitor restarts "
                   "it; so does any fab env_start_* run)")
    apt = AptProxy(settings)
    if apt.binary() is not None and apt.pid() is None:
        out.append("booted's apt proxy (apt-cacher-ng) is down: lab hosts cannot install packages (the monitor "
                   "restarts it; so does any fab env_start_* run)")
    return out
