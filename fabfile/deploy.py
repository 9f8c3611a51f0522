"""Service tasks, generated: <service>_deploy/_start/_stop/_test/_rollback for every folder in service/."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from booted.config import Settings
from booted.remote.folders import folders
from fabfile._task import JSON_HELP, booted_task, err, finish, names

if TYPE_CHECKING:
    from booted.context import Booted
    from booted.results import HostResult

OPS = {
    "deploy": "Upload {name} [--version V]; switch to it atomically",
    "start": "(Re)start {name} where it does not serve its version",
    "stop": "Stop {name} on its hosts",
    "test": "Check {name}'s health URL and version on its hosts",
    "rollback": "Switch {name} back to its previous release, restart",
}
HELP = {"version": "a tag or commit of <NAME>_REPO (or the in-tree VERSION)",
        "hosts": "only these hosts (comma list or range like web[01:03])", "env": "only this environment",
        **JSON_HELP}


def _make(service: str, op: str) -> Any:
    def body(ctx: Booted, version: str | None = None, hosts: str | None = None, env: str | None = None,
             json_: bool = False) -> None:
        from booted.remote import deploy
        from booted.state import pins

        chosen = names(hosts)
        lost = _relist(ctx, service, chosen, env)
        if env is not None:
            ctx.environment(env)  # --env names an environment of environments.py
        results = lost + deploy.run_op(ctx.remote, op, deploy.plan(ctx.remote, service, chosen, env, version))
        done = [r.host for r in results if r.ok]
        if op in ("deploy", "rollback") and done:  # the monitor keeps what a user deployed by hand
            for handle, group in ctx.group(done, env):
                wanted = {h.name: h.version for h in handle.env.hosts}
                for pin in pins.record_by_user(ctx.inventory, service, group, wanted):
                    err(f"{pin.host}: {service} {pin.version} pinned (environments.py: {pin.env_version or 'HEAD'});"
                        " the monitor keeps it until environments.py's version changes")
        finish(f"{service}_{op} on {len(results)} host(s)", results, json_)

    body.__name__ = body.__qualname__ = f"{service}_{op}"
    body.__doc__ = OPS[op].format(name=service) + "."
    return booted_task(help=HELP)(body)


def _relist(ctx: Booted, service: str, chosen: list[str] | None, env: str | None) -> list[HostResult]:
    """A host of the service that runs but is off the host list is listed again (said on stderr), or its
    failure is one of the task's results: never skipped silently. When every host of the service is listed,
    none can be off the list: no lab handle is made and no provider asked (a service task's start-up)."""
    listed = {h.name for h in ctx.inventory.hosts()}
    envs = sorted({i.env for i in ctx.inventory.images() if i.service == service and i.name not in listed
                   and i.env in ctx.environments and (env is None or i.env == env)})
    lost = [r for e in envs for r in ctx.lab(e).relist_unlisted(service) if chosen is None or r.host in chosen]
    for r in lost:
        err(f"{r.host}: runs but was not in the host list: {r.detail}")
    return [r for r in lost if not r.ok]


def service_tasks(services_dir: Path | None = None) -> list[Any]:
    """Tasks for every service folder, named from the folder alone: a broken service.toml or a bad
    setting is reported (exit 2) by the task that runs, instead of making the tasks vanish."""
    return [_make(name, op) for name in folders(services_dir or Settings.task_services_dir()) for op in OPS]
