"""Deploy engine: release upload + atomic switch, supervised start, stop, HTTP test, rollback.

Layout on a host (BASE = /srv/booted/<service>): releases/<version>-<hash>/, `current` and `previous`
symlinks switched with rename(2), run.sh (the supervisor loop), supervisor.pid, service.log.
Every step runs on all targets through a Fleet: bounded, connection reused, one result per host.
"""

from __future__ import annotations

import io
import json
import shlex
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from booted import machines
from booted.context import Booted
from booted.errors import BootedError, ConfigError
from booted.fanout import Fleet, Result, StepFailed, Target, run_command
from booted.services import Release, Service, get_service, package

ROOT = "/srv/booted"


@dataclass(frozen=True)
class Plan:
    """The hosts a service operation runs on, and the version each should run."""

    service: Service
    targets: list[Target]
    versions: dict[str, str | None]  # host -> version to deploy (None: in-tree / HEAD)
    requested: str | None = None  # --version, if the user gave one


def plan(ctx: Booted, service_name: str, hosts: list[str] | None = None, env: str | None = None,
         version: str | None = None) -> Plan:
    """The current host list, narrowed to hosts whose image runs this service (and to --hosts / --env)."""
    service = get_service(ctx.settings.services_dir, service_name)
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
    chosen = [h for h in current.values() if h.name in images and images[h.name].service == service.name
              and (not hosts or h.name in hosts) and (env is None or images[h.name].env == env)]
    if not chosen:
        raise BootedError(f"no host in the current host list runs {service.name}: start the environment "
                          "(fab env_start_all) or rebuild the list (fab hosts_reset)")
    return Plan(service, [machines.target(ctx, h.name, h.ip, images) for h in chosen],
                {h.name: version or images[h.name].version for h in chosen}, version)


def _base(service: Service) -> str:
    return f"{ROOT}/{service.name}"


def _run_script(service: Service, target: Target, version: str, backends: str) -> str:
    """The supervisor loop: runs `start` in the current release, restarts it when it exits."""
    values = {"ip": target.ip, "port": str(service.port), "host": target.name, "version": version,
              "backends": backends}
    command = service.start.format(**{k: shlex.quote(v) for k, v in values.items()})
    base = shlex.quote(_base(service))
    return (f"#!/bin/sh\n# written by booted: supervises {service.name}\n"
            f"while :; do\n  (cd {base}/current && {command})\n"
            f"  echo \"booted: {service.name} exited ($?), restarting in 1s\" >&2\n  sleep 1\ndone\n")


def _stop_snippet(base: str) -> str:
    return (f'pidf={base}/supervisor.pid\n'
            'if [ -f "$pidf" ] && pid=$(cat "$pidf") && kill -0 "$pid" 2>/dev/null; then\n'
            '  kill -TERM "-$pid" 2>/dev/null\n'
            '  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done\n'
            '  kill -KILL "-$pid" 2>/dev/null || true\n  echo stopped\nelse\n  echo "was not running"\nfi\n'
            'rm -f "$pidf"\n')


def _start_snippet(service: Service, target: Target) -> str:
    base = shlex.quote(_base(service))
    url = shlex.quote(f"http://{target.ip}:{service.port}{service.health}")
    return (f'[ -e {base}/current ] || {{ echo "{service.name} is not deployed here: run fab '
            f'{service.name}_deploy" >&2; exit 3; }}\n'
            + _stop_snippet(base) +
            f"setsid sh {base}/run.sh >>{base}/service.log 2>&1 </dev/null &\n"
            f'echo $! > {base}/supervisor.pid\n'
            f"for i in $(seq 1 100); do curl -fsS -m 1 -o /dev/null {url} 2>/dev/null && "
            f"{{ echo started; exit 0; }}; sleep 0.1; done\n"
            f'echo "{service.name} did not answer {url} within 10s; last log lines:" >&2\n'
            f"tail -n 3 {base}/service.log >&2\nexit 1\n")


