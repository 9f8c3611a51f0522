"""Flags that mean what they say: each task's options against one table, Fabric's flags booted does not use
refused (exit 2, saying what to use instead), -h is help, and the `booted` command's extras."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from fabric import Connection
from invoke.exceptions import Exit

from tests.conftest import REPO
from tests.fakes import World
from tests.test_cli import fab

SERVICE = {"--env", "--hosts", "--json", "--version"}
# every task -> its long flags; a flag that disappears (or appears) fails here until this table says so
OPTIONS: dict[str, set[str]] = {
    "chaos": {"--env", "--duration", "--kill-every", "--kill", "--impair", "--load", "--max-failed", "--max-p99",
              "--json"},
    "env_start_all": {"--env", "--json"},
    "env_start_min": {"--env", "--json"},
    "env_start_worker": {"--name", "--env", "--json"},
    "env_restore": {"--name", "--env", "--json"},
    "env_snapshot": {"--name", "--env", "--json"},
    "env_snapshot_del": {"--name", "--env", "--json"},
    "env_snapshots": {"--env", "--json"},
    "env_status": {"--env", "--json", "--probe"},
    "env_stop": {"--env", "--json"},
    "env_timeline": {"--env", "--svg", "--json"},
    "host_ssh": {"--name", "--command", "--env"},
    "hosts_clear": set(),
    "net_clear": {"--env", "--hosts", "--network", "--json"},
    "net_impair": {"--env", "--hosts", "--network", "--delay", "--jitter", "--loss", "--rate", "--json"},
    "net_status": {"--env", "--json"},
    "hosts_filter": {"--json"},
    "hosts_list": {"--json"},
    "hosts_logged": set(),
    "hosts_reset": {"--json"},
    "hosts_run": {"--command", "--hosts", "--env", "--timeout", "--json"},
    "image_build": {"--name", "--env", "--installer", "--timeout", "--iso", "--json"},
    "image_clone": {"--src", "--new", "--env"},
    "image_console": {"--name", "--lines", "--env"},
    "image_del": {"--name", "--env", "--json"},
    "image_golden": {"--refresh"},
    "image_installer": {"--name", "--kind", "--env"},
    "image_list": {"--env", "--json"},
    "image_start": {"--name", "--env", "--json"},
    "image_stop": {"--name", "--env", "--json"},
    "inventory": {"--env", "--format"},
    "monitor": {"--env", "--password-stdin"},
    "monitor_start": {"--env"},
    "monitor_status": {"--env", "--json"},
    "monitor_stop": {"--env"},
    "restart_nginx": set(),
    "ssh_config": {"--env"},
    **{f"{service}_{op}": SERVICE for service in ("hello", "lb")  # service/'s folders
       for op in ("deploy", "rollback", "start", "stop", "test")},
}
NAMES_HOSTS = {"--name", "--src", "--hosts"}

# `fab --help TASK` for every task in one process: Fabric's own program object, as the fab script runs it
HELP_ALL = """
import sys
from fabric.main import program
for name in sys.argv[1:]:
    print("@@task", name, flush=True)
    program.run(["fab", "--help", name], exit=False)
    sys.stdout.flush()
"""
BOOTED = "import sys; from fabfile._cli import main; main(['booted', *sys.argv[1:]])"  # pyproject's `booted`
ENV = "ENVIRONMENTS = {'lab': {'provider': 'netns', 'network': '10.213.50.0/24', 'hosts': {'a1': {}}}}\n"


def run(env: dict[str, str], code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_every_task_has_the_options_of_the_table(settings_env: dict[str, str]) -> None:
    listed = re.findall(r"^  (\w+)  ", fab(settings_env, "--list").stdout, re.M)
    assert set(listed) == set(OPTIONS), "fab --list and OPTIONS differ"
    helps = run(settings_env, HELP_ALL, *listed).stdout.split("@@task ")[1:]
    assert len(helps) == len(listed)
    for text in helps:
        name, _, usage = text.partition("\n")
        options = usage.partition("\nOptions:\n")[2]
        assert not re.search(r"^  -\w", options, re.M), f"{name} has a short flag: -h is help, -v/-e Fabric's"
        flags = set(re.findall(r"^  (--[a-z][a-z0-9-]*)", options, re.M))
        assert flags == OPTIONS[name], f"fab --help {name}: {sorted(flags)}, the table: {sorted(OPTIONS[name])}"
        if flags & NAMES_HOSTS:
            assert "--env" in flags, f"{name} names hosts but has no --env"


@pytest.mark.parametrize("args", [["-H", "alpha,beta", "hosts_list"], ["hosts_list", "-H", "alpha"],
                                  ["--hosts=alpha", "hosts_list"]])
def test_fab_H_is_refused_before_any_task_runs(settings_env: dict[str, str], args: list[str]) -> None:
    proc = fab(settings_env, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""  # the task body never ran (it ran once per host before)
    assert proc.stderr.count("booted: -H/--hosts is a Fabric option booted does not use: name hosts with the "
                             "task's own --hosts") == 1, proc.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["-i", "/tmp/key", "hosts_list"], "-i/--identity is a Fabric option booted does not use: booted logs in "
                                       "with the lab key"),
    (["-S", "{envfile}", "hosts_list"], "-S/--ssh-config is a Fabric option booted does not use"),
    (["-t", "5", "hosts_list"], "-t/--connect-timeout is a Fabric option booted does not use: BOOTED_TIMEOUT"),
    (["hosts_list", "-T", "5"], "-T/--command-timeout is a Fabric option booted does not use: BOOTED_TIMEOUT"),
    (["-R", "env_stop"], "-R/--dry is a Fabric option booted does not use"),
    (["-w", "env_stop"], "-w/--warn-only is a Fabric option booted does not use"),
])
def test_fabric_flags_booted_does_not_use_are_refused(settings_env: dict[str, str], args: list[str],
                                                       says: str) -> None:
    Path(settings_env["BOOTED_ENVIRONMENTS"]).write_text(ENV)
    proc = fab(settings_env, *[a.format(envfile=settings_env["BOOTED_ENVIRONMENTS"]) for a in args])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "" and f"booted: {says}" in proc.stderr, proc.stderr


def test_a_host_bound_call_is_refused_by_the_task_too() -> None:
    """Should fabric.yaml's executor be replaced (a runtime config), the task body still refuses -H."""
    from fabfile.hostmanager import hosts_list

    with pytest.raises(Exit) as caught:
        hosts_list(Connection("alpha"))
    assert caught.value.code == 2 and "-H/--hosts" in str(caught.value.message)


