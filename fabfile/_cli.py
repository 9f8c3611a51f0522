"""Fabric's and invoke's core flags that booted does not use: refused (exit 2) with what to use instead.

Two seams, both Fabric's own: `Executor` (named by fabric.yaml's tasks.executor_class, so Fabric's `fab`
uses it) refuses them before any task runs; `Booted` (the `booted` command, a Fab subclass) refuses them
while parsing, before Fabric prompts or lists agent keys, says booted's version with -V and exits 2 on a
mistyped flag or task. `fab` parses, prompts and prints -V before it loads the fabfile: there booted
cannot step in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fabric import Config
from fabric import Executor as FabricExecutor
from fabric import __version__ as fabric_version
from fabric.main import Fab
from invoke import Program
from invoke.exceptions import Exit, ParseError

from booted import __version__
from booted.errors import ConfigError

LAB_KEY = "booted logs in with the lab key it made (keys/lab_ed25519 in the state directory)"
RUN_FLAGS = "it sets invoke's run(), which booted's tasks do not use"
# core flag (its long name) -> how it reads, and what to use instead
REFUSED = {
    "hosts": ("-H/--hosts", "name hosts with the task's own --hosts, e.g. fab hosts_run 'uptime' --hosts "
                            "web01,web02 (fab --help TASK lists a task's options)"),
    "identity": ("-i/--identity", f"{LAB_KEY}; fab ssh_config prints how to reach the hosts with it"),
    "ssh-config": ("-S/--ssh-config", f"{LAB_KEY} and pinned host keys; fab ssh_config writes a config for ssh -F"),
    "connect-timeout": ("-t/--connect-timeout", "BOOTED_TIMEOUT sets the seconds every remote step may take "
                                                "(hosts_run: --timeout)"),
    "command-timeout": ("-T/--command-timeout", "BOOTED_TIMEOUT sets the seconds every remote step may take "
                                                "(hosts_run: --timeout)"),
    "prompt-for-login-password": ("--prompt-for-login-password", f"{LAB_KEY}, no password"),
    "prompt-for-passphrase": ("--prompt-for-passphrase", f"{LAB_KEY}, which has no passphrase"),
    "prompt-for-sudo-password": ("--prompt-for-sudo-password", "booted works on hosts as BOOTED_USER, without sudo"),
    "list-agent-keys": ("--list-agent-keys", f"{LAB_KEY}, not ssh-agent's keys"),
    "dry": ("-R/--dry", f"{RUN_FLAGS}, so they would run for real; booted has no dry run"),
    "echo": ("-e/--echo", RUN_FLAGS),
    "pty": ("-p/--pty", f"{RUN_FLAGS}; fab host_ssh NAME gives a terminal"),
    "hide": ("--hide", RUN_FLAGS),
    "warn-only": ("-w/--warn-only", f"{RUN_FLAGS}; one failing host never stops the others anyway"),
}


def refusal(name: str) -> Exit:
    flag, instead = REFUSED[name]
    return Exit(f"booted: {flag} is a Fabric option booted does not use: {instead}", code=ConfigError.exit_code)


def refuse(core_args: Any) -> None:
    """Exit 2 on the first refused core flag given (before a task or after one: invoke merges both)."""
    for name in REFUSED:
        if name in core_args and core_args[name].got_value:
            raise refusal(name)


class Executor(FabricExecutor):
    """Fabric's Executor, after a check of the core flags: once, before any task (or host) runs."""

    def execute(self, *tasks: Any) -> Any:
        refuse(self.core[0].args)
        return super().execute(*tasks)


@contextmanager
def _usage() -> Iterator[None]:
    """A parse error is a usage mistake: exit 2 like any other configuration mistake (invoke says 1)."""
    try:
        yield
    except ParseError as exc:
        raise Exit(f"booted: {exc} (--list shows the tasks, --help TASK a task's options)",
                   code=ConfigError.exit_code) from None


class Booted(Fab):
    """`booted`: Fabric's fab with booted's version, flags refused before prompts, parse errors exit 2."""

    def print_version(self) -> None:
        print(f"booted {__version__}")
        super().print_version()

    def parse_core(self, argv: Any) -> None:
        with _usage():
            Program.parse_core(self, argv)  # not Fab's: it would list agent keys before the refusal below
        refuse(self.args)

    def parse_tasks(self) -> None:
        with _usage():
            super().parse_tasks()
        refuse(self.args)  # core flags given after a task name

    def parse_cleanup(self) -> None:
        with _usage():  # --help NOSUCHTASK
            super().parse_cleanup()


def main(argv: list[str] | None = None) -> None:
    """The `booted` command (pyproject.toml's scripts)."""
    Booted(name="Fabric", version=fabric_version, executor_class=Executor, config_class=Config).run(argv)
