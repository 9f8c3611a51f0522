"""Environment tasks: start everything, the minimum, one worker; stop; status."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from booted.errors import StateError
from booted.report import table, when
from fabfile._task import JSON_HELP, booted_task, emit_json, err, failed, finish

if TYPE_CHECKING:  # the tasks import what they use when they run: `fab --list` and other tasks do not pay
    from booted.context import Booted
    from booted.runs import StartReport
    from booted.state.records import Image, Timeline

ENV_HELP = {"env": "environment name (default: BOOTED_ENV, or the only one in environments.py)"}


def start_row(report: StartReport, image: Image) -> dict[str, Any]:
    """One host of an env_start_* run as --json prints it: the table's columns, each step it reached as
    {ok, detail, seconds} (null when it did not get there), and ok: no step failed."""
    from booted.runs import STEPS

    def step(name: str) -> dict[str, Any] | None:
        r = report.steps.get(name, {}).get(image.name)
        return None if r is None else {"ok": r.ok, "detail": r.detail,
                                       "seconds": None if r.seconds is None else round(r.seconds, 3)}

    return {"name": image.name, "ip": image.ip, "role": image.role, "ok": image.name not in report.failed(),
            **{s: step(s) for s in STEPS}}


def _summary(title: str, report: StartReport, started: float, as_json: bool) -> None:
    from booted.runs import STEPS

    def cell(step: str, host: str) -> str:
        r = report.steps.get(step, {}).get(host)
        return "-" if r is None else "ok" if r.ok else "FAILED"

    if as_json:
        emit_json([start_row(report, i) for i in report.images])
    else:
        print(f"{title} ({time.monotonic() - started:.1f}s)")
        print(table(["host", "ip", "role", *STEPS],
                    [(i.name, i.ip, i.role, *(cell(s, i.name) for s in STEPS)) for i in report.images]))
    bad = [r for s in STEPS for r in report.steps.get(s, {}).values() if not r.ok]
    for step in STEPS:
        for r in report.steps.get(step, {}).values():
            if not r.ok:
                err(f"  {r.host} {step}: {r.detail}")
    if not as_json:
        names = report.failed()
        print(f"{len(report.images) - len(names)} ok, {len(names)} failed")
    failed(bad)


@booted_task(help={**ENV_HELP, **JSON_HELP})
def env_start_all(ctx: Booted, env: str | None = None, json_: bool = False) -> None:
    """Build the image if needed, boot all hosts, deploy, test."""
    started, runs = time.monotonic(), ctx.runs(env)
    report = runs.start_all()
    _summary(f"environment {runs.env.name}: {len(report.images)} host(s)", report, started, json_)


@booted_task(help={**ENV_HELP, **JSON_HELP})
def env_start_min(ctx: Booted, env: str | None = None, json_: bool = False) -> None:
    """Start the 'min' hosts of each role, deploy and test them."""
    started, runs = time.monotonic(), ctx.runs(env)
    report = runs.start_min()
    _summary(f"environment {runs.env.name} (minimum): {len(report.images)} host(s)", report, started, json_)


@booted_task(help={"name": "host to (re)start", **ENV_HELP, **JSON_HELP})
def env_start_worker(ctx: Booted, name: str, env: str | None = None, json_: bool = False) -> None:
    """(Re)start one host: stop, boot, deploy, start, test (a warm host of the monitor: resume, test)."""
    started, runs = time.monotonic(), ctx.runs_of(name, env)
    report = runs.start_worker(name)
    _summary(f"environment {runs.env.name}: worker {name}", report, started, json_)


@booted_task(help={**ENV_HELP, **JSON_HELP})
def env_stop(ctx: Booted, env: str | None = None, json_: bool = False) -> None:
    """Stop every host of the environment, remove its network."""
    from booted.monitor import process

    lab = ctx.lab(env)
    if process.stop(ctx, lab.env.name):  # first: it would heal what this stops
        err(f"stopped the monitor of {lab.env.name}")
    results = lab.stop_all()
    finish(f"environment {lab.env.name}: stopped {len(results)} host(s)", results, json_)


@booted_task(help={**ENV_HELP, **JSON_HELP, "probe": "auto (default: a netns host by its namespace's sockets, a VM "
                                                      "by its SSH banner) or ssh (every host by its SSH banner)"})
def env_status(ctx: Booted, env: str | None = None, json_: bool = False, probe: str = "auto") -> None:
    """Desired (environments.py) vs actual state of each host."""
    lab = ctx.lab(env)
    rows = ctx.status(lab.env.name, probe)
    for line in ctx.gateways_down():  # on stderr: --json's output stays the list of hosts
        err(f"WARNING: {line}")
    if json_:  # "host" stays beside "name" for the scripts written before every task said "name" (deprecated)
        emit_json([{"name": r["host"], **r} for r in rows])
        return
    nets = lab.env.networks
    print(f"environment {lab.env.name} ({lab.env.provider}, "
          + (", ".join(f"{n.name} {n.cidr}" for n in nets) if len(nets) > 1 else str(lab.env.network)) + ")")
    print(table(["host", "desired", "ip", "running", "reachable", "want", "deployed", "state"],
                [(r["host"], r["desired"], r["ip"], "yes" if r["running"] else "no",
                  {True: "yes", False: "no", None: "-"}[r["reachable"]], r["want"], r["deployed"], r["state"])
                 for r in rows]))


def timeline_table(starts: list[Timeline]) -> str:
    """env_timeline's table: a row per host, the seconds of each phase, the total and the guest's clock."""
    from booted.state.timelines import NO_KERNEL, PHASES, phases, total

    def clock(t: Timeline) -> str:
        return {"machine": "machine's", "": "-"}.get(t.clock, f"{t.offset or 0.0:+.2f}s")

    rows = [(t.host, *(p.why if p.seconds is None else f"{p.seconds:.2f}" for p in phases(t)), f"{total(t):.2f}",
             clock(t)) for t in starts]
    notes = [f"{NO_KERNEL}: a netns host runs on the machine's kernel: it has no firmware or kernel phase"
             if any(NO_KERNEL in r for r in rows) else "",
             "clock: the guest's wall clock against the controller's at the phone-home (its moments are placed "
             "by the boot-log line)" if any(t.clock == "guest" for t in starts) else "",
             *(f"{t.host}: {t.note}" for t in starts if t.note)]
    return "\n".join([table(["host", *(name for name, _, _ in PHASES), "total", "clock"], rows), *filter(None, notes)])


@booted_task(help={**ENV_HELP, "svg": "also draw the last start as a waterfall picture (SVG) into this file",
                   **JSON_HELP})
def env_timeline(ctx: Booted, env: str | None = None, svg: str | None = None, json_: bool = False) -> None:
    """Where the time of the last start went: each host's phases, seconds each (--svg FILE: a waterfall)."""
    from booted.report_svg import waterfall
    from booted.state.timelines import as_json, phases, total

    lab = ctx.lab(env)
    starts = lab.last_start()
    if not starts:
        raise StateError(f"no start of environment {lab.env.name} recorded yet (fab env_start_all starts it)")
    title = f"{lab.env.name}: start at {when(starts[0].start)}, {len(starts)} host(s), {max(map(total, starts)):.2f} s"
    if svg:
        Path(svg).write_text(waterfall(title, [(t.host, phases(t)) for t in starts]))
        err(f"wrote {svg}")
    if json_:
        emit_json([as_json(t) for t in starts])
        return
    print(f"environment {title}")
    print(timeline_table(starts))


TASKS = [env_start_all, env_start_min, env_start_worker, env_stop, env_status, env_timeline]
