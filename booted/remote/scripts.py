"""The remote shell scripts (booted/remote/scripts/*.sh, checked by shellcheck in CI), rendered for one
host: the values first, each quoted with shlex.quote, then the library of functions, then the script."""

from __future__ import annotations

import shlex
from functools import cache
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent / "scripts"


@cache
def text(name: str) -> str:
    """A script's text (read once per process; the files ship with the package)."""
    return (SCRIPTS / f"{name}.sh").read_text()


def assignments(values: dict[str, str]) -> str:
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def render(name: str, values: dict[str, str]) -> str:
    """The script `name` for one host: `values` as quoted shell variables, the library of functions (lib.sh,
    probe.sh), then the script."""
    return f"# booted: {name}\n" + assignments(values) + text("lib") + text("probe") + text(name)


def run_sh(values: dict[str, str], command: str) -> str:
    """A host's run.sh: the supervisor loop around `command` (the service's start, placeholders filled
    with quoted values)."""
    return (f"#!/bin/sh\n# written by booted: supervises {values['service']}\n" + assignments(values)
            + f"start_command() {{\n  {command}\n}}\n" + text("supervise"))