def test_h_after_a_task_is_its_help(settings_env: dict[str, str]) -> None:
    proc = fab(settings_env, "hello_deploy", "-h")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Usage: fab [--core-opts] hello_deploy" in proc.stdout and "--hosts=STRING" in proc.stdout


def test_image_console_takes_env(settings_env: dict[str, str]) -> None:
    Path(settings_env["BOOTED_ENVIRONMENTS"]).write_text(ENV)
    proc = fab(settings_env, "image_console", "a1", "--env", "lab")
    assert proc.returncode == 2 and "a1 has no console log yet" in proc.stderr, proc.stderr
    proc = fab(settings_env, "image_console", "a1", "--env", "prod")
    assert proc.returncode == 2 and "no environment 'prod' (defined: lab)" in proc.stderr, proc.stderr


def test_env_of_an_existing_image_must_match(settings_env: dict[str, str], tmp_path: Path) -> None:
    from booted.errors import ConfigError
    from tests.test_lab import make_ctx

    world = World()
    try:
        ctx = make_ctx(settings_env, tmp_path, world)
        ctx.lab().images(["web01"])
        assert ctx.lab_of("web01", "lab").env.name == "lab"
        with pytest.raises(ConfigError, match=r"image 'web01' belongs to environment 'lab', not 'prod' \(--env\)"):
            ctx.lab_of("web01", "prod")
    finally:
        world.close()


def test_fab_keeps_fabrics_exit_1_for_a_mistyped_flag(settings_env: dict[str, str]) -> None:
    """invoke's parser runs before the fabfile can do anything: `fab` says 1, `booted` (below) 2."""
    proc = fab(settings_env, "hosts_list", "--jsn")
    assert proc.returncode == 1 and "No idea what '--jsn' is!" in proc.stderr


def test_the_booted_command_is_installed_as_fabfile_cli_main() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["booted"] == "fabfile._cli:main"


@pytest.mark.parametrize(("args", "code", "out", "err"), [
    (["-V"], 0, r"^booted \d+\.\d+\.\d+\nFabric 3\.2\.", ""),
    (["hosts_list", "--jsn"], 2, "", r"^booted: No idea what '--jsn' is! \(--list shows the tasks"),
    (["nope_deploy"], 2, "", r"^booted: No idea what 'nope_deploy' is!"),
    (["--list-agent-keys"], 2, "", r"^booted: --list-agent-keys is a Fabric option booted does not use"),
    (["--prompt-for-login-password", "hosts_list"], 2, "",
     r"^booted: --prompt-for-login-password is a Fabric option booted does not use: booted logs in with the lab key"),
    (["-H", "alpha", "--", "uname"], 2, "", r"^booted: -H/--hosts is a Fabric option booted does not use"),
    (["-S", "/nonexistent", "hosts_list"], 2, "", r"^booted: -S/--ssh-config is a Fabric option"),
    (["hosts_list"], 0, "no hosts listed", ""),
    (["hello_deploy", "-h"], 0, r"^Usage: booted \[--core-opts\] hello_deploy", ""),
])
def test_the_booted_command(settings_env: dict[str, str], args: list[str], code: int, out: str, err: str) -> None:
    """`booted`: fab plus what a fabfile cannot do: refusals before Fabric prompts or lists agent keys,
    parse errors exit 2, -V names booted's version."""
    Path(settings_env["BOOTED_ENVIRONMENTS"]).write_text(ENV)
    proc = run(settings_env, BOOTED, *args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert re.search(out, proc.stdout) and re.search(err, proc.stderr), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Enter login password" not in proc.stdout + proc.stderr
