"""Snapshot tasks: take, restore, list and delete snapshots of a whole lab (README: Snapshots)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from booted.report import table, when
from fabfile._task import JSON_HELP, booted_task, emit_json, err, finish

if TYPE_CHECKING:
    from booted.context import Booted
    from booted.snapshots import Manifest

ENV_HELP = {"env": "environment name (default: BOOTED_ENV, or the only one in environments.py)"}
NAME_HELP = {"name": "the snapshot's name (per environment: lowercase letters, digits, - and _)"}


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def snapshot_row(m: Manifest, size: int) -> dict[str, object]:
    """One snapshot as --json prints it."""
    ran = m.ran()
    return {"name": m.name, "env": m.env, "provider": m.provider, "taken": m.taken, "pause_s": m.pause_s,
            "size": size, "keeps": m.keeps,
            "hosts": [{"name": h.name, "running": h.running, "saved": h.saved, "ran": ran[h.name] or None}
                      for h in m.hosts]}


@booted_task(help={**NAME_HELP, **ENV_HELP, **JSON_HELP})
def env_snapshot(ctx: Booted, name: str, env: str | None = None, json_: bool = False) -> None:
    """Snapshot the whole lab: pause every host at once, save each, resume them."""
    from booted.snapshots.store import size_on_disk

    snaps = ctx.snapshots(env)
    started = time.monotonic()
    m = snaps.take(name)
    size = size_on_disk(snaps.store.folder(name))
    if json_:
        emit_json(snapshot_row(m, size))
        return
    running = [h.name for h in m.hosts if h.running]
    print(f"snapshot {m.name} of {m.env}: {len(running)} running host(s) paused together for {m.pause_s:.3f} s, "
          f"{sum(h.saved for h in m.hosts)} saved, {_size(size)} on disk "
          f"({time.monotonic() - started:.1f}s)")


@booted_task(help={**NAME_HELP, **ENV_HELP, **JSON_HELP})
def env_restore(ctx: Booted, name: str, env: str | None = None, json_: bool = False) -> None:
    """Put the whole lab back as a snapshot has it (hosts, disks, versions, holds)."""
    snaps = ctx.snapshots(env)
    started = time.monotonic()
    m, results = snaps.restore(name)
    finish(f"environment {m.env}: restored snapshot {m.name} of {when(m.taken)} "
           f"({time.monotonic() - started:.1f}s)", results, json_)


@booted_task(help={**ENV_HELP, **JSON_HELP})
def env_snapshots(ctx: Booted, env: str | None = None, json_: bool = False) -> None:
    """The environment's snapshots: when, hosts, size on disk, what each host ran."""
    snaps = ctx.snapshots(env)
    listing = snaps.listing()
    left = snaps.unfinished_restore()
    if left is not None:
        err(f"WARNING: the last restore (of {left[1]!r}) did not finish (step {left[2] or 'start'!r}): "
            f"run fab env_restore {left[1]} again")
    if json_:
        emit_json([snapshot_row(m, size) for m, size in listing])
        return
    print(f"environment {snaps.handle.env.name}: {len(listing)} snapshot(s)")
    print(table(["name", "taken", "hosts", "size", "pause", "ran"],
                [(m.name, when(m.taken), f"{sum(h.running for h in m.hosts)}/{len(m.hosts)}", _size(size),
                  f"{m.pause_s:.3f}s", ", ".join(f"{h}: {r}" for h, r in m.ran().items() if r) or "-")
                 for m, size in listing]))


@booted_task(help={**NAME_HELP, **ENV_HELP, **JSON_HELP})
def env_snapshot_del(ctx: Booted, name: str, env: str | None = None, json_: bool = False) -> None:
    """Delete a snapshot and free its space."""
    snaps = ctx.snapshots(env)
    freed = snaps.delete(name)
    if json_:
        emit_json({"name": name, "env": snaps.handle.env.name, "ok": True, "freed": freed})
        return
    print(f"snapshot {name} of {snaps.handle.env.name} deleted: {_size(freed)} freed")


TASKS = [env_snapshot, env_restore, env_snapshots, env_snapshot_del]
