"""The engine's orchestration without root, hosts or SSH: the lab handle's start (boot, discovery,
deliver), stop, status, and deploy's plan and operations, with the provider and the SSH fleet faked at
their process boundaries (tests/fakes.py). The boot log, state database, keys and scripts are real."""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from booted.config import Settings
from booted.context import Booted
from booted.errors import ConfigError
from booted.lab.status import status_rows
from booted.remote import deploy
from booted.state.inventory import Host
from tests.conftest import REPO
from tests.fakes import FakeFleet, FakeProvider, World, version_of

ENV = """ENVIRONMENTS = {{"lab": {{"provider": "netns", "network": "10.213.40.0/24", "hosts": {{
    "lb01": {{"role": "lb", "service": "lb", "version": "1.0"}},
    "web[01:03]": {{"role": "worker", "service": "{web}", "version": "1.0"}}}},
    "min": {{"lb": 1, "worker": 1}}}}}}
"""


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


def make_ctx(settings_env: dict[str, str], tmp_path: Path, world: World, web: str = "hello",
             **extra: str) -> Booted:
    Path(settings_env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(web=web))
    settings = Settings.from_env({**settings_env, "BOOTED_SERVICES": str(REPO / "service"),
                                  "BOOTED_BOOT_TIMEOUT": "2", **extra})
    return Booted(settings, say=lambda line: None, providers={"netns": lambda s: FakeProvider(s, world)},
                  fleets=lambda ctx: FakeFleet(world, tmp_path))


def ops(world: World, host: str) -> list[str]:
    return [op for h, op, _ in world.scripts if h == host]


def test_start_all_boots_discovers_and_delivers(settings_env: dict[str, str], tmp_path: Path, world: World) -> None:
    ctx = make_ctx(settings_env, tmp_path, world)
    report = ctx.runs().start_all()
    assert report.failed() == []
    assert set(report.steps) == {"boot", "deploy", "start", "test"}
    assert all(len(step) == 4 and all(r.ok for r in step.values()) for step in report.steps.values())
    assert world.calls.count("check") == 1  # the provider is checked once per run
    assert [h.name for h in ctx.inventory.hosts()] == ["lb01", "web01", "web02", "web03"]
    assert ctx.inventory.releases() == {(h, s): "1.0" for h, s in
                                        [("lb01", "lb"), ("web01", "hello"), ("web02", "hello"), ("web03", "hello")]}
    # every host served at boot: told by serve.sh in its identity (booted's deploy.sh, start=1), it named
    # the release in its boot-log line; booted only tested it: no deploy over SSH
    assert [(h, op) for h, op, _ in world.scripts if op != "serve"] == [("lb01", "stats")]  # lb: backends up?
    assert report.steps["start"]["lb01"].detail == "started at boot; 3/3 backends up"
    served = {h: v for h, op, v in world.scripts if op == "serve"}
    assert sorted(served) == ["lb01", "web01", "web02", "web03"] and all(v["start"] == "1" for v in served.values())
    assert report.steps["deploy"]["web01"].detail == "served at boot: 1.0"
    ips = [i.ip for i in ctx.inventory.images("lab") if i.service == "hello"]
    assert served["lb01"]["list"] == ",".join(f"{ip}:8000" for ip in ips)  # the lb starts with every worker
    assert served["lb01"]["on_backends"] == "python3 haproxyctl.py apply"
    # each host fetches its release from booted's nginx on its gateway (content-addressed, checksum checked)
    fetch, sha = served["web01"]["fetch"], served["web01"]["sha256"]
    assert fetch == f"http://{ctx.lab().env.gateway}:{ctx.settings.http_port}/releases/{sha}.tar.gz"
    assert hashlib.sha256((ctx.settings.releases_dir / f"{sha}.tar.gz").read_bytes()).hexdigest() == sha
    assert served["web01"]["tgz"] == ""  # nothing pushed over SFTP
    # re-running converges: nothing is booted again, healthy hosts are not restarted
    world.scripts.clear()
    again = ctx.runs().start_all()
    assert again.failed() == [] and report.steps["boot"]["web01"].detail.startswith("booted in")
    assert again.steps["boot"]["web01"].detail == "already running"
    assert {op for _, op, _ in world.scripts} == {"deploy"}
    assert all(r.detail.startswith("already running") for r in again.steps["start"].values())


