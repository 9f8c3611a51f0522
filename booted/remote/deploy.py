"""Service operations on lab hosts, as data: OPS maps each operation to the step it runs on every host.

What a step sends to a host is in booted/remote/commands.py (the shell in booted/remote/scripts/). Every
operation runs on all its targets through a Fleet (bounded, one connection per host, a HostResult per host)
and is recorded as a deployment. Operations that change what runs (deploy, start, stop, rollback) of one
service in one environment run one at a time: a second run waits, and says for whom. The database records
the version a host runs only once the host proved it: its health URL names the host and that version.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

from invoke.exceptions import UnexpectedExit

from booted.errors import BootedError, ConfigError
from booted.remote import commands
from booted.remote.commands import FETCH_FAILED, ROOT, RUNNING, deploy_script, start_script, stop_script
from booted.remote.fanout import Fleet, StepFailed, Target, describe
from booted.remote.reach import Remote
from booted.remote.releases import publish
from booted.remote.services import Service, backend_addresses, package
from booted.results import Done, HostResult

# what the steps send to hosts, also used by the callers of this module (firstboot, the monitor, benches)
backends_script, stats_script = commands.backends_script, commands.stats_script
__all__ = ["FETCH_FAILED", "OPS", "ROOT", "Plan", "backends", "backends_script", "deliver", "deploy_script", "plan",
           "run_op", "start_script", "stats_script"]
Step = Callable[[Target], "str | Done"]


@dataclass(frozen=True)
class Plan:
    """The hosts a service operation runs on, and the version each should run."""

    service: Service
    targets: list[Target]
    versions: dict[str, str | None]  # host -> version to deploy (None: in-tree / HEAD)
    requested: str | None = None  # --version, if the user gave one
    backends: dict[str, str] | None = None  # host -> 'ip:port,...' of its upstream's hosts (lb services)
    envs: tuple[str, ...] = ()  # the environments of the targets (what serialize() locks)

    def only(self, hosts: set[str]) -> Plan:
        return replace(self, targets=[t for t in self.targets if t.name in hosts])


def plan(remote: Remote, service_name: str, hosts: list[str] | None = None, env: str | None = None,
         version: str | None = None) -> Plan:
    """The current host list, narrowed to hosts whose image runs this service (and to --hosts / --env,
    whose name the caller checked)."""
    service = remote.service(service_name)
    inventory = remote.kit.inventory
    images = {i.name: i for i in inventory.images()}
    current = {h.name: h for h in inventory.hosts()}
    if hosts:
        unknown = [h for h in hosts if h not in current]
        if unknown:
            raise ConfigError(f"not in the current host list: {', '.join(unknown)} "
                              "(see fab hosts_list; fab hosts_reset rebuilds it from the boot log)")
        wrong = [h for h in hosts if h not in images or images[h].service != service.name]
        if wrong:
            raise ConfigError(f"{', '.join(wrong)} do(es) not run {service.name} in environments.py")
    chosen = [h.name for h in current.values() if h.name in images and images[h.name].service == service.name
              and (not hosts or h.name in hosts) and (env is None or images[h.name].env == env)]
    if not chosen:
        raise BootedError(f"no host in the current host list runs {service.name}: start the environment "
                          "(fab env_start_all) or rebuild the list (fab hosts_reset)")
    targets = remote.resolver.targets(chosen)
    return Plan(service, targets, {h: version or images[h].version for h in chosen}, version,
                backends(remote, service, targets), tuple(sorted({images[h].env for h in chosen})))


def backends(remote: Remote, service: Service, targets: list[Target]) -> dict[str, str]:
    """host -> 'ip:port,...' of the listed hosts of its environment that run the service's upstream."""
    if service.upstream is None:
        return {t.name: "" for t in targets}
    upstream = remote.service(service.upstream)
    images = {i.name: i for i in remote.kit.inventory.images()}
    listed = {h.name for h in remote.kit.inventory.hosts()}
    return {t.name: ",".join(backend_addresses(upstream, [i for i in images.values() if i.env == images[t.name].env],
                                               listed, functools.partial(remote.resolver.address, images[t.name].env)))
            for t in targets}


