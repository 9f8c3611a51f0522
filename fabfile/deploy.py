"""Service tasks, generated: <service>_deploy/_start/_stop/_test/_rollback for every folder in service/."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from booted import deploy
from booted.config import Settings
from booted.context import Booted
from booted.errors import BootedError
from booted.services import Service, discover
from fabfile._task import booted_task, finish, names

OPS = {
    "deploy": "Upload {name} [--version V]; switch to it atomically",
    "start": "(Re)start {name} where it does not serve its version",
    "stop": "Stop {name} on its hosts",
    "test": "Check {name}'s health URL and version on its hosts",
    "rollback": "Switch {name} back to its previous release, restart",
}
HELP = {"version": "a tag or commit of <NAME>_REPO (or the in-tree VERSION)",
        "hosts": "only these hosts (comma list or range like web[01:03])", "env": "only this environment"}


def _make(service: str, op: str) -> Any:
    def body(ctx: Booted, version: str | None = None, hosts: str | None = None, env: str | None = None) -> None:
        p = deploy.plan(ctx, service, names(hosts), env, version)
        results = deploy.run_op(ctx, op, p)
        finish(f"{service}_{op} on {len(results)} host(s)", [(r.host, r.ok, r.detail, r.seconds) for r in results])

    body.__name__ = body.__qualname__ = f"{service}_{op}"
    body.__doc__ = OPS[op].format(name=service) + "."
    return booted_task(help=HELP)(body)


def service_tasks(services_dir: Path | None = None) -> list[Any]:
    try:
        found: dict[str, Service] = discover(services_dir or Settings.from_env().services_dir)
    except BootedError as exc:  # fab --list must still work: say what is wrong with the service
        print(f"booted: {exc}", file=sys.stderr)
        return []
    return [_make(name, op) for name in found for op in OPS]
