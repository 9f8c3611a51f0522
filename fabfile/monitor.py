"""Monitor tasks: run the daemon in the foreground or background, stop it, show what it sees and did."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from booted.report import table, when
from fabfile._task import booted_task, err

if TYPE_CHECKING:
    from booted.context import Booted

ENV_HELP = {"env": "environment name (default: BOOTED_ENV, or the only one in environments.py)"}


@booted_task(help={**ENV_HELP, "password_stdin": "read BOOTED_PW from the first line of stdin (monitor_start "
                                                  "starts the daemon so: not in its environment)"})
def monitor(ctx: Booted, env: str | None = None, password_stdin: bool = False) -> None:
    """Run the monitor in the foreground (Ctrl-C stops it)."""
    from booted.monitor import process

    if password_stdin:
        ctx.settings = replace(ctx.settings, password=process.password_from(sys.stdin))
    process.foreground(ctx, ctx.environment(env).name)


@booted_task(help=ENV_HELP)
def monitor_start(ctx: Booted, env: str | None = None) -> None:
    """Start the monitor in the background."""
    from booted.monitor import process
    from booted.monitor.statusfile import status_file

    name = ctx.environment(env).name
    pid = process.start(ctx, name)
    url = status_file(ctx.settings.state_dir, name).with_suffix(".url")
    print(f"monitor of {name} started (pid {pid}); log {process.files(ctx, name)[1]}; status page and API: "
          f"the URL in {url} (local users only)")


@booted_task(help=ENV_HELP)
def monitor_stop(ctx: Booted, env: str | None = None) -> None:
    """Stop the monitor (after the action it is in)."""
    from booted.monitor import process

    name = ctx.environment(env).name
    pid = process.stop(ctx, name)
    print(f"monitor of {name} stopped (pid {pid})" if pid else f"no monitor of {name} runs")


@booted_task(help={**ENV_HELP, "json": "print JSON instead of tables"})
def monitor_status(ctx: Booted, env: str | None = None, json_: bool = False) -> None:
    """Show desired vs observed per role, and recent actions."""
    from booted.monitor import process
    from booted.monitor.statusfile import status_file
    from booted.state import pins

    name = ctx.environment(env).name
    pid = process.running(ctx, name)
    try:
        last = json.loads(status_file(ctx.settings.state_dir, name).read_text())
    except (OSError, ValueError):
        last = {}
    actions = ctx.inventory.actions(name)
    warnings = ctx.gateways_down()
    held = pins.pins(ctx.inventory)
    pinned = {h.name: held[h.name].version for h in ctx.environment(name).hosts
              if h.name in held and held[h.name].holds(h.version)}
    if json_:
        print(json.dumps({"env": name, "pid": pid, "last_pass": last, "actions": actions, "pinned": pinned,
                          "warnings": warnings}, indent=2))
        return
    for line in warnings:
        err(f"WARNING: {line}")
    age = f", last pass {time.time() - last['at']:.0f}s ago" if last.get("at") else ""
    print(f"monitor of {name}: " + (f"running (pid {pid}){age}" if pid else "not running"))
    roles = last.get("roles", {})
    if roles:
        print(table(["role", "wanted", "running", "healthy", "warm (paused)", "held by a user", "load req/s"],
                    [(r, v["wanted"], ",".join(v["running"]) or "-", ",".join(v["healthy"]) or "-",
                      ",".join(v.get("warm", [])) or "-", ",".join(v["held"]) or "-",
                      "-" if v["load"] is None else f"{v['load']:.1f}")
                     for r, v in roles.items()]))
    if pinned:
        print("pinned by a user (kept until environments.py's version changes): "
              + ", ".join(f"{h} {v}" for h, v in sorted(pinned.items())))
    backends = [(lb, addr, c.get("status"), c.get("requests"), c.get("errors"), c.get("in_flight"), c.get("mean_ms"))
                for lb, servers in last.get("lbs", {}).items() for addr, c in servers.items()]
    if backends:
        print(table(["lb", "backend", "state", "requests", "errors", "in flight", "mean ms"], backends))
    if actions:
        print(table(["started", "action", "host", "reason", "status", "detail"],
                    [(when(a["started"]), a["kind"], a["host"], a["reason"], a["status"], str(a["detail"])[:60])
                     for a in actions[:10]]))


TASKS = [monitor, monitor_start, monitor_stop, monitor_status]