# the operations ---------------------------------------------------------------------------------------
def proven(fleet: Fleet, service: Service, target: Target, timeout: float = 5.0) -> tuple[str, str | None]:
    """Ask the host's health URL (from the controller): (url, the version it says it serves, if it says one).
    StepFailed unless it answers JSON naming the host."""
    url, body = fleet.http_get(target, service.port, service.health, timeout)
    try:
        data = json.loads(body)
    except ValueError:
        raise StepFailed(f"{url} did not answer JSON") from None
    if not isinstance(data, dict) or data.get("host") != target.name:
        name = data.get("host") if isinstance(data, dict) else data
        raise StepFailed(f"{url} says it is {name!r}, expected {target.name!r}")
    version = data.get("version")
    return url, version if isinstance(version, str) else None


def _deploy(remote: Remote, p: Plan, fleet: Fleet) -> tuple[Step, str]:
    settings = remote.kit.settings
    repo = settings.repo(p.service.repo_var)
    releases = {v: package(p.service, v, repo) for v in set(p.versions.values())}
    published = {v: publish(settings, r) for v, r in releases.items()}
    gateways = {t.name: remote.resolver.gateway(t.name) for t in p.targets}  # once, before the fan-out
    backends = p.backends or {}

    def step(target: Target) -> Done:
        # one SSH command: the host fetches the release from booted's nginx on its gateway, checks it,
        # unpacks, switches and restarts; only when it cannot fetch it is the release pushed over SFTP
        release, pub = releases[p.versions[target.name]], published[p.versions[target.name]]
        lst = backends.get(target.name, "")
        fetch = (pub.url(gateways[target.name], settings.http_port), pub.sha256)
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
        if RUNNING not in words:  # stopped here by a user: the release is current, nothing serves it
            return Done(f"{what} {release.version}{setup}{how}, not running (stopped here)", release.version)
        serves = proven(fleet, p.service, target)[1]
        if serves is not None and serves != release.version:
            raise StepFailed(f"{what} {release.version}{restarted}, but it serves {serves}")
        return Done(f"{what} {release.version}{setup}{restarted}{how}", release.version)
    return step, ",".join(sorted({r.version for r in releases.values()}))


def _start(remote: Remote, p: Plan, fleet: Fleet) -> tuple[Step, str]:
    healthy, _ = _test(remote, p, fleet)

    def step(t: Target) -> str | Done:
        # Converge: a host already serving the version deployed there (deploy restarts a running
        # service) costs one HTTP GET, not an SSH session and a second restart. Force: stop, then start.
        try:
            return f"already running, {healthy(t)}"
        except StepFailed:
            out = fleet.sh(t, start_script(p.service, t))
            return f"{out.splitlines()[-1] if out else 'started'}, {healthy(t)}"
    return step, "-"


def _stop(remote: Remote, p: Plan, fleet: Fleet) -> tuple[Step, str]:
    def step(t: Target) -> str:
        # stop.sh fails (exit 6, naming what is left) unless no supervisor is left and nothing listens
        lines = fleet.sh(t, stop_script(p.service, t)).splitlines()
        said = "; ".join(line for line in lines if not line.startswith("verified gone")) or "stopped"
        return f"{said}, verified gone" if len(lines) > 1 and lines[-1].startswith("verified gone") else said
    return step, "-"


def _test(remote: Remote, p: Plan, fleet: Fleet) -> tuple[Step, str]:
    """GET the health URL: the host must say its own name and the version expected there (--version,
    else what booted deployed there last, else the version in environments.py). What it proves to serve
    is recorded."""
    inventory = remote.kit.inventory
    deployed = inventory.releases()
    expected = {h: p.requested or deployed.get((h, p.service.name)) or v for h, v in p.versions.items()}

    def step(target: Target) -> str:
        _, serves = proven(fleet, p.service, target)
        if serves is not None and deployed.get((target.name, p.service.name)) != serves:
            inventory.record_release(target.name, p.service.name, serves)
        want = expected.get(target.name)
        if want is not None and serves != want:
            raise StepFailed(f"serves version {serves!r}, expected {want!r}")
        return f"healthy, version {serves}"
    return step, "-"


def _rollback(remote: Remote, p: Plan, fleet: Fleet) -> tuple[Step, str]:
    def step(target: Target) -> Done:
        out = fleet.sh(target, commands.rollback_script(p.service, target))
        version = next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("version "))
        serves = proven(fleet, p.service, target)[1]
        if serves is not None and serves != version:
            raise StepFailed(f"rolled back to {version}, but it serves {serves}")
        return Done(f"rolled back to {version}, restarted", version)
    return step, "-"


