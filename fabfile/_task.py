"""The one place where engine errors become messages and exit codes (like invoke's Program.run)."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fabric import Connection, task
from invoke.exceptions import Exit

from booted.config import Settings
from booted.errors import BootedError, ConfigError, storage_error
from booted.report import host_results
from fabfile._cli import refusal

if TYPE_CHECKING:  # the context (and the engine under it) is imported when a task runs, not by `fab --list`
    from booted.context import Booted
    from booted.results import HostResult


def context(settings: Settings) -> Booted:
    """The run's context, imported here (when a task runs): `fab --list` loads no engine module."""
    from booted.context import Booted

    return Booted(settings)


def booted_task(help: dict[str, str] | None = None) -> Callable[[Callable[..., Any]], Any]:
    """A Fabric task whose body gets a Booted context instead of invoke's; BootedError -> message + code.
    No automatic short flags: -h stays help and -v/-e/-H... keep Fabric's meaning (or its refusal)."""
    def decorate(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def body(c: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(c, Connection):  # -H: fabric.yaml's executor refuses it first; this if that was replaced
                raise refusal("hosts")
            ctx: Booted | None = None
            try:
                ctx = context(Settings.from_env())
                return fn(ctx, *args, **kwargs)
            except BootedError as exc:
                raise Exit(f"booted: {exc}", code=exc.exit_code) from None
            except KeyboardInterrupt:
                raise Exit("booted: interrupted", code=130) from None
            except BrokenPipeError:  # `fab ... | head`: the reader left; no traceback
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise Exit(code=141) from None
            except (OSError, sqlite3.Error) as exc:  # a full or read-only state dir is a message, not a traceback
                storage = storage_error(exc, ctx.settings.state_dir if ctx else "")
                if storage is None:
                    raise
                raise Exit(f"booted: {storage}", code=storage.exit_code) from None
            finally:
                if ctx is not None:
                    ctx.close()
        return task(help=help or {}, auto_shortflags=False)(body)
    return decorate


def names(arg: str | None) -> list[str] | None:
    """'web01,web[02:03]' -> [web01, web02, web03]; None stays None."""
    from booted.environments import expand_range

    if not arg:
        return None
    out: list[str] = []
    for part in arg.split(","):
        part = part.strip()
        if part:
            try:
                out += expand_range(part)
            except ValueError as exc:
                raise ConfigError(f"{part!r}: {exc}") from None
    return out


JSON_HELP = {"json": "print JSON on stdout instead of a table: one object per host (README: JSON output)"}


def result_row(r: HostResult) -> dict[str, Any]:
    """One host's result as --json prints it: the table's fields, the host always as "name"."""
    return {"name": r.host, "ok": r.ok, "detail": r.detail,
            "seconds": None if r.seconds is None else round(r.seconds, 3), "version": r.version}


def emit_json(rows: Any) -> None:
    """--json's output: stdout holds this JSON document and nothing else (progress and messages go to stderr)."""
    print(json.dumps(rows, indent=2), flush=True)


def finish(title: str, results: Sequence[HostResult], as_json: bool = False) -> None:
    """Print per-host results (a table, or with `as_json` one JSON object per host); exit 1 naming the failed
    hosts when any failed."""
    if as_json:
        emit_json([result_row(r) for r in results])
    else:
        print(host_results(title, [(r.host, r.ok, r.detail, r.seconds) for r in results]))
    failed(results)


def failed(results: Sequence[HostResult]) -> None:
    """Exit 1 naming the failed hosts, if any."""
    bad = [r.host for r in results if not r.ok]
    if bad:
        raise Exit(f"booted: {len(bad)} host(s) failed: {', '.join(bad)}", code=1)


def err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
