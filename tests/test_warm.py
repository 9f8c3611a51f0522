"""The monitor's warm pool without root or hosts: the `warm` key's checks, the decisions (which warm host is
taken, when the pool refills, never a host a user started, warm hosts and the host being filled counted
outside the serving ones), and passes of the real daemon on the fake lab (tests/fakes.py fakes the provider
and SSH at their process boundaries; a paused fake host does not answer, as a frozen one; the database, the
boot log and the lab lock files are real; the refill runs in its own thread, as in the daemon)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from booted.config import Settings
from booted.context import Booted
from booted.environments import Environment, load_environments
from booted.errors import ConfigError
from booted.monitor.daemon import Monitor
from booted.monitor.reconcile import Observed, decide
from booted.providers.lab import Lab
from booted.state.warm import warm_hosts
from tests.conftest import REPO
from tests.fakes import FakeFleet, FakeProvider, World

ENV = """ENVIRONMENTS = {
    "lab": {
        "provider": "netns", "network": "10.213.185.0/24",
        "hosts": {"lb01": {"role": "lb", "service": "lb", "version": "1.0"},
                  "web[01:04]": {"role": "worker", "service": "hello", "version": "1.0"}},
        "min": {"lb": 1, "worker": MIN},
        "warm": WARM,
        "monitor": {"failures": 2},
    },
}
"""


def env_of(tmp_path: Path, warm: str = "{'worker': 1}", minimum: str = "1") -> Environment:
    path = tmp_path / "environments.py"
    path.write_text(ENV.replace("WARM", warm).replace("MIN", minimum))
    return load_environments(path)["lab"]


def kinds(env: Environment, seen: Observed, wanted: dict[str, int]) -> list[tuple[str, str]]:
    return [(a.kind, a.host) for a in decide(env, seen, wanted) if hasattr(a, "kind")]


def test_warm_key_values(tmp_path: Path) -> None:
    assert env_of(tmp_path).monitor.warm == {"worker": 1}
    assert env_of(tmp_path, "{'worker': 3}").monitor.warm == {"worker": 3}  # 4 hosts, min 1


@pytest.mark.parametrize(("warm", "minimum", "words"), [
    ("{'worker': 4}", "1", "warm['worker'] = 4: a whole number from 0 to 3"),
    ("{'worker': 1}", "4", "warm['worker'] = 1: a whole number from 0 to 0"),
    ("{'worker': -1}", "1", "warm['worker'] = -1"),
    ("{'worker': 1.5}", "1", "warm['worker'] = 1.5"),
    ("{'db': 1}", "1", "warm: no host has role 'db'"),
    ("['worker']", "1", "'warm' must be a dict ROLE -> COUNT"),
])
def test_warm_mistakes_name_file_and_line(tmp_path: Path, warm: str, minimum: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        env_of(tmp_path, warm, minimum)
    assert str(info.value).startswith(f"{tmp_path / 'environments.py'}:7:"), str(info.value)
    assert words in str(info.value)


def test_the_pool_fills_from_hosts_not_running_never_a_users(tmp_path: Path) -> None:
    env = env_of(tmp_path, "{'worker': 2}")
    # web02 was started by a user (runs, not warm): never paused; web03 was stopped by a user: never booted
    seen = Observed(frozenset({"lb01", "web01", "web02"}), held=frozenset({"web03"}))
    assert kinds(env, seen, {"lb": 1, "worker": 2}) == [("warm", "web04")]
    seen = Observed(frozenset({"lb01", "web01", "web04"}), warm=frozenset({"web04"}))
    assert kinds(env, seen, {"lb": 1, "worker": 1}) == [("warm", "web02")]  # 1 warm of 2: the first cold one
    seen = Observed(frozenset({"lb01", "web01", "web02", "web04"}), warm=frozenset({"web02", "web04"}))
    assert kinds(env, seen, {"lb": 1, "worker": 1}) == []  # full


def test_warm_hosts_are_not_serving_ones(tmp_path: Path) -> None:
    env = env_of(tmp_path)
    seen = Observed(frozenset({"lb01", "web01", "web02"}), warm=frozenset({"web02"}))
    assert kinds(env, seen, {"lb": 1, "worker": 1}) == []  # one serves, one warm: nothing to stop
    seen = Observed(frozenset({"lb01", "web02"}), warm=frozenset({"web02"}))
    # web01 died: the warm host is taken (no boot), and the pool refills at once (in the background)
    assert kinds(env, seen, {"lb": 1, "worker": 1}) == [("take", "web02"), ("warm", "web01")]


def test_the_pool_refills_after_a_boot_for_the_role_not_beside_it(tmp_path: Path) -> None:
    env = env_of(tmp_path, minimum="2")
    # two wanted, one serving, no warm host: a cold start; the refill waits for a pass that boots nothing
    seen = Observed(frozenset({"lb01", "web01"}))
    assert kinds(env, seen, {"lb": 1, "worker": 2}) == [("start", "web02")]
    # a failing host replaced by the warm one is stopped: the refill is the next pass
    seen = Observed(frozenset({"lb01", "web01", "web02", "web03"}), {"web01": 2}, warm=frozenset({"web03"}))
    assert kinds(env, seen, {"lb": 1, "worker": 2}) == [("take", "web03"), ("stop", "web01")]


def test_a_host_being_filled_counts_as_warm_and_is_never_taken_started_or_healed(tmp_path: Path) -> None:
    env = env_of(tmp_path, "{'worker': 2}")
    # web03 boots for the pool in the background: one more refill (web04), web03 is no member to stop
    seen = Observed(frozenset({"lb01", "web01", "web03"}), filling=frozenset({"web03"}))
    assert kinds(env, seen, {"lb": 1, "worker": 1}) == [("warm", "web02")]
    seen = Observed(frozenset({"lb01", "web01", "web02", "web03"}), {"web03": 5}, warm=frozenset({"web02"}),
                    filling=frozenset({"web03"}))
    assert kinds(env, seen, {"lb": 1, "worker": 1}) == []  # failing checks while it boots: not healed
    # web01 died while web03 is filled (not running yet, recorded warm as it ends): a cold start of a host
    # that is neither (the daemon runs it after the refill), never web03 taken or started
    seen = Observed(frozenset({"lb01"}), warm=frozenset({"web03"}), filling=frozenset({"web03"}))
    assert kinds(env, seen, {"lb": 1, "worker": 1}) == [("start", "web01")]


def test_a_scale_up_takes_warm_hosts_first_then_boots(tmp_path: Path) -> None:
    env = env_of(tmp_path)
    seen = Observed(frozenset({"lb01", "web01", "web03"}), warm=frozenset({"web03"}))
    assert kinds(env, seen, {"lb": 1, "worker": 3}) == [("take", "web03"), ("start", "web02")]


def test_a_failing_host_is_replaced_by_a_warm_one(tmp_path: Path) -> None:
    env = env_of(tmp_path)
    seen = Observed(frozenset({"lb01", "web01", "web02"}), {"web01": 2}, warm=frozenset({"web02"}))
    assert kinds(env, seen, {"lb": 1, "worker": 1}) == [("take", "web02"), ("stop", "web01")]
    seen = Observed(frozenset({"lb01", "web01"}), {"web01": 2})  # no warm host: healed in place
    assert kinds(env, seen, {"lb": 1, "worker": 1}) == [("heal", "web01")]


def test_extra_and_drifted_warm_hosts_are_stopped(tmp_path: Path) -> None:
    env = env_of(tmp_path, "{'worker': 1}")
    seen = Observed(frozenset({"lb01", "web01", "web02", "web03"}), warm=frozenset({"web02", "web03"}))
    assert kinds(env, seen, {"lb": 1, "worker": 1}) == [("stop", "web03")]
    seen = Observed(frozenset({"lb01", "web01", "web02"}), deployed={"web02": "0.9"}, warm=frozenset({"web02"}))
    assert kinds(env, seen, {"lb": 1, "worker": 1}) == [("stop", "web02"), ("warm", "web03")]


class PausingProvider(FakeProvider):
    """The fake provider with pause/resume: a paused host answers nothing (as a frozen one)."""

    can_pause = True

    def pause(self, lab: Lab, names: list[str]) -> dict[str, str]:
        self.world.calls.append(f"pause {','.join(names)}")
        self.world.dead.update(names)
        return {}

    def resume(self, lab: Lab, names: list[str]) -> dict[str, str]:
        self.world.calls.append(f"resume {','.join(names)}")
        self.world.dead.difference_update(names)
        return {}


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


def fake_ctx(settings_env: dict[str, str], tmp_path: Path, world: World, kind: type = PausingProvider) -> Booted:
    Path(settings_env["BOOTED_ENVIRONMENTS"]).write_text(ENV.replace("WARM", "{'worker': 1}").replace("MIN", "1"))
    settings = Settings.from_env({**settings_env, "BOOTED_SERVICES": str(REPO / "service"),
                                  "BOOTED_BOOT_TIMEOUT": "2"})
    return Booted(settings, say=lambda line: None, providers={"netns": lambda s: kind(s, world)},
                  fleets=lambda ctx: FakeFleet(world, tmp_path))


def test_the_daemon_fills_takes_and_refills_on_the_fake_lab(settings_env: dict[str, str], tmp_path: Path,
                                                            world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = fake_ctx(settings_env, tmp_path, world)
    assert ctx.runs().start_min().failed() == []  # the user's start: lb01, web01
    monitor = Monitor(ctx)
    monkeypatch.setattr(monitor, "watch_gateways", lambda: None)  # no nginx/apt proxy in the fake lab
    assert monitor.pass_once() == []  # the refill runs in the background: nothing done in the pass itself
    assert monitor.refill.filling() in ("web02", None)
    monitor.refill.join()
    assert warm_hosts(ctx.inventory, "lab", world.running) == {"web02"} and "pause web02" in world.calls
    assert world.hosts["lb01"].backends.count(":") == 1  # only web01 in the lb, the warm host is not
    assert [r["state"] for r in ctx.status() if r["host"] == "web02"] == ["warm (paused by the monitor)"]
    assert [(a["kind"], a["host"], a["status"]) for a in ctx.inventory.actions("lab")] == [("warm", "web02", "done")]

    world.running.pop("web01")  # web01 dies (a kill -9)
    world.hosts["web01"].running = False
    # the next pass begins by replacing it with the warm host (before any health check), then refills the pool
    # from a host not running, in the background
    done = monitor.pass_once()
    assert [(a.kind, a.host, ok) for a, ok, _ in done] == [("take", "web02", True)], done
    monitor.refill.join()
    assert world.calls.index("resume web02") < world.calls.index("pause web01")
    ip = {i.name: i.ip for i in ctx.inventory.images("lab")}
    assert ip["web02"] in world.hosts["lb01"].backends and ip["web01"] not in world.hosts["lb01"].backends
    assert warm_hosts(ctx.inventory, "lab", world.running) == {"web01"}
    assert monitor.pass_once() == [] and monitor.refill.filling() is None
    ctx.close()


class SlowPauseProvider(PausingProvider):
    """A provider whose pause of `slow` hosts waits until the test lets it go: a refill under way, its host
    booted, deployed and tested (running, answering) but not warm yet. A test subclasses it with its own
    `slow`, `entered` and `go`."""

    slow: frozenset[str]
    entered: threading.Event
    go: threading.Event

    def pause(self, lab: Lab, names: list[str]) -> dict[str, str]:
        if set(names) & self.slow:
            self.entered.set()
            assert self.go.wait(60), "the test never let the pause go"
        return super().pause(lab, names)


def test_a_refill_blocks_no_pass_and_cold_work_waits_for_it(settings_env: dict[str, str], tmp_path: Path,
                                                            world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    class Slow(SlowPauseProvider):
        slow = frozenset({"web01"})
        entered, go = threading.Event(), threading.Event()
    ctx = fake_ctx(settings_env, tmp_path, world, Slow)
    assert ctx.runs().start_min().failed() == []
    monitor = Monitor(ctx)
    monkeypatch.setattr(monitor, "watch_gateways", lambda: None)
    monitor.pass_once()
    monitor.refill.join()  # web02 warm
    world.running.pop("web01")
    world.hosts["web01"].running = False
    done = monitor.pass_once()  # web02 taken; the refill of web01 begins: booted, then it hangs in its pause
    assert [(a.kind, a.host, ok) for a, ok, _ in done] == [("take", "web02", True)]
    assert Slow.entered.wait(60) and monitor.refill.filling() == "web01" and "web01" in world.running
    assert monitor.pass_once() == [] and monitor.last_wanted["worker"] == 1  # web01 is no serving member

    # web02 dies too while the refill holds the lab lock: the pass still runs (web02 leaves the lb; web01, up
    # and answering, is neither counted as serving nor put in the lb), and the cold start it decides waits for
    # a later pass instead of for the lock
    world.running.pop("web02")
    world.hosts["web02"].running = False
    starts = world.calls.count("start")
    assert monitor.pass_once() == [] and monitor.refill.filling() == "web01"
    assert world.calls.count("start") == starts and world.hosts["lb01"].backends == ""
    assert ctx.locks.lab_busy("lab") is not None  # held by the refill all along

    Slow.go.set()
    monitor.refill.join()
    assert warm_hosts(ctx.inventory, "lab", world.running) == {"web01"}
    done = monitor.pass_once()  # the refilled host is taken: no cold boot
    assert [(a.kind, a.host, ok) for a, ok, _ in done] == [("take", "web01", True)]
    monitor.refill.join()  # and the pool refills again
    assert world.calls.count("start") == starts + 1  # that refill's boot; no cold start
    assert warm_hosts(ctx.inventory, "lab", world.running) == {"web02"}
    ctx.close()


def test_a_users_start_worker_of_a_warm_host_takes_it(settings_env: dict[str, str], tmp_path: Path,
                                                      world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = fake_ctx(settings_env, tmp_path, world)
    assert ctx.runs().start_min().failed() == []
    monitor = Monitor(ctx)
    monkeypatch.setattr(monitor, "watch_gateways", lambda: None)
    monitor.pass_once()
    monitor.refill.join()
    pid = world.running["web02"]
    report = ctx.runs().start_worker("web02")
    assert report.failed() == []
    assert report.steps["boot"]["web02"].detail.startswith("resumed") and world.running["web02"] == pid
    assert warm_hosts(ctx.inventory, "lab", world.running) == set()
    assert monitor.pass_once() == []  # now a host the user started: it serves, and the pool refills elsewhere
    assert monitor.refill.filling() in ("web03", None)
    monitor.refill.join()
    assert warm_hosts(ctx.inventory, "lab", world.running) == {"web03"}
    ctx.close()


def test_a_provider_that_cannot_pause_boots_no_warm_host(settings_env: dict[str, str], tmp_path: Path,
                                                         world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = fake_ctx(settings_env, tmp_path, world, FakeProvider)
    assert ctx.runs().start_min().failed() == []
    monitor = Monitor(ctx)
    monkeypatch.setattr(monitor, "watch_gateways", lambda: None)
    starts = world.calls.count("start")
    done = monitor.pass_once()
    assert [(a.kind, a.host, ok) for a, ok, _ in done] == [("warm", "web02", False)]
    assert "cannot pause hosts" in done[0][2] and world.calls.count("start") == starts and "web02" not in world.running
    ctx.close()
