"""One chaos run: load through the lb, failures on the schedule, heals watched in the monitor's passes, and
the report. The lab is reached through a small port (`ChaosLab`: the real one is booted/chaos/lab.py, tests
pass a fake at that process boundary). Bounded: the load stops at `duration`, heals are awaited for at most
`heal_wait` more seconds; Ctrl-C ends it early and what it impaired is still cleared."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from booted.chaos import schedule
from booted.chaos.load import Load, Sample
from booted.chaos.report import Failure, Report
from booted.chaos.spec import LinkFault, Plan
from booted.errors import BootedError

POLL = 0.2  # seconds between looks at the schedule and the monitor's last pass
LINK_WAIT = 660.0  # seconds the end waits for a link step (the lab's lock waits up to 600 s for a start)


@dataclass(frozen=True)
class Pass:
    """What one of the monitor's passes saw: when it ended, each role's healthy hosts and wanted count."""

    at: float
    healthy: dict[str, list[str]]
    wanted: dict[str, int]


class ChaosLab(Protocol):
    """What a run needs from a lab with its monitor running."""

    env: str
    lb: str  # address:port of the first lb, for the report

    def roles(self) -> Pass | None:
        """The monitor's last pass, or None before its first."""

    def role_of(self, host: str) -> str: ...

    def kill(self, host: str, what: str) -> str:
        """kill -9 of the host (its processes) or of its service's process; what was killed (BootedError)."""

    def impair(self, fault: LinkFault) -> None: ...

    def clear(self, host: str) -> None: ...

    def record(self, host: str, reason: str) -> int:
        """An event on the monitor's page (kind "chaos"), open until `finish`."""

    def finish(self, record: int, ok: bool, detail: str) -> None: ...

    def monitor_actions(self, since: float) -> list[tuple[float, str, str]]:
        """The monitor's actions since then as timeline entries (when, host, what)."""

    def acted(self, host: str, since: float) -> bool:
        """Whether the monitor finished an action on the host that it began since then (a heal, a start)."""


@dataclass
class Open:
    """A failure not yet healed: its event and what the monitor's passes showed since."""

    failure: Failure
    record: int
    seen_down: bool = False
    passes: int = 0


