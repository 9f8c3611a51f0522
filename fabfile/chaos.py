"""Chaos runs: a bounded experiment on a lab whose monitor runs, and its report (booted/chaos/)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke.exceptions import Exit

from booted.errors import ConfigError
from fabfile._task import booted_task, emit_json

if TYPE_CHECKING:
    from booted.context import Booted


def number(text: str | None, flag: str) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--{flag} {text!r}: a number") from None


@booted_task(help={"env": "environment name (default: BOOTED_ENV, or the only one in environments.py)",
                   "duration": "seconds the load runs and failures are injected (default 120)",
                   "kill_every": "seconds between kills (default 20; 0: none)",
                   "kill": "which hosts to kill -9: role=ROLE[,what=host|service] (default role=worker; "
                           "never a role's last serving host), or none",
                   "impair": "a link impaired for a while: host=NAME,delay=100ms[,jitter=..,loss=..,rate=..],"
                             "for=SECONDS[,at=SECONDS] (default at: a third into the run, halfway between kills)",
                   "load": "requests/s through the first lb (default 20)",
                   "max_failed": "SLO: at most this many failed requests (exit 1 otherwise)",
                   "max_p99": "SLO: p99 latency at most this many ms (exit 1 otherwise)",
                   "json": "print the report as JSON on stdout"})
def chaos(ctx: Booted, env: str | None = None, duration: float = 120.0, kill_every: float = 20.0,
          kill: str = "role=worker", impair: str | None = None, load: float = 20.0, max_failed: str | None = None,
          max_p99: str | None = None, json_: bool = False) -> None:
    """Kill and impair on a schedule under load; report failed requests, latency and heal times; exit 1
    when the SLO given is not met."""
    from booted.chaos import spec
    from booted.chaos.lab import run_chaos

    most = number(max_failed, "max-failed")
    if most is not None and most != int(most):
        raise ConfigError(f"--max-failed {max_failed}: a whole number")
    try:
        plan = spec.plan(duration, kill_every, kill, impair, load, None if most is None else int(most),
                         number(max_p99, "max-p99"))
    except ValueError as exc:
        raise ConfigError(f"chaos: {exc}") from None
    report = run_chaos(ctx, env, plan)
    if json_:
        emit_json(report.as_json())
    else:
        print(report.text(), flush=True)
    broken = report.broken()
    if report.interrupted:
        raise Exit("booted: chaos run interrupted (Ctrl-C); what it impaired was cleared", code=130)
    if broken:
        raise Exit("booted: SLO not met: " + "; ".join(broken), code=1)


TASKS = [chaos]
