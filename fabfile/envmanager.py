"""Environment tasks: start everything, the minimum, one worker; stop; status."""

from __future__ import annotations

import json
import time

from booted.context import Booted
from booted.lab.handle import STEPS, StartReport
from booted.monitor import process
from booted.report import table
from fabfile._task import booted_task, err, failed, finish

ENV_HELP = {"env": "environment name (default: BOOTED_ENV, or the only one in environments.py)"}


def _summary(title: str, report: StartReport, started: float) -> None:
    def cell(step: str, host: str) -> str:
        r = report.steps.get(step, {}).get(host)
        return "-" if r is None else "ok" if r.ok else "FAILED"

    print(f"{title} ({time.monotonic() - started:.1f}s)")
    print(table(["host", "ip", "role", *STEPS],
                [(i.name, i.ip, i.role, *(cell(s, i.name) for s in STEPS)) for i in report.images]))
    bad = [r for s in STEPS for r in report.steps.get(s, {}).values() if not r.ok]
    for step in STEPS:
        for r in report.steps.get(step, {}).values():
            if not r.ok:
                err(f"  {r.host} {step}: {r.detail}")
    names = report.failed()
    print(f"{len(report.images) - len(names)} ok, {len(names)} failed")
    failed(bad)


@booted_task(help=ENV_HELP)
def env_start_all(ctx: Booted, env: str | None = None) -> None:
    """Build the image if needed, boot all hosts, deploy, test."""
    started, lab = time.monotonic(), ctx.lab(env)
    report = lab.start_all()
    _summary(f"environment {lab.env.name}: {len(report.images)} host(s)", report, started)


@booted_task(help=ENV_HELP)
def env_start_min(ctx: Booted, env: str | None = None) -> None:
    """Start the 'min' hosts of each role, deploy and test them."""
    started, lab = time.monotonic(), ctx.lab(env)
    report = lab.start_min()
    _summary(f"environment {lab.env.name} (minimum): {len(report.images)} host(s)", report, started)


@booted_task(help={"name": "host to (re)start", **ENV_HELP})
def env_start_worker(ctx: Booted, name: str, env: str | None = None) -> None:
    """(Re)start one host: stop, boot, deploy, start, test."""
    started, lab = time.monotonic(), ctx.lab_of(name, env)
    report = lab.start_worker(name)
    _summary(f"environment {lab.env.name}: worker {name}", report, started)


@booted_task(help=ENV_HELP)
def env_stop(ctx: Booted, env: str | None = None) -> None:
    """Stop every host of the environment, remove its network."""
    lab = ctx.lab(env)
    if process.stop(ctx, lab.env.name):  # first: it would heal what this stops
        err(f"stopped the monitor of {lab.env.name}")
    results = lab.stop_all()
    finish(f"environment {lab.env.name}: stopped {len(results)} host(s)", results)


@booted_task(help={**ENV_HELP, "json": "print JSON instead of a table"})
def env_status(ctx: Booted, env: str | None = None, json_: bool = False) -> None:
    """Desired (environments.py) vs actual state of each host."""
    lab = ctx.lab(env)
    rows = lab.status()
    for line in ctx.gateways_down():  # on stderr: --json's output stays the list of hosts
        err(f"WARNING: {line}")
    if json_:
        print(json.dumps(rows, indent=2))
        return
    print(f"environment {lab.env.name} ({lab.env.provider}, {lab.env.network})")
    print(table(["host", "desired", "ip", "running", "reachable", "want", "deployed", "state"],
                [(r["host"], r["desired"], r["ip"], "yes" if r["running"] else "no",
                  {True: "yes", False: "no", None: "-"}[r["reachable"]], r["want"], r["deployed"], r["state"])
                 for r in rows]))


TASKS = [env_start_all, env_start_min, env_start_worker, env_stop, env_status]
