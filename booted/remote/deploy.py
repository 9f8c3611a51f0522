"""Service operations on lab hosts, as data: OPS maps each operation to the step it runs on every host.

Layout on a host (BASE = /srv/booted/<service>): releases/<version>-<hash>/, `current` and `previous`
symlinks switched with rename(2), run.sh (the supervisor loop), supervisor.pid, service.log. The shell
that does it is in booted/remote/scripts/. Every operation runs on all its targets through a Fleet
(bounded, one connection per host, a HostResult per host) and is recorded as a deployment.
"""

from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from invoke.exceptions import UnexpectedExit

from booted.errors import BootedError, ConfigError
from booted.remote import scripts
from booted.remote.fanout import Fleet, StepFailed, Target, describe
from booted.remote.releases import publish
from booted.remote.services import Release, Service, package
from booted.results import Done, HostResult

if TYPE_CHECKING:
    from booted.context import Booted

ROOT = "/srv/booted"
Step = Callable[[Target], "str | Done"]


@dataclass(frozen=True)
class Plan:
    """The hosts a service operation runs on, and the version each should run."""

    service: Service
    targets: list[Target]
    versions: dict[str, str | None]  # host -> version to deploy (None: in-tree / HEAD)
    requested: str | None = None  # --version, if the user gave one
    backends: dict[str, str] | None = None  # host -> 'ip:port,...' of its upstream's hosts (lb services)

    def only(self, hosts: set[str]) -> Plan:
        return replace(self, targets=[t for t in self.targets if t.name in hosts])


def plan(ctx: Booted, service_name: str, hosts: list[str] | None = None, env: str | None = None,
         version: str | None = None) -> Plan:
    """The current host list, narrowed to hosts whose image runs this service (and to --hosts / --env)."""
    service = ctx.service(service_name)
    images = {i.name: i for i in ctx.inventory.images()}
    current = {h.name: h for h in ctx.inventory.hosts()}
    if hosts:
        unknown = [h for h in hosts if h not in current]
        if unknown:
            raise ConfigError(f"not in the current host list: {', '.join(unknown)} "
                              "(see fab hosts_list; fab hosts_reset rebuilds it from the boot log)")
        wrong = [h for h in hosts if h not in images or images[h].service != service.name]
        if wrong:
            raise ConfigError(f"{', '.join(wrong)} do(es) not run {service.name} in environments.py")
    if env is not None:
        ctx.environment(env)  # validates the name
    chosen = [h.name for h in current.values() if h.name in images and images[h.name].service == service.name
              and (not hosts or h.name in hosts) and (env is None or images[h.name].env == env)]
    if not chosen:
        raise BootedError(f"no host in the current host list runs {service.name}: start the environment "
                          "(fab env_start_all) or rebuild the list (fab hosts_reset)")
    targets = ctx.targets(chosen)
    return Plan(service, targets, {h: version or images[h].version for h in chosen}, version,
                backends(ctx, service, targets))


def backends(ctx: Booted, service: Service, targets: list[Target]) -> dict[str, str]:
    """host -> 'ip:port,...' of the listed hosts of its environment that run the service's upstream."""
    if service.upstream is None:
        return {t.name: "" for t in targets}
    upstream = ctx.service(service.upstream)
    images = {i.name: i for i in ctx.inventory.images()}
    listed = [h for h in ctx.inventory.hosts() if h.name in images and images[h.name].service == upstream.name]
    return {t.name: ",".join(f"{h.ip}:{upstream.port}" for h in listed
                             if images[h.name].env == images[t.name].env) for t in targets}


# what each operation sends to a host ------------------------------------------------------------------
def base(service: Service) -> str:
    return f"{ROOT}/{service.name}"


def host_values(service: Service, target: Target) -> dict[str, str]:
    """The values every script of `service` gets on `target` (lib.sh's base, service, url, port, reuse_port,
    on_backends)."""
    return {"base": base(service), "service": service.name,
            "url": f"http://{target.ip}:{service.port}{service.health}", "port": str(service.port),
            "port_hex": f"{service.port:04X}",
            "reuse_port": "1" if service.reuse_port else "",
            "on_backends": fill(service.on_backends, service, target, "", "") if service.on_backends else ""}


