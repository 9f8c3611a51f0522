"""Environment tasks: start everything, the minimum, one worker; stop; status."""

from __future__ import annotations

import json
import time

from invoke.exceptions import Exit

from booted import envs
from booted.context import Booted
from booted.report import table
from fabfile._task import booted_task, err, finish

ENV_HELP = {"env": "environment name (default: BOOTED_ENV, or the only one in environments.py)"}


def _summary(title: str, rows: list[envs.Row], started: float) -> None:
    lines = [(r.host, r.ip, r.role, *(_cell(r.steps.get(s)) for s in envs.STEPS)) for r in rows]
    print(f"{title} ({time.monotonic() - started:.1f}s)")
    print(table(["host", "ip", "role", *envs.STEPS], lines))
    failed = [r for r in rows if not r.ok]
    for r in failed:
        for step, (ok, detail) in r.steps.items():
            if not ok:
                err(f"  {r.host} {step}: {detail}")
    print(f"{len(rows) - len(failed)} ok, {len(failed)} failed")
    if failed:
        raise Exit(f"booted: {len(failed)} host(s) failed: {', '.join(r.host for r in failed)}", code=1)


def _cell(step: tuple[bool, str] | None) -> str:
    if step is None:
        return "-"
    return "ok" if step[0] else "FAILED"


@booted_task(help=ENV_HELP)
def env_start_all(ctx: Booted, env: str | None = None) -> None:
    """Build the image if needed, boot all hosts, deploy, test."""
    started = time.monotonic()
    environment, rows = envs.start_all(ctx, env)
    _summary(f"environment {environment.name}: {len(rows)} host(s)", rows, started)


@booted_task(help=ENV_HELP)
def env_start_min(ctx: Booted, env: str | None = None) -> None:
    """Start the 'min' hosts of each role, deploy and test them."""
    started = time.monotonic()
    environment, rows = envs.start_min(ctx, env)
    _summary(f"environment {environment.name} (minimum): {len(rows)} host(s)", rows, started)


@booted_task(help={"name": "host to (re)start", **ENV_HELP})
def env_start_worker(ctx: Booted, name: str, env: str | None = None) -> None:
    """(Re)start one host: stop, boot, deploy, start, test."""
    started = time.monotonic()
    environment, rows = envs.start_worker(ctx, name, env)
    _summary(f"environment {environment.name}: worker {name}", rows, started)


@booted_task(help=ENV_HELP)
def env_stop(ctx: Booted, env: str | None = None) -> None:
    """Stop every host of the environment, remove its network."""
    environment, outcomes = envs.stop(ctx, env)
    finish(f"environment {environment.name}: stopped {len(outcomes)} host(s)",
           [(o.host, o.ok, o.detail, None) for o in outcomes])


@booted_task(help={**ENV_HELP, "json": "print JSON instead of a table"})
def env_status(ctx: Booted, env: str | None = None, json_: bool = False) -> None:
    """Desired (environments.py) vs actual state of each host."""
    environment, rows = envs.status(ctx, env)
    if json_:
        print(json.dumps(rows, indent=2))
        return
    print(f"environment {environment.name} ({environment.provider}, {environment.network})")
    print(table(["host", "desired", "ip", "running", "reachable", "want", "deployed", "state"],
                [(r["host"], r["desired"], r["ip"], "yes" if r["running"] else "no",
                  {True: "yes", False: "no", None: "-"}[r["reachable"]], r["want"], r["deployed"], r["state"])
                 for r in rows]))


TASKS = [env_start_all, env_start_min, env_start_worker, env_stop, env_status]
