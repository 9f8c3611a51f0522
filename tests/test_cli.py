"""The `fab` command line as a user meets it: the task list, and user mistakes -> one line, an exit code."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.fakes import World

FAB = str(Path(sys.executable).parent / "fab")
SEED = ("env_start_all env_start_min env_start_worker env_stop hello_deploy hello_start hello_stop hello_test "
        "hosts_clear hosts_filter hosts_list hosts_logged hosts_reset image_build image_clone image_del image_list "
        "image_start image_stop restart_nginx").split()


def fab(env: dict[str, str], *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [FAB, *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", "--regid=65534", "--clear-groups", *cmd]
    return subprocess.run(cmd, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_task_list(settings_env: dict[str, str]) -> None:
    out = fab(settings_env, "--list").stdout
    listed = dict(re.findall(r"^  (\w+)\s+(\S.*)$", out, re.M))
    for name in [*SEED, "env_status", "hosts_run", "image_console", "hello_rollback"]:
        assert name in listed, f"{name} missing from fab --list:\n{out}"
        assert listed[name].strip(), f"{name} has no docstring"
    assert not any("-" in name for name in listed), "task names keep underscores"


def test_a_new_service_folder_gets_tasks(settings_env: dict[str, str], tmp_path: Path) -> None:
    services = tmp_path / "service"
    (services / "echo").mkdir(parents=True)
    (services / "echo" / "service.toml").write_text('port = 9000\nstart = "exec python3 -m http.server"\n')
    out = fab({**settings_env, "BOOTED_SERVICES": str(services)}, "--list").stdout
    for op in ("deploy", "start", "stop", "test"):
        assert f"echo_{op}" in out


@pytest.mark.parametrize(("text", "args", "code", "pattern"), [
    ("ENVIRONMENTS = {'lab': {'provider': 'netns', 'network': '10.213.50.0/24',\n 'hosts': {'web[5:1]': {}}}}\n",
     ["env_start_all"], 2, r"environments.py:2: environment 'lab': host 'web\[5:1\]'"),
    ("ENVIRONMENTS = {'lab': {'network': '10.213.50.0/24', 'hosts': {'a1': {}}}}\n",
     ["env_start_all", "--env", "prod"], 2, r"no environment 'prod' \(defined: lab\)"),
    ("ENVIRONMENTS = {'lab': {'network': '10.213.50.0/24', 'hosts': {'a1': {}}}}\n",
     ["hello_deploy"], 1, r"no host in the current host list runs hello"),
    ("ENVIRONMENTS = {'lab': {'network': '10.213.50.0/24', 'hosts': {'a1': {}}}}\n",
     ["nope_deploy"], 1, r"No idea what 'nope_deploy' is"),
    ("ENVIRONMENTS = {'lab': {'network': '10.213.50.0/24', 'hosts': {'a1': {}}}}\n",
     ["image_start", "zz9"], 2, r"environment 'lab' has no host 'zz9' \(hosts: a1\)"),
    ("ENVIRONMENTS = {'lab': {'network': '10.213.50.0/24', 'hosts': {'a1': {}}}}\n",
     ["hosts_run", "true", "--hosts", "a1"], 2, r"not in the current host list: a1"),
    ("ENVIRONMENTS = {'lab': {'network': '10.213.50.0/24', 'hosts': {'a1': {}}}}\n",
     ["hosts_run", "true", "--timeout", "100000"], 2, r"--timeout 100000: seconds each host may take, 1\.\.86400"),
    ("import time\ntime.sleep(3600)\n", ["env_status"], 2,
     r"environments.py:2: still running after 2 s \(BOOTED_LOAD_TIMEOUT\): environments.py must only define "
     "ENVIRONMENTS"),
    ("raise SystemExit(0)\n", ["env_status"], 2, r"environments.py:1: it calls exit\(\) \(SystemExit 0\)"),
    ("ENVIRONMENTS = {'lab': {'network': '127.0.0.0/24', 'hosts': {'a1': {}}}}\n", ["env_status"], 2,
     r"environments.py:1: environment 'lab': network '127.0.0.0/24' must be a private range"),
    ("ENVIRONMENTS = {'lab': {'network': '10.213.50.0/24', 'hosts': {'a1': {}}, 'max': {'worker': float('nan')}}}\n",
     ["env_status"], 2, r"environments.py:1: environment 'lab': max\['worker'\] = nan: a whole number"),
    ("ENVIRONMENTS = {'lab': {'network': '10.213.50.0/24', 'hosts': {'a1': {}}}}\n",
     ["image_build", "--name", "a1", "--installer", "kickstart"], 2, r"kickstart needs the installer ISO: --iso"),
    ("ENVIRONMENTS = {'lab': {'network': '10.213.50.0/24', 'hosts': {'a1': {}}}}\n",
     ["image_build", "--name", "a1", "--iso", "/tmp/x.iso"], 2, r"--iso goes with --installer"),
    ("ENVIRONMENTS = {'lab': {'network': '10.213.50.0/24', 'hosts': {'a1': {}}}}\n",
     ["image_build", "--name", "a1", "--installer", "autoyast"], 2, r"--installer 'autoyast': preseed .* or kickstart"),
])
def test_user_mistakes(settings_env: dict[str, str], text: str, args: list[str], code: int, pattern: str) -> None:
    Path(settings_env["BOOTED_ENVIRONMENTS"]).write_text(text)
    waits = "time.sleep" in text  # a file that never finishes: waited out for BOOTED_LOAD_TIMEOUT, 2 s here
    proc = fab({**settings_env, "BOOTED_LOAD_TIMEOUT": "2"} if waits else settings_env, *args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert re.search(pattern, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("task", ["hosts_list", "hello_deploy", "env_status"])
def test_bad_settings_are_one_message_and_exit_2_for_every_task(settings_env: dict[str, str], task: str) -> None:
    proc = fab({**settings_env, "BOOTED_PARALLEL": "many"}, task)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("BOOTED_PARALLEL='many' is not a whole number") == 1, proc.stderr


def test_a_broken_service_is_one_message_and_exit_2(settings_env: dict[str, str], tmp_path: Path) -> None:
    services = tmp_path / "service"
    (services / "echo").mkdir(parents=True)
    (services / "echo" / "service.toml").write_text("port = 'x'\n")
    env = {**settings_env, "BOOTED_SERVICES": str(services)}
    Path(settings_env["BOOTED_ENVIRONMENTS"]).write_text(
        "ENVIRONMENTS = {'lab': {'network': '10.213.50.0/24', 'hosts': {'a1': {'service': 'echo'}}}}\n")
    assert "echo_test" in fab(env, "--list").stdout  # the task is there, and says what is wrong
    for task in ("echo_test", "env_start_all"):
        proc = fab(env, task)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.count("echo/service.toml: 'port' must be a number") == 1, proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_without_root(settings_env: dict[str, str]) -> None:
    home = Path(tempfile.mkdtemp(prefix="booted-noroot-", dir="/tmp"))
    try:
        home.chmod(0o777)
        envfile = home / "environments.py"
        envfile.write_text("ENVIRONMENTS = {'lab': {'network': '10.213.50.0/24', 'hosts': {'a1': {}}}}\n")
        envfile.chmod(0o644)
        env = {**settings_env, "HOME": str(home), "BOOTED_ENVIRONMENTS": str(envfile),
               "BOOTED_STATE_DIR": str(home / "state")}
        proc = fab(env, "env_start_all", user="nobody")
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "needs root" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        shutil.rmtree(home)


def test_hosts_run_timeout_is_a_number() -> None:
    """invoke parses an option by its default's type: with None, `--timeout 10` was the string '10'."""
    from fabfile.hostmanager import hosts_run

    kinds = {a.name: a.kind for a in hosts_run.get_arguments()}
    assert kinds["timeout"] is int