class Experiment:
    def __init__(self, lab: ChaosLab, plan: Plan, send: Callable[[], str], heal_wait: float = 60.0,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.lab, self.plan, self.send, self.heal_wait = lab, plan, send, heal_wait
        self.clock, self.sleep = clock, sleep
        self.failures: list[Failure] = []
        self.open: list[Open] = []
        self.timeline: list[tuple[float, str, str]] = []
        self.baseline: dict[str, int] = {}
        self.last_pass = 0.0
        self.turn = 0
        self.impaired: Open | None = None  # the link, impaired and not yet cleared
        self.links = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaos-link")
        self.pending: list[tuple[schedule.Step, concurrent.futures.Future[float]]] = []
        self.link_steps: list[schedule.Step] = []  # what was asked of the link: impair, then clear, once each

    def run(self) -> Report:
        first = self.lab.roles()
        self.baseline = {r: len(h) for r, h in (first.healthy if first else {}).items()}
        self.last_pass = first.at if first else 0.0
        start = self.clock()
        load = Load(self.send, self.plan.rate, self.plan.duration, clock=self.clock).start()
        todo, interrupted = schedule.steps(self.plan), False
        samples: list[Sample] = []
        stopped = 0.0
        try:
            while (elapsed := self.clock() - start) < self.plan.duration:
                now, todo = schedule.due(todo, elapsed)
                for step in now:
                    self.act(step.step)
                self.reap()
                self.watch()
                self.sleep(min(POLL, max(0.0, self.plan.duration - elapsed)))
            samples, stopped = load.stop(), self.clock()
            self.act(schedule.Step.CLEAR)
            deadline = self.clock() + self.heal_wait
            while (self.open or self.pending) and self.clock() < deadline:
                self.reap()
                self.watch()
                self.sleep(POLL)
        except KeyboardInterrupt:
            interrupted, stopped = True, stopped or self.clock()
        finally:
            samples = samples or load.stop(wait=2.0)
            self.cleanup()
        end = min(start + self.plan.duration, stopped or self.clock())
        for entry in self.lab.monitor_actions(start):
            self.timeline.append(entry)
        return Report(self.lab.env, self.lab.lb, start, end, self.plan.rate, samples, self.failures,
                      self.timeline, self.plan.slo, interrupted)

    def act(self, step: schedule.Step) -> None:
        """Do a step: a kill now; a link change in the link thread (it waits for the lab's lock, which the
        monitor holds while it starts a host: the schedule's kills must not wait behind it)."""
        fault = self.plan.impair
        if step is schedule.Step.KILL and self.plan.kill is not None:
            self.kill(self.clock())
        elif step is schedule.Step.IMPAIR and fault is not None and not self.link_steps:
            self.link_steps.append(step)
            self.pending.append((step, self.links.submit(self.timed, self.lab.impair, fault)))
        elif step is schedule.Step.CLEAR and fault is not None and self.link_steps == [schedule.Step.IMPAIR]:
            self.link_steps.append(step)
            self.pending.append((step, self.links.submit(self.timed, self.lab.clear, fault.host)))

    def timed(self, fn: Callable[..., None], *args: object) -> float:
        fn(*args)
        return self.clock()

    def reap(self, wait: float = 0.0) -> None:
        """Link steps that ended (all of them, waiting up to `wait` s for each): recorded in order."""
        fault = self.plan.impair
        while self.pending and fault is not None:
            step, job = self.pending[0]
            try:
                done = job.result(timeout=wait) if wait else (job.result() if job.done() else None)
            except concurrent.futures.TimeoutError:
                done = None
            except (BootedError, OSError) as exc:
                self.pending.pop(0)
                self.timeline.append((self.clock(), fault.host, f"{step.value} of the link failed: {exc}"))
                if self.impaired is not None and step is schedule.Step.CLEAR:
                    self.impaired.failure.detail = f"clearing failed: {exc}"
                    self.lab.finish(self.impaired.record, False, self.impaired.failure.detail)
                    self.impaired = None
                continue
            if done is None:
                return
            self.pending.pop(0)
            if step is schedule.Step.IMPAIR:
                failure = Failure(fault.label(), fault.host, self.lab.role_of(fault.host), done)
                self.failures.append(failure)
                self.impaired = Open(failure, self.lab.record(fault.host, f"chaos: {fault.label()} for "
                                                                          f"{fault.seconds:g}s"))
                self.timeline.append((done, fault.host, f"link impaired: {fault.label()}"))
            else:
                self.timeline.append((done, fault.host, "link cleared"))
                if self.impaired is not None:
                    self.impaired.failure.healed_at = done
                    self.lab.finish(self.impaired.record, True, f"cleared after {done - self.impaired.failure.at:.1f}s")
                    self.impaired = None

    def kill(self, now: float) -> None:
        assert self.plan.kill is not None
        role, what = self.plan.kill.role, self.plan.kill.what
        seen = self.lab.roles()
        serving = seen.healthy.get(role, []) if seen else []
        host, why = schedule.victim(serving, {o.failure.host for o in self.open}, self.turn)
        if host is None:
            self.timeline.append((now, role, f"kill {why}"))
            return
        self.turn += 1
        try:
            detail = self.lab.kill(host, what)
        except BootedError as exc:
            self.timeline.append((now, host, f"kill -9 {what} failed: {exc}"))
            return
        failure = Failure(f"kill -9 {what}", host, role, now, detail=detail)
        self.failures.append(failure)
        self.open.append(Open(failure, self.lab.record(host, f"chaos: kill -9 of {host}'s {what} ({detail})")))
        self.timeline.append((now, host, f"kill -9 {what}: {detail}"))

    def watch(self) -> None:
        """A new monitor pass: a killed host seen down, a role back to its healthy count (= healed)."""
        seen = self.lab.roles()
        if seen is None or seen.at <= self.last_pass:
            return
        at = self.last_pass = seen.at
        for item in list(self.open):
            f = item.failure
            if at <= f.at:
                continue
            healthy = seen.healthy.get(f.role, [])
            item.passes += 1
            if f.host not in healthy and not item.seen_down:
                item.seen_down = True
                self.timeline.append((at, f.host, "seen down by the monitor"))
            if self.whole(item, healthy, seen.wanted.get(f.role)):
                f.healed_at = at
                self.open.remove(item)
                self.lab.finish(item.record, True, f"healed in {f.heal_s:.1f}s: {f.role} back to {len(healthy)} "
                                                   "healthy")
                self.timeline.append((at, f.host, f"{f.role} whole again ({len(healthy)} healthy)"))

    def whole(self, item: Open, healthy: list[str], wanted: int | None) -> bool:
        """Whether the role is back to its healthy count (the run's start's, or fewer when the monitor wants
        fewer now: a role scaled by load), short of the failures injected after this one (the host serves
        again; or another replaced it). A pass that began before the kill may still show the host: without a
        pass that saw it down, a killed host needs the monitor's action on it, a killed service a second pass."""
        f = item.failure
        if f.what.endswith("host"):  # a killed host: a pass saw it down, or the monitor started it again
            if not (item.seen_down or self.lab.acted(f.host, f.at)):
                return False
        elif not (item.seen_down or item.passes >= 2):  # a service: its supervisor restarts it within a second
            return False
        later = sum(1 for o in self.open if o.failure.role == f.role and o.failure.at > f.at)
        count = min(self.baseline.get(f.role, 1), self.baseline.get(f.role, 1) if wanted is None else wanted)
        return len(healthy) >= (count - later if f.host in healthy else count)

    def cleanup(self) -> None:
        """Ctrl-C or the end: the link cleared, every open event closed (a failure not healed says so)."""
        self.act(schedule.Step.CLEAR)
        self.reap(wait=LINK_WAIT)
        self.links.shutdown(wait=False)
        for item in self.open:
            item.failure.detail = (item.failure.detail + "; " if item.failure.detail else "") + \
                "not healed within the run"
            self.lab.finish(item.record, False, "not healed within the run")
        self.open = []