def fill(command: str, service: Service, target: Target, version: str, backends: str) -> str:
    """A service.toml command with its placeholders ({ip} {port} {host} {version} {backends}) quoted."""
    values = {"ip": target.ip, "port": str(service.port), "host": target.name, "version": version,
              "backends": backends}
    return command.format(**{k: shlex.quote(v) for k, v in values.items()})


def run_sh(service: Service, target: Target, version: str, backends: str) -> str:
    """run.sh of a host: the supervisor loop around service.toml's `start`, placeholders quoted."""
    return scripts.run_sh({"base": base(service), "service": service.name},
                          fill(service.start, service, target, version, backends))


def deploy_script(service: Service, target: Target, release: Release, incoming: str, backends: str,
                  restart: bool = True, fetch: tuple[str, str] | None = None, start: bool = False) -> str:
    """Fetch (`fetch`: URL and sha256 on booted's nginx) or take the uploaded `incoming`, unpack, run the
    setup command once, switch, and (with `restart`) restart the service where wanted (`start`: anyway)."""
    url, sha = fetch or ("", "")
    return scripts.render("deploy", {**host_values(service, target), "rel": f"releases/{release.id}",
                                     "tgz": incoming, "fetch": url, "sha256": sha,
                                     "run_sh": run_sh(service, target, release.version, backends),
                                     "restart": "1" if restart else "", "start": "1" if start else "",
                                     "upstream": service.upstream or "", "list": backends,
                                     "setup": fill(service.setup, service, target, release.version, backends)
                                     if service.setup else ""})


def backends_script(service: Service, target: Target, backends: str) -> str:
    """Replace a proxy's live backend list (no restart)."""
    return scripts.render("backends", {**host_values(service, target), "list": backends})


def stats_script(service: Service, target: Target) -> str:
    """Print a proxy's counters as JSON (service.toml's `stats`)."""
    assert service.stats is not None
    return scripts.render("stats", {**host_values(service, target),
                                    "stats": fill(service.stats, service, target, "", "")})


def start_script(service: Service, target: Target) -> str:
    return scripts.render("start", host_values(service, target))


# the operations ---------------------------------------------------------------------------------------
def _deploy(ctx: Booted, p: Plan, fleet: Fleet) -> tuple[Step, str]:
    repo = ctx.settings.repo(p.service.repo_var)
    releases = {v: package(p.service, v, repo) for v in set(p.versions.values())}
    published = {v: publish(ctx.settings, r) for v, r in releases.items()}
    gateways = gateways_of(ctx, [t.name for t in p.targets])
    backends = p.backends or {}

    def step(target: Target) -> Done:
        # one SSH command: the host fetches the release from booted's nginx on its gateway, checks it,
        # unpacks, switches and restarts; only when it cannot fetch it is the release pushed over SFTP
        release, pub = releases[p.versions[target.name]], published[p.versions[target.name]]
        lst = backends.get(target.name, "")
        fetch = (pub.url(gateways[target.name], ctx.settings.http_port), pub.sha256)
        how = ""
        try:
            out = fleet.sh(target, deploy_script(p.service, target, release, "", lst, fetch=fetch))
        except UnexpectedExit as exc:
            if exc.result.exited != FETCH_FAILED:
                raise
            incoming = f"{ROOT}/.incoming-{p.service.name}-{release.id}-{uuid.uuid4().hex[:8]}.tar.gz"
            fleet.put(target, release.data, incoming)
            out = fleet.sh(target, deploy_script(p.service, target, release, incoming, lst))
            how = f" (pushed over SFTP: {describe(exc)})"
        words = out.split()
        what = "switched to" if "switched" in words else "already at"
        setup = " (setup ran)" if "setup-ran" in words else ""
        restarted = ", restarted" if "started" in words else ""
        return Done(f"{what} {release.version}{setup}{restarted}{how}", release.version)
    return step, ",".join(sorted({r.version for r in releases.values()}))


FETCH_FAILED = 7  # deploy.sh's exit code when the host cannot fetch the release from booted's nginx


def gateways_of(ctx: Booted, hosts: list[str]) -> dict[str, str]:
    """host -> the lab gateway it reaches booted's nginx on."""
    images = {i.name: i for i in ctx.inventory.images()}
    return {h: str(ctx.environment(images[h].env).gateway) for h in hosts}