def test_a_host_that_could_not_serve_at_boot_is_deployed_over_ssh(settings_env: dict[str, str], tmp_path: Path,
                                                                  world: World) -> None:
    world.no_serve.add("web02")  # its serve.sh failed: its boot-log line names no release
    ctx = make_ctx(settings_env, tmp_path, world)
    report = ctx.runs().start_all()
    assert report.failed() == []
    assert [h for h, op, _ in world.scripts if op == "deploy"] == ["web02"]
    deployed = next(v for h, op, v in world.scripts if op == "deploy")
    assert deployed["fetch"].endswith(".tar.gz") and deployed["tgz"] == ""  # one SSH command, pulled from nginx
    assert report.steps["deploy"]["web02"].detail.startswith("switched to 1.0")
    assert report.steps["deploy"]["web01"].detail == "served at boot: 1.0"
    assert ctx.inventory.releases()[("web02", "hello")] == "1.0"


def test_a_host_that_fails_to_boot_is_one_failed_row(settings_env: dict[str, str], tmp_path: Path,
                                                     world: World) -> None:
    world.fail_start, world.silent = {"web02"}, {"web03"}
    ctx = make_ctx(settings_env, tmp_path, world)
    report = ctx.runs().start_all()
    assert sorted(report.failed()) == ["web02", "web03"]
    assert report.steps["boot"]["web02"].detail == "could not start: fake failure"
    assert report.steps["boot"]["web03"].detail.startswith("no boot-log line within 2s")
    assert "web02" not in report.steps["deploy"] and ops(world, "web02") == []
    assert report.steps["test"]["web01"].ok and report.steps["test"]["lb01"].ok


def test_deliver_skips_later_steps_of_a_host_that_failed(settings_env: dict[str, str], tmp_path: Path,
                                                         world: World) -> None:
    ctx = make_ctx(settings_env, tmp_path, world)
    world.dead = {"web02"}
    report = ctx.runs().start_all()
    assert report.failed() == ["web02"]
    assert "No route to host" in report.steps["deploy"]["web02"].detail
    assert "web02" not in report.steps["start"] and "web02" not in report.steps["test"]
    assert ("web02", "hello") not in ctx.inventory.releases()


def test_unknown_service_is_found_before_any_host_boots(settings_env: dict[str, str], tmp_path: Path,
                                                        world: World) -> None:
    ctx = make_ctx(settings_env, tmp_path, world, web="nosuch")
    with pytest.raises(ConfigError, match="unknown service 'nosuch'"):
        ctx.runs().start_all()
    assert world.calls == [] and ctx.inventory.images() == []


def test_start_min_and_worker(settings_env: dict[str, str], tmp_path: Path, world: World) -> None:
    ctx = make_ctx(settings_env, tmp_path, world)
    assert [i.name for i in ctx.runs().start_min().images] == ["lb01", "web01"]
    assert sorted(world.running) == ["lb01", "web01"]
    report = ctx.runs().start_worker("web01")  # stopped, booted again, delivered
    assert report.failed() == [] and world.calls.count("stop") == 1
    assert report.steps["boot"]["web01"].detail.startswith("booted in")


@pytest.mark.parametrize(("break_it", "words"), [
    (lambda f: (f / "service.toml").write_text((f / "service.toml").read_text().replace("{port}", "{port:>99999}")),
     "hello/service.toml: 'start' uses {port:>99999}: placeholders are plain"),
    (lambda f: __import__("os").mkfifo(f / "ctl"), "hello/ctl: a FIFO (named pipe) in service folder"),
])
def test_start_worker_validates_before_it_stops_the_host(settings_env: dict[str, str], tmp_path: Path, world: World,
                                                         break_it: object, words: str) -> None:
    import shutil

    services = tmp_path / "service"
    shutil.copytree(REPO / "service", services, ignore=shutil.ignore_patterns("__pycache__"))
    ctx = make_ctx(settings_env, tmp_path, world, BOOTED_SERVICES=str(services))
    ctx.runs().start_min()
    stops = world.calls.count("stop")
    break_it(services / "hello")  # type: ignore[operator]
    again = make_ctx(settings_env, tmp_path, world, BOOTED_SERVICES=str(services))  # reads the service anew
    with pytest.raises(ConfigError, match=re.escape(words)):
        again.runs().start_worker("web01")
    assert world.calls.count("stop") == stops and "web01" in world.running  # never stopped, not left down


def test_stop_all_stops_destroys_and_tears_down_once(settings_env: dict[str, str], tmp_path: Path,
                                                     world: World) -> None:
    ctx = make_ctx(settings_env, tmp_path, world)
    ctx.runs().start_all()
    world.calls.clear()
    results = ctx.lab().stop_all()
    assert [(r.host, r.ok, r.detail) for r in results] == [(h, True, "stopped") for h in
                                                           ("lb01", "web01", "web02", "web03")]
    assert world.calls == ["stop", "teardown"]  # the handle checked the provider already; teardown once
    assert world.running == {} and ctx.inventory.hosts() == [] and ctx.inventory.releases() == {}
    assert all(i.pid is None for i in ctx.inventory.images())  # identities stay leased
    assert [r.detail for r in ctx.lab().stop_all()] == []  # again: nothing runs, converges


