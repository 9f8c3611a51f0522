"""Impaired links: delay, jitter, loss and rate towards hosts (booted/impair/), set, cleared and shown."""

from __future__ import annotations

from typing import TYPE_CHECKING

from booted.errors import ConfigError
from booted.report import table
from booted.results import HostResult
from fabfile._task import JSON_HELP, booted_task, emit_json, finish, names

if TYPE_CHECKING:
    from booted.context import Booted

WHERE_HELP = {"env": "environment name (default: BOOTED_ENV, or the only one in environments.py)",
              "hosts": "only these hosts (comma list or range; default: every host of the environment)",
              "network": "only this network of the lab (today a lab's one network, named after its environment)"}


@booted_task(help={**WHERE_HELP, "delay": "one-way delay towards the host, e.g. 100ms",
                   "jitter": "+- this much on each frame's delay, e.g. 10ms (needs --delay)",
                   "loss": "frames towards the host dropped at random, e.g. 1%",
                   "rate": "bandwidth towards the host, e.g. 10mbit (k, m, g: powers of 1000)", **JSON_HELP})
def net_impair(ctx: Booted, env: str | None = None, hosts: str | None = None, network: str | None = None,
               delay: str | None = None, jitter: str | None = None, loss: str | None = None,
               rate: str | None = None, json_: bool = False) -> None:
    """Slow, lossy or narrow links towards hosts (kept for hosts that start later or again)."""
    flags = {k: v for k, v in (("delay", delay), ("jitter", jitter), ("loss", loss), ("rate", rate)) if v}
    if not flags:
        raise ConfigError("net_impair: say what to impair: --delay 100ms, --jitter 10ms, --loss 1%, --rate 10mbit "
                          "(fab net_clear removes impairments)")
    from booted.environments.impairment import impairment

    try:
        spec = impairment(flags)
    except ValueError as exc:
        raise ConfigError(f"net_impair: --{exc}") from None
    results: list[HostResult] = []
    for handle, group in ctx.group(names(hosts), env):
        handle.check()
        results += handle.links.impair(group, network, spec)
    finish("impaired links", results, json_)


@booted_task(help={**WHERE_HELP, **JSON_HELP})
def net_clear(ctx: Booted, env: str | None = None, hosts: str | None = None, network: str | None = None,
              json_: bool = False) -> None:
    """No impairment on the hosts' links (environments.py's too, until env_stop)."""
    results: list[HostResult] = []
    for handle, group in ctx.group(names(hosts), env):
        handle.check()
        results += handle.links.clear(group, network)
    finish("cleared links", results, json_)


@booted_task(help={"env": WHERE_HELP["env"], **JSON_HELP})
def net_status(ctx: Booted, env: str | None = None, json_: bool = False) -> None:
    """Each impaired link: host, network, interface, delay, jitter, loss, rate, mechanism, state."""
    handle = ctx.lab(env)
    rows = handle.links.status()
    if json_:
        emit_json([{"name": r["host"], **r} for r in rows])
        return
    if not rows:
        print(f"environment {handle.env.name}: no impaired links")
        return
    print(table(["host", "network", "interface", "delay", "jitter", "loss", "rate", "mechanism", "state"],
                [(r["host"], r["network"], r["interface"], r["delay"], r["jitter"], r["loss"], r["rate"],
                  ", ".join(f"{k}: {m}" for k, m in sorted(r["mechanism"].items())) or None, r["state"])
                 for r in rows]))


TASKS = [net_impair, net_clear, net_status]