@dataclass(frozen=True)
class Op:
    """An operation: how to make its per-host step (and the label its deployment record gets), whether a
    host's success records the version it left running, and whether it changes what runs (then runs of it
    for one service and environment are serialized)."""

    make: Callable[[Remote, Plan, Fleet], tuple[Step, str]]
    timeout: float  # seconds a host may take (BOOTED_TIMEOUT overrides)
    records_version: bool = False
    serialized: bool = True


OPS: dict[str, Op] = {
    "deploy": Op(_deploy, 120, records_version=True),
    "start": Op(_start, 60),
    "stop": Op(_stop, 30),
    "test": Op(_test, 15, serialized=False),
    "rollback": Op(_rollback, 60, records_version=True),
}
DELIVER = ("deploy", "start", "test")


@contextmanager
def serialize(remote: Remote, p: Plan, what: str) -> Iterator[None]:
    """Hold the lock of the plan's service in each of its environments: a second deploy (or start, stop,
    rollback) of it waits until this one has finished, and says whom it waits for."""
    with ExitStack() as stack:
        for env in p.envs:
            stack.enter_context(remote.kit.locks.service(env, p.service.name, what))
        yield


def run_op(remote: Remote, op: str, p: Plan, fleet: Fleet | None = None) -> list[HostResult]:
    """Run one operation of a plan on its hosts (one at a time per service and environment when it changes
    what runs); record it as a deployment (open -> done / failed)."""
    if op not in OPS:
        raise ConfigError(f"unknown operation {op!r} (one of {', '.join(OPS)})")
    if not OPS[op].serialized:
        return _run(remote, op, p, fleet)
    with serialize(remote, p, f"running {p.service.name}_{op}" + (f" {p.requested}" if p.requested else "")):
        return _run(remote, op, p, fleet)


def _run(remote: Remote, op: str, p: Plan, fleet: Fleet | None) -> list[HostResult]:
    if fleet is None:
        with remote.fleet() as own:
            return _run(remote, op, p, own)
    step, label = OPS[op].make(remote, p, fleet)
    timeout = remote.kit.settings.timeout or OPS[op].timeout
    inventory = remote.kit.inventory
    task = f"{p.service.name}_{op}"

    def locked(target: Target) -> str | Done:
        # one service operation per host at a time (other runs, the monitor). An operation that changes the
        # version makes it unknown until the host proves what it serves: a run that fails or is killed
        # half-way never leaves the database naming the version the host ran before
        with remote.kit.locks.host(target.name, task, wait=timeout / 2):
            if not OPS[op].records_version:
                return step(target)
            inventory.forget_releases(target.name)
            try:
                out = step(target)
            except BaseException:
                _observe(remote, fleet, p.service, target)
                raise
            if isinstance(out, Done):
                inventory.record_release(target.name, p.service.name, out.version)
            return out

    dep = inventory.open_deployment(p.service.name, label, op, [t.name for t in p.targets])
    results = fleet.run(p.targets, locked, task, timeout=timeout)
    inventory.finish_deployment(dep, results)
    return results


def _observe(remote: Remote, fleet: Fleet, service: Service, target: Target) -> None:
    """After a failed step: record the version the host proves it serves, if it answers at once."""
    try:
        serves = proven(fleet, service, target, timeout=2.0)[1]
    except StepFailed:  # no answer: the version stays unknown until a deploy or test proves one
        return
    if serves is not None:
        remote.kit.inventory.record_release(target.name, service.name, serves)


def deliver(remote: Remote, fleet: Fleet, service: str, hosts: list[str], env: str) -> dict[str, list[HostResult]]:
    """deploy -> start -> test `service` on `hosts` (serialized as one run); a host that fails a step skips
    the later ones. Returns each step's results."""
    p = plan(remote, service, hosts=hosts, env=env)
    out: dict[str, list[HostResult]] = {}
    with serialize(remote, p, f"delivering {service}"):
        for op in DELIVER:
            if not p.targets:
                break
            out[op] = _run(remote, op, p, fleet)
            p = p.only({r.host for r in out[op] if r.ok})
    return out
