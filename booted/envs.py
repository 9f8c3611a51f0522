"""Environments as a whole: start everything (image, hosts, discovery, deploy, test), the minimum,
one worker; stop; and status (desired in environments.py vs what runs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from booted import deploy, machines
from booted.context import Booted
from booted.environments import Environment, HostSpec
from booted.errors import BootedError, ConfigError
from booted.fanout import Fleet
from booted.services import discover


@dataclass
class Row:
    """One host's line in an environment summary: a column per step, 'ok' / reason / '-'."""

    host: str
    ip: str
    role: str
    steps: dict[str, tuple[bool, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(ok for ok, _ in self.steps.values())


STEPS = ("boot", "deploy", "start", "test")


def start_hosts(ctx: Booted, env: Environment, specs: list[HostSpec], service_hosts: bool = True) -> list[Row]:
    """Make and boot `specs`, then deploy, start and test each host's service. Never stops at one host."""
    ctx.provider(env).check(ctx.lab(env))  # before anything is made: no root, no tool -> one clear message
    images = [machines.ensure_image(ctx, env, s) for s in specs]
    rows = {i.name: Row(i.name, i.ip, i.role) for i in images}
    for out in machines.start_images(ctx, env, images):
        rows[out.host].steps["boot"] = (out.ok, out.detail)
    up = [i for i in images if rows[i.name].ok]
    defined = discover(ctx.settings.services_dir)
    # services that front others (an lb's upstream) go last, so their backend list is complete
    services = sorted({i.service for i in up if i.service},
                      key=lambda n: (n in defined and defined[n].upstream is not None, n))
    with ctx.fleet() as fleet:
        for name in services:
            hosts = [i.name for i in up if i.service == name]
            ctx.say(f"deploying {name} to {len(hosts)} host(s)")
            deliver(ctx, fleet, name, hosts, env.name, rows)
    return list(rows.values())


def deliver(ctx: Booted, fleet: Fleet, service: str, hosts: list[str], env: str, rows: dict[str, Row]) -> None:
    """deploy -> start -> test on `hosts`; a host that fails a step skips the later ones."""
    try:
        plan = deploy.plan(ctx, service, hosts=hosts, env=env)
    except BootedError as exc:  # e.g. a broken service.toml: every host of this service fails, others go on
        for host in hosts:
            rows[host].steps["deploy"] = (False, str(exc))
        return
    for op in ("deploy", "start", "test"):
        if not plan.targets:
            break
        results = deploy.run_op(ctx, op, plan, fleet)
        for r in results:
            rows[r.host].steps[op] = (r.ok, r.detail)
        ok = {r.host for r in results if r.ok}
        plan = deploy.Plan(plan.service, [t for t in plan.targets if t.name in ok], plan.versions, plan.requested)


def start_all(ctx: Booted, env_name: str | None) -> tuple[Environment, list[Row]]:
    env = ctx.environment(env_name)
    return env, start_hosts(ctx, env, list(env.hosts))


def start_min(ctx: Booted, env_name: str | None) -> tuple[Environment, list[Row]]:
    """The first `min[role]` hosts of each role (by name); roles without a minimum start none."""
    env = ctx.environment(env_name)
    if not env.minimum:
        raise ConfigError(f"{env.source}: environment {env.name!r} has no 'min' (e.g. 'min': {{'worker': 1}})")
    chosen: list[HostSpec] = []
    for role, count in env.minimum.items():
        chosen += sorted((h for h in env.hosts if h.role == role), key=lambda h: h.name)[:count]
    return env, start_hosts(ctx, env, chosen)


def start_worker(ctx: Booted, name: str, env_name: str | None) -> tuple[Environment, list[Row]]:
    """(Re)start one host: stop it if it runs, boot it, deploy/start/test its service."""
    env, _ = machines.image_env(ctx, name, env_name)
    spec = env.host(name)
    provider = ctx.provider(env)
    provider.check(ctx.lab(env))
    if name in provider.running(ctx.lab(env)):
        machines.stop_images(ctx, env, [name])
    return env, start_hosts(ctx, env, [spec])


def stop(ctx: Booted, env_name: str | None) -> tuple[Environment, list[machines.Outcome]]:
    """Stop every host of the environment (clones included), discard their disks (overlay, qcow2), and
    remove its network. Identities (IP, MAC, host key) stay leased until image_del."""
    env = ctx.environment(env_name)
    provider = ctx.provider(env)
    lab = ctx.lab(env)
    provider.check(lab)
    names = sorted(set(provider.running(lab)) | {i.name for i in ctx.inventory.images(env.name) if i.pid})
    outcomes = machines.stop_images(ctx, env, names) if names else []
    for image in ctx.inventory.images(env.name):
        if image.name not in {o.host for o in outcomes if not o.ok}:
            provider.destroy(lab, image.name)
            ctx.inventory.forget_releases(image.name)
    provider.teardown(lab)
    return env, outcomes


def status(ctx: Booted, env_name: str | None) -> tuple[Environment, list[dict[str, object]]]:
    """Desired (environments.py) vs actual (provider, boot log, deployments), one dict per host."""
    env = ctx.environment(env_name)
    provider = ctx.provider(env)
    running = provider.running(ctx.lab(env))  # a /proc scan: works without root too
    images = {i.name: i for i in ctx.inventory.images(env.name)}
    listed = {h.name: h for h in ctx.inventory.hosts()}
    deployed = ctx.inventory.releases()
    desired = {h.name: h for h in env.hosts}
    out: list[dict[str, object]] = []
    for name in sorted(set(desired) | set(images)):
        spec, img, host = desired.get(name), images.get(name), listed.get(name)
        service = spec.service if spec else (img.service if img else None)
        want = f"{service} {spec.version or ''}".strip() if spec and service else (service or "-")
        have = deployed.get((name, service or "")) if service else None
        out.append({"host": name, "desired": "yes" if spec else "no (extra)", "image": "yes" if img else "no",
                    "ip": img.ip if img else None, "running": name in running, "listed": host is not None,
                    "reachable": host.reachable if host else None, "want": want,
                    "deployed": f"{service} {have}" if have else "-",
                    "state": _verdict(spec is not None, name in running, service, spec.version if spec else None,
                                      have)})
    return env, out


def _verdict(desired: bool, running: bool, service: str | None, want: str | None, have: str | None) -> str:
    if not desired:
        return "extra" if running else "extra, stopped"
    if not running:
        return "stopped"
    if service and have is None:
        return "running, not deployed"
    if service and want and have != want:
        return f"running, drift ({have})"
    return "ok"