def backends_of(ctx: Booted, service: Service, targets: list[Target]) -> dict[str, str]:
    """host -> 'ip:port,...' of the listed hosts of its environment that run the service's upstream."""
    if service.upstream is None:
        return {t.name: "" for t in targets}
    from booted.services import get_service

    upstream = get_service(ctx.settings.services_dir, service.upstream)
    images = {i.name: i for i in ctx.inventory.images()}
    listed = [h for h in ctx.inventory.hosts() if h.name in images and images[h.name].service == upstream.name]
    return {t.name: ",".join(f"{h.ip}:{upstream.port}" for h in listed
                             if images[h.name].env == images[t.name].env) for t in targets}


def deploy_step(fleet: Fleet, service: Service, releases: dict[str | None, Release],
                versions: dict[str, str | None], backends: dict[str, str]) -> Callable[[Target], str]:
    def step(target: Target) -> str:
        release = releases[versions[target.name]]
        conn = fleet.connection(target)
        base = _base(service)
        incoming = f"{ROOT}/.incoming-{service.name}-{release.id}.tar.gz"
        conn.put(io.BytesIO(release.data), incoming)
        q = shlex.quote
        rel = f"releases/{release.id}"
        run_sh = _run_script(service, target, release.version, backends[target.name])
        script = (
            f"set -e\nbase={q(base)}\nrel={q(rel)}\ntgz={q(incoming)}\n"
            'mkdir -p "$base/releases"\n'
            'if [ ! -d "$base/$rel" ]; then rm -rf "$base/$rel.tmp"; mkdir "$base/$rel.tmp"\n'
            '  tar -xzf "$tgz" -C "$base/$rel.tmp"; mv "$base/$rel.tmp" "$base/$rel"; fi\n'
            'rm -f "$tgz"\n'
            f"printf '%s' {q(run_sh)} > \"$base/run.sh.new\"\n"
            'newrun=\nif cmp -s "$base/run.sh.new" "$base/run.sh"; then rm -f "$base/run.sh.new"\n'
            'else mv "$base/run.sh.new" "$base/run.sh"; newrun=1; fi\n'
            'cur=$(readlink "$base/current" || true)\n'
            'changed=$newrun\n'
            'if [ "$cur" != "$rel" ]; then\n'
            '  if [ -n "$cur" ]; then\n'
            '    ln -sfn "$cur" "$base/previous.new"; mv -T "$base/previous.new" "$base/previous"; fi\n'
            '  ln -sfn "$rel" "$base/current.new"; mv -T "$base/current.new" "$base/current"; echo switched\n'
            '  changed=1\n'
            'else echo unchanged; fi\n'
            'keep=$(readlink "$base/current"); prev=$(readlink "$base/previous" || true)\n'
            'for d in "$base"/releases/*; do r="releases/${d##*/}"\n'
            '  [ "$r" = "$keep" ] || [ "$r" = "$prev" ] || rm -rf "$d"; done\n'
            # a running service is restarted in the same SSH command when its release or run.sh changed
            'if [ -n "$changed" ] && [ -f "$base/supervisor.pid" ] && '
            'kill -0 "$(cat "$base/supervisor.pid")" 2>/dev/null; then\n'
            'set +e\n' + _start_snippet(service, target) + 'fi\n')
        out = run_command(conn, script).split()
        what = "switched to" if "switched" in out else "already at"
        return f"{what} {release.version}" + (", restarted" if "started" in out else "")
    return step


def run_op(ctx: Booted, op: str, p: Plan, fleet: Fleet | None = None) -> list[Result]:
    """Run one operation (deploy, start, stop, test, rollback) of a plan; record it as a deployment."""
    own = fleet is None
    fleet = fleet or ctx.fleet()
    try:
        return _run_op(ctx, op, p, fleet)
    finally:
        if own:
            fleet.close()