# --json: every task that reports hosts, one object per host, stdout only JSON, exit code 1 when a host failed

NOT_PER_HOST = {"hosts_logged", "hosts_clear", "restart_nginx", "ssh_config", "inventory", "host_ssh", "image_golden",
                "image_clone", "image_console", "image_installer", "monitor", "monitor_start", "monitor_stop"}
RESULT_FIELDS = {"name", "ok", "detail", "seconds", "version"}  # the table's host, result, seconds, detail (+ version)


def test_every_task_that_reports_hosts_takes_json() -> None:
    """Walks the task list: a task is per-host unless listed above, so a new task gets --json or says why not."""
    from fabfile import ns

    tasks = {t.name: t for t in ns.tasks.values()}  # keyed by name as fab shows it (not invoke's dashed keys)
    assert set(tasks) >= NOT_PER_HOST, "NOT_PER_HOST names a task that is gone"
    missing = [name for name, t in tasks.items()
               if name not in NOT_PER_HOST and not any("json" in a.names for a in t.get_arguments())]
    assert not missing, f"tasks that report hosts without --json: {missing}"


@pytest.fixture
def fab_with_fakes(settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[World, Callable[..., tuple[int, str, str]]]]:
    """`fab ARGS` run in this process by Fabric's own Program (its parser, loader and executor), each task's
    Booted built over the fake provider and fleet of tests/test_lab.py: -> (exit code, stdout, stderr)."""
    from fabric.main import program

    from tests.test_lab import make_ctx

    task_module = importlib.import_module("fabfile._task")  # not fabfile._task: the package's loop variable

    world = World()
    for key, value in settings_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(task_module, "context", lambda settings: make_ctx(settings_env, tmp_path, world))

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            program.run(["fab", *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    yield world, run
    world.close()


def header(table_out: str) -> list[str]:
    """The column names of the table in a task's output (the line above the dashes)."""
    lines = table_out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("--"))
    return re.split(r"\s{2,}", lines[at - 1].strip())


def test_json_of_tasks_that_report_hosts(fab_with_fakes: tuple[World, Callable[..., tuple[int, str, str]]]) -> None:
    world, run = fab_with_fakes
    world.fail_start = {"web03"}
    code, out, err = run("env_start_all", "--json")
    assert code == 1, out + err
    rows = {r["name"]: r for r in json.loads(out)}  # stdout is the JSON document alone
    assert list(rows) == ["lb01", "web01", "web02", "web03"]
    assert rows["web03"]["ok"] is False and rows["web03"]["boot"]["ok"] is False
    assert "fake failure" in rows["web03"]["boot"]["detail"] and rows["web03"]["deploy"] is None
    assert rows["web01"]["ok"] is True and rows["web01"]["ip"] and rows["web01"]["role"] == "worker"
    assert all(rows["web01"][s]["ok"] for s in ("boot", "deploy", "start", "test"))
    assert "1 host(s) failed: web03" in err

    code, out, err = run("env_start_worker", "web01")  # the table has the same fields, the host as "name"
    assert code == 0, out + err
    assert {"name" if c == "host" else c for c in header(out)} | {"ok"} == set(rows["web01"])

    code, out, err = run("env_status", "--json")
    assert code == 0, out + err
    status = json.loads(out)
    assert [r["name"] for r in status] == ["lb01", "web01", "web02", "web03"]
    assert all(r["host"] == r["name"] for r in status)  # the deprecated alias stays

    world.dead = {"web02"}
    code, out, err = run("hello_test", "--json")
    assert code == 1, out + err
    tested = {r["name"]: r for r in json.loads(out)}
    assert set(tested) == {"web01", "web02"} and all(set(r) == RESULT_FIELDS for r in tested.values())
    assert tested["web01"]["ok"] and not tested["web02"]["ok"] and "No route to host" in tested["web02"]["detail"]
    assert "host(s) failed: web02" in err
    code, out, err = run("hello_test")
    assert code == 1 and header(out) == ["host", "result", "seconds", "detail"]

    code, out, err = run("hosts_run", "echo hi", "--json")
    assert code == 1, out + err
    ran = {r["name"]: r for r in json.loads(out)}
    assert set(ran) == {"lb01", "web01", "web02"}
    assert ran["web01"]["ok"] and ran["web01"]["detail"] == "ok" and "echo hi" in ran["web01"]["output"]
    assert not ran["web02"]["ok"] and ran["web02"]["output"] is None

    world.dead = set()
    for args in (["hosts_filter", "--json"], ["hosts_reset", "--json"], ["image_stop", "web01", "--json"],
                 ["image_start", "web01", "--json"], ["env_stop", "--json"]):
        code, out, err = run(*args)
        assert code == 0, f"{args}: {out}{err}"
        assert json.loads(out) and all(set(r) == RESULT_FIELDS and r["ok"] for r in json.loads(out)), args
