"""Chaos runs without a lab: the flags, the schedule (never a role's last serving host; when each step is due),
the report (percentiles, phases, the SLO's verdict), the load generator's bounds, and a whole run against a
fake lab (a fake at the process boundary: no hosts are killed, the "monitor" is a counter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from booted.chaos import schedule
from booted.chaos.load import Load, Sample
from booted.chaos.report import Failure, Report, percentile, phases
from booted.chaos.run import Experiment, Pass
from booted.chaos.spec import Kill, LinkFault, Plan, Slo, parse_impair, parse_kill, plan
from booted.environments.impairment import Impairment
from booted.errors import ProviderError
from tests.test_cli import fab

# the flags -------------------------------------------------------------------------------------------


def test_kill_and_impair_flags() -> None:
    assert parse_kill("role=worker") == Kill("worker", "host")
    assert parse_kill("role=db,what=service") == Kill("db", "service")
    assert parse_kill("none") is None
    fault = parse_impair("host=web01,delay=100ms,for=10,at=5s")
    assert fault == LinkFault("web01", Impairment(delay_ms=100.0), 10.0, 5.0)
    assert fault.label() == "impair delay=100ms"


@pytest.mark.parametrize("text, said", [
    ("worker", "key=value"), ("role=worker,what=disk", "what='disk'"), ("role=Web;rm", "not a role name"),
    ("what=host", "say role=ROLE"), ("role=a,role=b", "given twice")])
def test_bad_kill_flags_say_what_is_allowed(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        parse_kill(text)


@pytest.mark.parametrize("text, said", [
    ("host=web01,delay=100ms", "for=SECONDS"), ("host=web01,for=10", "say what to impair"),
    ("host=web01,delay=fast,for=10", "not a duration"), ("host=web01,delay=1ms,for=soon", "not a time"),
    ("host=../x,delay=1ms,for=1", "not a host name"), ("host=web01,delay=1ms,for=1,color=red", "unknown: color")])
def test_bad_impair_flags_say_what_is_allowed(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        parse_impair(text)


def test_plan_bounds() -> None:
    ok = plan(60, 15, "role=worker", None, 20, 0, None)
    assert ok.slo == Slo(0, None) and ok.kill == Kill("worker")
    for args, said in (((0, 15, "role=worker", None, 20, None, None), "--duration"),
                       ((60, 0.5, "role=worker", None, 20, None, None), "--kill-every"),
                       ((60, 15, "role=worker", None, 0, None, None), "--load"),
                       ((60, 15, "role=worker", None, 5000, None, None), "--load"),
                       ((60, 15, "role=worker", None, 20, -1, None), "--max-failed"),
                       ((60, 15, "role=worker", "host=a,delay=1ms,for=1,at=90", 20, None, None), "after the run")):
        with pytest.raises(ValueError, match=said):
            plan(*args)  # type: ignore[arg-type]


# the schedule ------------------------------------------------------------------------------------------

def test_kills_every_interval_never_at_the_end_and_the_link_cleared_in_time() -> None:
    fault = LinkFault("web01", Impairment(delay_ms=100.0), 50.0)
    steps = schedule.steps(Plan(60, 15, Kill("worker"), fault, 20, Slo()))
    assert [(d.at, d.step.value) for d in steps] == [  # impaired halfway between two kills, cleared at the end
        (15, "kill"), (22.5, "impair"), (30, "kill"), (45, "kill"), (60, "clear")]
    alone = schedule.steps(Plan(60, 0, None, LinkFault("web01", Impairment(loss_pct=1.0), 10.0, 5.0), 20, Slo()))
    assert [(d.at, d.step.value) for d in alone] == [(5, "impair"), (15, "clear")]
    assert schedule.default_at(Plan(60, 0, None, fault, 20, Slo())) == 20
    assert schedule.steps(Plan(60, 0, Kill("worker"), None, 20, Slo())) == []
    assert schedule.steps(Plan(10, 20, Kill("worker"), None, 20, Slo())) == []
    now, rest = schedule.due(steps, 30)
    assert [d.at for d in now] == [15, 22.5, 30] and [d.at for d in rest] == [45, 60]


def test_the_victim_is_never_a_roles_last_serving_host() -> None:
    assert schedule.victim(["web01", "web02", "web03"], set(), 0) == ("web01", "")
    assert schedule.victim(["web01", "web02", "web03"], set(), 4) == ("web02", "")  # taking turns
    assert schedule.victim(["web01", "web02", "web03"], {"web01"}, 0) == ("web02", "")  # not one already down
    host, why = schedule.victim(["web01", "web02"], {"web01"}, 0)
    assert host is None and "(web02); never the role's last serving host" in why
    assert schedule.victim([], set(), 0)[0] is None
    assert schedule.victim(["lb01"], set(), 0)[0] is None


# the report --------------------------------------------------------------------------------------------

def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None


def sample(at: float, ms: float = 10.0, ok: bool = True) -> Sample:
    return Sample(at, ms, ok, "" if ok else "ConnectionResetError: reset")


def test_phases_before_during_and_after_each_failure() -> None:
    a = Failure("kill -9 host", "web01", "worker", 10.0, 20.0)
    b = Failure("kill -9 host", "web02", "worker", 15.0, 30.0)
    samples = [sample(1), sample(12, ok=False), sample(16), sample(17), sample(25), sample(35), sample(39.9)]
    got = [(p.name, p.start, p.end, len(p.samples), p.failed) for p in phases(samples, [a, b], 0.0, 40.0)]
    assert got == [("before", 0.0, 10.0, 1, 0),
                   ("during kill -9 host web01", 10.0, 15.0, 1, 1),
                   ("during kill -9 host web01, kill -9 host web02", 15.0, 20.0, 2, 0),
                   ("during kill -9 host web02", 20.0, 30.0, 1, 0),
                   ("after kill -9 host web02", 30.0, 40.0, 2, 0)]
    never = Failure("kill -9 host", "web03", "worker", 5.0)  # not healed: "during" to the end
    assert [p.name for p in phases([sample(1)], [never], 0.0, 40.0)] == ["before", "during kill -9 host web03"]


def test_the_report_says_which_slo_is_not_met() -> None:
    samples = [sample(float(i), ms=float(i)) for i in range(1, 101)] + [sample(50.5, ok=False)]
    failure = Failure("kill -9 host", "web01", "worker", 40.0, 52.5, "pid 7")
    report = Report("mon", "10.213.250.2:8080", 0.0, 101.0, 20.0, samples, [failure],
                    [(40.0, "web01", "kill -9 host: pid 7")], Slo(max_failed=0, max_p99_ms=50.0))
    assert report.latency() == (50.0, 99.0)
    assert report.broken() == ["--max-failed 0: 1 requests failed", "--max-p99 50 ms: p99 was 99.0 ms"]
    data = report.as_json()
    assert data["sent"] == 101 and data["failed"] == 1 and data["errors"] == {"ConnectionResetError: reset": 1}
    assert data["failures"][0]["heal_s"] == 12.5 and data["slo"]["met"] is False
    assert [(p["name"], p["sent"], p["failed"]) for p in data["phases"]] == [
        ("before", 39, 0), ("during kill -9 host web01", 14, 1), ("after kill -9 host web01", 48, 0)]
    text = report.text()
    assert "SLO NOT MET: --max-failed 0: 1 requests failed" in text and "12.5" in text
    met = Report("mon", "x:1", 0.0, 1.0, 1.0, [sample(0.5)], [], [], Slo(max_failed=0))
    assert met.broken() == [] and met.text().endswith("SLO met")


# the load generator ----------------------------------------------------------------------------------

def test_the_load_is_bounded_in_count_and_records_each_request() -> None:
    answers = iter(["", "HTTP 503"] * 100)
    load = Load(lambda: next(answers), rate=200.0, limit=0.1).start()
    for thread in load.threads:
        thread.join(10)
    got = load.stop()
    assert len(got) == load.total == 20  # rate x limit, then no more
    assert sum(1 for s in got if not s.ok) == 10 and {s.error for s in got if not s.ok} == {"HTTP 503"}
    assert all(s.ms >= 0 for s in got) and got == sorted(got, key=lambda s: s.at)


# a whole run on a fake lab ---------------------------------------------------------------------------

class FakeLab:
    """The process boundary faked: kills remove a host from the healthy list, the "monitor" brings it back
    after `heal_after` passes (None: never); passes happen when the run looks."""

    env, lb = "fake", "10.213.250.2:8080"

    def __init__(self, workers: list[str], heal_after: int | None) -> None:
        self.now = 1000.0  # the run's clock: each sleep of the run moves it 0.25 s on
        self.healthy = {"worker": list(workers), "lb": ["lb01"]}
        self.heal_after, self.down, self.events = heal_after, {}, {}  # type: ignore[var-annotated]
        self.killed: list[str] = []
        self.revived: list[str] = []  # what the "monitor" started again
        self.links: list[str] = []
        self.fewest = len(workers)
        self.wanted: dict[str, int] = {}  # what the "monitor" wants per role (none: the run's start's count)

    def roles(self) -> Pass:
        for host in list(self.down):
            self.down[host] += 1
            if self.heal_after is not None and self.down[host] > self.heal_after:
                del self.down[host]
                self.healthy["worker"].append(host)
                self.revived.append(host)
        return Pass(self.now, {r: sorted(h) for r, h in self.healthy.items()}, self.wanted)

    def role_of(self, host: str) -> str:
        return "worker"

    def kill(self, host: str, what: str) -> str:
        self.healthy["worker"].remove(host)
        self.fewest = min(self.fewest, len(self.healthy["worker"]))
        self.down[host] = 0
        self.killed.append(host)
        return f"{what} pid 1"

    def impair(self, fault: LinkFault) -> None:
        self.links.append(f"impair {fault.host}")

    def clear(self, host: str) -> None:
        if host == "broken":
            raise ProviderError("no such link")
        self.links.append(f"clear {host}")

    def record(self, host: str, reason: str) -> int:
        self.events[len(self.events) + 1] = [host, reason, "in progress"]
        return len(self.events)

    def finish(self, record: int, ok: bool, detail: str) -> None:
        self.events[record][2] = ("done: " if ok else "failed: ") + detail

    def acted(self, host: str, since: float) -> bool:
        return host in self.revived

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += 0.25

    def monitor_actions(self, since: float) -> list[tuple[float, str, str]]:
        return [(since + 0.01, "web01", "monitor start: worker: 2 running, 3 wanted")]


def test_a_run_kills_on_schedule_times_heals_and_clears_its_link() -> None:
    lab = FakeLab(["web01", "web02", "web03"], heal_after=2)
    fault = LinkFault("web02", Impairment(delay_ms=100.0), 0.5, 0.25)
    report = Experiment(lab, Plan(1.6, 0.5, Kill("worker"), fault, 50.0, Slo(max_failed=0)),  # type: ignore[arg-type]
                        lambda: "", heal_wait=5.0, clock=lab.clock, sleep=lab.sleep).run()
    assert lab.killed == ["web01", "web03", "web01"] and lab.fewest == 2  # at 0.5, 1.0, 1.5: never one down twice
    assert lab.links == ["impair web02", "clear web02"]
    assert all(f.heal_s is not None for f in report.failures) and len(report.failures) == 4
    assert all(status.startswith("done: ") for _, _, status in lab.events.values()), lab.events
    assert report.broken() == [] and len(report.samples) <= 80 and not report.interrupted  # rate x duration
    assert any("monitor start" in e for _, _, e in report.timeline)


def test_a_run_never_kills_the_last_serving_host_and_says_what_did_not_heal() -> None:
    lab = FakeLab(["web01", "web02"], heal_after=None)
    report = Experiment(lab, Plan(1.6, 0.5, Kill("worker"), None, 20.0, Slo()),  # type: ignore[arg-type]
                        lambda: "", heal_wait=0.5, clock=lab.clock, sleep=lab.sleep).run()
    assert lab.killed == ["web01"] and lab.fewest == 1
    assert [e for _, _, e in report.timeline if "skipped" in e] == [
        "kill skipped: 1 serving host(s) (web02); never the role's last serving host"] * 2
    assert report.failures[0].heal_s is None and "not healed within the run" in report.failures[0].detail
    assert list(lab.events.values()) == [["web01", "chaos: kill -9 of web01's host (host pid 1)",
                                          "failed: not healed within the run"]]


def test_a_role_the_monitor_shrank_is_whole_at_its_wanted_count() -> None:
    lab = FakeLab(["web01", "web02", "web03"], heal_after=None)
    lab.wanted = {"worker": 2}  # scaled by load: two are enough, the killed one is not started again
    report = Experiment(lab, Plan(1.2, 1.0, Kill("worker"), None, 20.0, Slo()),  # type: ignore[arg-type]
                        lambda: "", heal_wait=1.0, clock=lab.clock, sleep=lab.sleep).run()
    assert lab.killed == ["web01"] and report.failures[0].heal_s is not None


def test_user_mistakes_are_messages_with_exit_2(settings_env: dict[str, str]) -> None:
    Path(settings_env["BOOTED_ENVIRONMENTS"]).write_text(
        "ENVIRONMENTS = {'lab': {'provider': 'netns', 'network': '10.213.254.0/24', 'hosts': {"
        "'lb01': {'role': 'lb', 'service': 'lb', 'version': '1.0'}, "
        "'web01': {'role': 'worker', 'service': 'hello', 'version': '1.0'}}}}\n")
    for args, said in ((["--kill", "worker"], "--kill 'worker': write key=value pairs"),
                       (["--max-failed", "lots"], "--max-failed 'lots': a number"),
                       (["--impair", "host=web01,delay=1ms"], "for=SECONDS"),
                       (["--duration", "0"], "--duration 0: from 1 to 3600 seconds"),
                       ([], "the monitor of 'lab' is not running")):
        proc = fab(settings_env, "chaos", *args)
        assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