def make_repo(tmp: Path) -> Path:
    repo = tmp / "hello-repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    for version in ("1.0", "1.1"):
        for f in ("app.py", "service.toml"):
            (repo / f).write_text((REPO / "service" / "hello" / f).read_text())
        (repo / "CHANGES").write_text(version)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", version], check=True)
        subprocess.run([*git, "tag", version], check=True)
    return repo


def test_deploy_test_rollback_record_what_runs(settings_env: dict[str, str], tmp_path: Path, world: World) -> None:
    ctx = make_ctx(settings_env, tmp_path, world, HELLO_REPO=str(make_repo(tmp_path)))
    ctx.runs().start_all()
    plan = deploy.plan(ctx.remote, "hello", version="1.1")
    assert [t.name for t in plan.targets] == ["web01", "web02", "web03"]
    results = deploy.run_op(ctx.remote, "deploy", plan)
    assert {r.detail for r in results} == {"switched to 1.1, restarted"} and {r.version for r in results} == {"1.1"}
    assert version_of(world.hosts["web02"].current) == "1.1"
    # expects the last deployed version
    assert all(r.ok for r in deploy.run_op(ctx.remote, "test", deploy.plan(ctx.remote, "hello")))
    wrong = deploy.run_op(ctx.remote, "test", deploy.plan(ctx.remote, "hello", version="1.0"))
    assert not any(r.ok for r in wrong) and "expected '1.0'" in wrong[0].detail

    back = deploy.run_op(ctx.remote, "rollback", deploy.plan(ctx.remote, "hello", hosts=["web01"]))
    assert [(r.host, r.ok, r.version) for r in back] == [("web01", True, "1.0")]
    assert ctx.inventory.releases()[("web01", "hello")] == "1.0"
    assert ctx.inventory.releases()[("web02", "hello")] == "1.1"

    stopped = deploy.run_op(ctx.remote, "stop", deploy.plan(ctx.remote, "hello", hosts=["web02"]))
    assert stopped[0].detail == "stopped"
    started = deploy.run_op(ctx.remote, "start", deploy.plan(ctx.remote, "hello"))
    assert {r.host: r.detail.split(",")[0] for r in started} == {"web01": "already running", "web02": "started",
                                                                 "web03": "already running"}


def test_plan_refuses_hosts_that_are_not_listed_or_run_another_service(settings_env: dict[str, str],
                                                                      tmp_path: Path, world: World) -> None:
    ctx = make_ctx(settings_env, tmp_path, world)
    with pytest.raises(Exception, match="no host in the current host list runs hello"):
        deploy.plan(ctx.remote, "hello")
    ctx.runs().start_min()
    with pytest.raises(ConfigError, match="not in the current host list: web02"):
        deploy.plan(ctx.remote, "hello", hosts=["web02"])
    with pytest.raises(ConfigError, match="lb01 do\\(es\\) not run hello"):
        deploy.plan(ctx.remote, "hello", hosts=["lb01"])
    with pytest.raises(ConfigError, match="unknown operation"):
        deploy.run_op(ctx.remote, "reboot", deploy.plan(ctx.remote, "hello"))


def test_status_compares_desired_and_observed(settings_env: dict[str, str], tmp_path: Path, world: World) -> None:
    ctx = make_ctx(settings_env, tmp_path, world)
    lab = ctx.lab()
    ctx.runs().start_min()
    rows = {r["host"]: r for r in ctx.status()}
    assert rows["web01"]["state"] == "ok" and rows["web02"]["state"] == "stopped"
    assert rows["lb01"]["deployed"] == "lb 1.0" and rows["web01"]["reachable"] is True
    clone = lab.clone("web01", "web09")
    assert clone.service == "hello" and "clone" in world.calls
    assert {r["host"]: r["state"] for r in ctx.status()}["web09"] == "extra, stopped"


def test_status_verdicts() -> None:
    import ipaddress

    from booted.environments import Environment, HostSpec

    env = Environment("lab", "netns", ipaddress.IPv4Network("10.1.0.0/24"),
                      (HostSpec("a", "worker", "hello", "2.0"), HostSpec("b", "worker", "hello", "2.0")))
    listed = [Host("a", "10.1.0.2", "m", "k", 1.0, True, 1.0)]
    rows = status_rows(env, {"a": 1, "x": 2}, [], listed, {("a", "hello"): "1.0"})
    assert [(r["host"], r["state"]) for r in rows] == [("a", "running, drift (1.0)"), ("b", "stopped")]
    assert status_rows(env, {"b": 1}, [], [], {})[1]["state"] == "running, not deployed"
