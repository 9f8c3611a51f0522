"""Serving at first boot: a host that boots with a service gets, in its identity, serve.sh (deploy.sh for
that host: fetch the release from booted's nginx, check it, unpack, start, wait for its health URL) and
the release id. Its boot script runs serve.sh before it phones home and names the release in its boot-log
line; booted then only verifies those hosts (the HTTP test) and deploys over SSH where that fails."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from booted.environments import Environment
from booted.errors import BootedError
from booted.remote import deploy
from booted.remote.fanout import Fleet, Target
from booted.remote.reach import Remote
from booted.remote.releases import Published, publish
from booted.remote.services import Release, backend_addresses, listen_address, package
from booted.results import HostResult
from booted.state.inventory import Image


@dataclass(frozen=True)
class Serve:
    """What a host is told to serve at boot."""

    script: str  # serve.sh
    release: str  # the release id it announces once it serves
    version: str
    backends: str  # a proxy's backend list at boot ('' for others)


def prepare(remote: Remote, env: Environment, images: list[Image], alive: set[str]) -> dict[str, Serve]:
    """serve.sh for each of `images` that runs a service (`alive`: the hosts of the environment running or
    about to boot: a proxy's backends). A release that cannot be built is left to the deploy after boot,
    which reports why."""
    services, settings = remote.services, remote.kit.settings
    everyone = remote.kit.inventory.images(env.name)
    built: dict[tuple[str, str | None], tuple[Release, Published] | None] = {}
    out: dict[str, Serve] = {}
    for img in images:
        svc = services.get(img.service or "")
        if svc is None or svc.setup:
            continue  # a setup command may take minutes: that service is deployed after boot, as before
        key = (svc.name, img.version)
        if key not in built:
            try:
                release = package(svc, img.version, settings.repo(svc.repo_var))
                built[key] = (release, publish(settings, release))
            except BootedError as exc:
                remote.kit.say(f"{svc.name} {img.version or ''}: deployed after boot ({exc})")
                built[key] = None
        made = built[key]
        if made is None:
            continue
        release, pub = made
        backends = ""
        if svc.upstream and svc.upstream in services:
            backends = ",".join(backend_addresses(services[svc.upstream], everyone, alive, env.address))
        target = Target(img.name, img.ip, (), *listen_address(env, svc, img.ip))
        fetch = (pub.url(str(env.gateway), settings.http_port), pub.sha256)
        script = deploy.deploy_script(svc, target, release, "", backends, fetch=fetch, start=True)
        out[img.name] = Serve(script, release.id, release.version, backends)
    return out


def verify(remote: Remote, fleet: Fleet, service: str, hosts: list[str], env: str, served: dict[str, Serve]
           ) -> tuple[dict[str, list[HostResult]], list[str]]:
    """Test the hosts whose boot-log line says they serve the release they were given; record what they run.
    Returns (their step results, the hosts that still need a deploy over SSH)."""
    inventory = remote.kit.inventory
    listed = {h.name: h for h in inventory.hosts()}
    claimed = [h for h in hosts if h in served and h in listed and listed[h].serving == served[h].release]
    if not claimed:
        return {}, hosts
    for h in claimed:  # what the host says it runs; the test below checks it serves exactly that
        inventory.record_release(h, service, served[h].version)
    p = deploy.plan(remote, service, hosts=claimed, env=env)
    tested = deploy.run_op(remote, "test", p, fleet)
    ok = {r.host for r in tested if r.ok}
    for h in set(claimed) - ok:  # not verified: what it runs is not known until the deploy below
        inventory.forget_releases(h)
    results = {
        "deploy": [HostResult(h, True, f"served at boot: {served[h].version}") for h in claimed if h in ok],
        "start": [HostResult(h, True, "started at boot") for h in claimed if h in ok],
        "test": [r for r in tested if r.ok],
    }
    return results, [h for h in hosts if h not in ok]


def settle_proxies(remote: Remote, fleet: Fleet, service: str, hosts: list[str], served: dict[str, Serve]
                   ) -> list[HostResult]:
    """A proxy that started at boot, beside the hosts it fronts, gets the list of those actually up now
    (live, where it differs), and booted waits (up to PROXY_SETTLE s) until its own health checks have
    taken them in: so the lab serves through it when env_start_all returns."""
    svc = remote.service(service)
    if svc.upstream is None or not hosts:
        return []
    targets = remote.resolver.targets(hosts)
    wanted = deploy.backends(remote, svc, targets)

    def step(t: Target) -> str:
        want = sorted(b for b in wanted[t.name].split(",") if b)
        if want != sorted(b for b in served[t.name].backends.split(",") if b):
            fleet.sh(t, deploy.backends_script(svc, t, wanted[t.name]))
        if not svc.stats or not want:
            return f"{len(want)} backends"
        deadline = time.monotonic() + PROXY_SETTLE
        while True:
            servers = json.loads(fleet.sh(t, deploy.stats_script(svc, t))).get("servers", {})
            up = [a for a in want if str(servers.get(a, {}).get("status", "")).startswith("UP")]
            if len(up) == len(want) or time.monotonic() > deadline:
                return f"{len(up)}/{len(want)} backends up"
            time.sleep(0.2)
    return fleet.run(targets, step, f"{service} backends", timeout=30)


PROXY_SETTLE = 5.0
