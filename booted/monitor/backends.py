"""The lbs' backend lists, kept equal to their upstreams' healthy hosts: live, through each lb's own command
over SSH (HAProxy's runtime API on the lb host: no restart), on the daemon's open connection to the lb."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from booted.environments import Environment
from booted.remote import deploy
from booted.remote.fanout import Fleet, Target
from booted.remote.services import backend_addresses

if TYPE_CHECKING:
    from booted.context import Booted


def sync(ctx: Booted, env: Environment, fleet: Fleet, healthy: set[str], health: dict[str, dict[str, object]]
         ) -> None:
    """Every lb of the environment sends to exactly its upstream's healthy hosts. `health` (host -> its health
    JSON, an lb's with its backends) is updated with each change made, so a second call changes nothing."""
    services = ctx.services
    images = ctx.inventory.images(env.name)
    ips = {i.name: i.ip for i in images}
    lbs = [h for h in env.hosts if h.service in services and services[h.service].upstream and h.name in health]
    members = healthy & {h.name for h in env.hosts}  # a clone's health is not checked: not sent to
    for lb in lbs:
        svc = services[lb.service or ""]
        want = sorted(backend_addresses(services[svc.upstream or ""], images, members, env.address))
        have = health[lb.name].get("backends")
        if want == sorted(str(b) for b in (have if isinstance(have, list) else [])):
            continue
        target = ctx.targets([lb.name]) or [Target(lb.name, ips[lb.name])]
        script = deploy.backends_script(svc, target[0], ",".join(want))
        result = fleet.run(target, functools.partial(fleet.sh, script=script), progress=False, timeout=15)[0]
        if result.ok:
            health[lb.name] = {**health[lb.name], "backends": want}
        ctx.say(f"monitor: {lb.name} backends -> {', '.join(want) or 'none'}"
                + ("" if result.ok else f": FAILED {result.detail}"))