def _run_op(ctx: Booted, op: str, p: Plan, fleet: Fleet) -> list[Result]:
    service = p.service
    names = [t.name for t in p.targets]
    recorded: dict[str, str] = {}
    label = ""
    if op == "deploy":
        wanted = set(p.versions.values())
        releases = {v: package(service, v) for v in wanted}
        recorded = {h: releases[v].version for h, v in p.versions.items()}
        label = ",".join(sorted({r.version for r in releases.values()}))
        step = deploy_step(fleet, service, releases, p.versions, backends_of(ctx, service, p.targets))
    elif op == "start":
        healthy = test_step(service, _expected_versions(ctx, p))

        def step(t: Target) -> str:
            # Converge: a host already serving the version deployed there (deploy restarts a running
            # service) costs one HTTP GET, not an SSH session and a second restart. Force: stop, then start.
            try:
                return f"already running, {healthy(t)}"
            except StepFailed:
                return run_command(fleet.connection(t), _start_snippet(service, t))
    elif op == "stop":
        def step(t: Target) -> str:
            return run_command(fleet.connection(t), _stop_snippet(shlex.quote(_base(service))))
    elif op == "test":
        expected = _expected_versions(ctx, p)
        step = test_step(service, expected)
    elif op == "rollback":
        step = rollback_step(fleet, service, recorded)
    else:
        raise ConfigError(f"unknown operation {op!r}")
    dep = ctx.inventory.open_deployment(service.name, label or "-", op, names)
    results = fleet.run(p.targets, step, f"{service.name}_{op}")
    ctx.inventory.finish_deployment(dep, [(r.host, r.ok, r.detail, r.seconds) for r in results], service.name,
                                    recorded if op in ("deploy", "rollback") else None)
    return results


def _expected_versions(ctx: Booted, p: Plan) -> dict[str, str | None]:
    """--version if given, else what booted deployed there last, else the version in environments.py."""
    deployed = ctx.inventory.releases()
    return {h: p.requested or deployed.get((h, p.service.name)) or v for h, v in p.versions.items()}


def test_step(service: Service, expected: dict[str, str | None]) -> Callable[[Target], str]:
    def step(target: Target) -> str:
        addr, port = target.endpoint(service.port)
        url = f"http://{addr}:{port}{service.health}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = resp.read(65536)
        except OSError as exc:
            raise StepFailed(f"{url}: {getattr(exc, 'reason', exc)}") from None
        try:
            data = json.loads(body)
        except ValueError:
            raise StepFailed(f"{url} did not answer JSON") from None
        if data.get("host") != target.name:
            raise StepFailed(f"{url} says it is {data.get('host')!r}, expected {target.name!r}")
        want = expected.get(target.name)
        if want is not None and data.get("version") != want:
            raise StepFailed(f"serves version {data.get('version')!r}, expected {want!r}")
        return f"healthy, version {data.get('version')}"
    return step


def rollback_step(fleet: Fleet, service: Service, recorded: dict[str, str]) -> Callable[[Target], str]:
    def step(target: Target) -> str:
        conn = fleet.connection(target)
        base = shlex.quote(_base(service))
        out = run_command(conn, (
            f"set -e\nbase={base}\n"
            '[ -L "$base/previous" ] || { echo "no previous release to roll back to" >&2; exit 3; }\n'
            'cur=$(readlink "$base/current"); prev=$(readlink "$base/previous")\n'
            'ln -sfn "$prev" "$base/current.new"; mv -T "$base/current.new" "$base/current"\n'
            'ln -sfn "$cur" "$base/previous.new"; mv -T "$base/previous.new" "$base/previous"\n'
            'cat "$base/current/VERSION"\n'))
        version = out.splitlines()[-1].strip()
        recorded[target.name] = version
        run_command(conn, _start_snippet(service, target))
        return f"rolled back to {version}, restarted"
    return step