def _start(ctx: Booted, p: Plan, fleet: Fleet) -> tuple[Step, str]:
    healthy, _ = _test(ctx, p, fleet)

    def step(t: Target) -> str:
        # Converge: a host already serving the version deployed there (deploy restarts a running
        # service) costs one HTTP GET, not an SSH session and a second restart. Force: stop, then start.
        try:
            return f"already running, {healthy(t)}"
        except StepFailed:
            return fleet.sh(t, start_script(p.service, t))
    return step, "-"


def _stop(ctx: Booted, p: Plan, fleet: Fleet) -> tuple[Step, str]:
    return (lambda t: fleet.sh(t, scripts.render("stop", host_values(p.service, t)))), "-"


def _test(ctx: Booted, p: Plan, fleet: Fleet) -> tuple[Step, str]:
    """GET the health URL: the host must say its own name and the version expected there (--version,
    else what booted deployed there last, else the version in environments.py)."""
    deployed = ctx.inventory.releases()
    expected = {h: p.requested or deployed.get((h, p.service.name)) or v for h, v in p.versions.items()}

    def step(target: Target) -> str:
        url, body = fleet.http_get(target, p.service.port, p.service.health)
        try:
            data = json.loads(body)
        except ValueError:
            raise StepFailed(f"{url} did not answer JSON") from None
        if not isinstance(data, dict) or data.get("host") != target.name:
            name = data.get("host") if isinstance(data, dict) else data
            raise StepFailed(f"{url} says it is {name!r}, expected {target.name!r}")
        want = expected.get(target.name)
        if want is not None and data.get("version") != want:
            raise StepFailed(f"serves version {data.get('version')!r}, expected {want!r}")
        return f"healthy, version {data.get('version')}"
    return step, "-"


def _rollback(ctx: Booted, p: Plan, fleet: Fleet) -> tuple[Step, str]:
    def step(target: Target) -> Done:
        out = fleet.sh(target, scripts.render("rollback", host_values(p.service, target)))
        version = next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("version "))
        return Done(f"rolled back to {version}, restarted", version)
    return step, "-"


@dataclass(frozen=True)
class Op:
    """An operation: how to make its per-host step (and the label its deployment record gets), and
    whether a host's success records the version it left running."""

    make: Callable[[Booted, Plan, Fleet], tuple[Step, str]]
    timeout: float  # seconds a host may take (BOOTED_TIMEOUT overrides)
    records_version: bool = False


OPS: dict[str, Op] = {
    "deploy": Op(_deploy, 120, records_version=True),
    "start": Op(_start, 60),
    "stop": Op(_stop, 30),
    "test": Op(_test, 15),
    "rollback": Op(_rollback, 60, records_version=True),
}
DELIVER = ("deploy", "start", "test")


def run_op(ctx: Booted, op: str, p: Plan, fleet: Fleet | None = None) -> list[HostResult]:
    """Run one operation of a plan on its hosts; record it as a deployment (open -> done / failed)."""
    if op not in OPS:
        raise ConfigError(f"unknown operation {op!r} (one of {', '.join(OPS)})")
    if fleet is None:
        with ctx.fleet() as own:
            return run_op(ctx, op, p, own)
    step, label = OPS[op].make(ctx, p, fleet)
    timeout = ctx.settings.timeout or OPS[op].timeout
    task = f"{p.service.name}_{op}"

    def locked(target: Target) -> str | Done:
        # one service operation per host at a time (other runs, the monitor); what now runs there is
        # recorded before the lock is released, so the database ends as the host does
        with ctx.locks.host(target.name, task, wait=timeout / 2):
            out = step(target)
            if OPS[op].records_version and isinstance(out, Done):
                ctx.inventory.record_release(target.name, p.service.name, out.version)
            return out

    dep = ctx.inventory.open_deployment(p.service.name, label, op, [t.name for t in p.targets])
    results = fleet.run(p.targets, locked, task, timeout=timeout)
    ctx.inventory.finish_deployment(dep, results, p.service.name, False)
    return results


def deliver(ctx: Booted, fleet: Fleet, service: str, hosts: list[str], env: str) -> dict[str, list[HostResult]]:
    """deploy -> start -> test `service` on `hosts`; a host that fails a step skips the later ones.
    Returns each step's results."""
    p = plan(ctx, service, hosts=hosts, env=env)
    out: dict[str, list[HostResult]] = {}
    for op in DELIVER:
        if not p.targets:
            break
        out[op] = run_op(ctx, op, p, fleet)
        p = p.only({r.host for r in out[op] if r.ok})
    return out
