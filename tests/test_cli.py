"""The `fab` command line as a user meets it: the task list, and user mistakes -> one line, an exit code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO

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
     r"environments.py:2: still running after 10 s \(LOAD_TIMEOUT\): environments.py must only define ENVIRONMENTS"),
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
    proc = fab(settings_env, *args)
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
