"""Host list tasks: discover from the boot log, filter, list, clear, reset, run a command; nginx."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from booted.errors import ConfigError
from booted.report import table, when
from fabfile._task import JSON_HELP, booted_task, emit_json, err, failed, finish, names, result_row

if TYPE_CHECKING:
    from booted.context import Booted


@booted_task()
def hosts_logged(ctx: Booted) -> None:
    """Read new boot-log lines into the current host list."""
    from booted.discovery import hostlist

    result = hostlist.logged(ctx.kit)
    print(f"read {result.lines} new line(s) of {ctx.settings.boot_log}: {len(result.new_events)} boot(s), "
          f"{result.skipped} malformed line(s) skipped, {result.rejected} rejected (not matching what booted "
          f"made); {result.listed} host(s) listed")
    if result.dropped:
        print(f"the boot log is full (BOOTED_BOOT_LOG_MAX={ctx.settings.boot_log_max}): {result.dropped} call(s) "
              "answered but not logged; fab restart_nginx starts a new one")


@booted_task(help=JSON_HELP)
def hosts_filter(ctx: Booted, json_: bool = False) -> None:
    """Keep the listed hosts that answer ping and SSH."""
    from booted.discovery import hostlist

    finish("host check", hostlist.filter_hosts(ctx.kit, ctx.targets), json_)


@booted_task(help=JSON_HELP)
def hosts_list(ctx: Booted, json_: bool = False) -> None:
    """Show the host list: IP, role, service, boot, reachable."""
    from booted.discovery import hostlist

    rows = hostlist.rows(ctx.kit, ctx.networks_of)
    if json_:
        emit_json(rows)
        return
    if not rows:
        print("no hosts listed (fab env_start_all, or fab hosts_logged after hosts booted)")
        return
    placed = any(r["hypervisor"] for r in rows)  # the column only when a lab runs on hypervisors (libvirt)
    print(table(["name", "ip", "env", *(["hypervisor"] if placed else []), "role", "service", "booted at", "reachable"],
                [(r["name"], r["ip"], r["env"], *([r["hypervisor"] or "-"] if placed else []), r["role"],
                  f"{r['service'] or '-'} {r['version'] or ''}".strip(),
                  when(r["booted_at"]),  # type: ignore[arg-type]
                  {True: "yes", False: "no", None: "unchecked"}[r["reachable"]])  # type: ignore[index]
                 for r in rows]))


@booted_task()
def hosts_clear(ctx: Booted) -> None:
    """Empty the current host list (hosts keep running)."""
    from booted.discovery import hostlist

    print(f"cleared {hostlist.clear(ctx.kit)} host(s) from the list")


@booted_task(help=JSON_HELP)
def hosts_reset(ctx: Booted, json_: bool = False) -> None:
    """Rebuild the host list: clear, re-read boot log, filter."""
    from booted.discovery import hostlist

    result, checked = hostlist.reset(ctx.kit, ctx.targets)
    (err if json_ else print)(f"read {result.lines} boot-log line(s): {len(result.new_events)} boot(s), "
                              f"{result.skipped} skipped, {result.rejected} rejected")
    finish("host check", checked, json_)


@booted_task(help={"command": "shell command to run on every host",
                   "hosts": "only these hosts (comma list or range)", "env": "only this environment",
                   "timeout": "seconds each host may take (default 300, or BOOTED_TIMEOUT)", **JSON_HELP})
def hosts_run(ctx: Booted, command: str, hosts: str | None = None, env: str | None = None,
              timeout: int = 0, json_: bool = False) -> None:
    """Run a shell command on the listed hosts in parallel."""
    if not 0 <= timeout <= 86400:  # an int default makes invoke parse --timeout as a number (None: a string)
        raise ConfigError(f"--timeout {timeout}: seconds each host may take, 1..86400")
    targets = ctx.listed_targets(names(hosts), env)
    limit = timeout or ctx.settings.timeout or 300
    with ctx.fleet() as fleet:
        results = fleet.run(targets, lambda t: fleet.sh(t, command), "hosts_run", timeout=limit)
    if json_:  # the command's output as a field of its host: "detail" says ok, as the table does
        emit_json([{**result_row(r), "detail": "ok" if r.ok else r.detail, "output": r.detail if r.ok else None}
                   for r in results])
        failed(results)
        return
    for r in results:
        if r.ok and r.detail:
            print(f"--- {r.host}\n{r.detail}")
    finish(f"ran on {len(results)} host(s): {command}",
           [replace(r, detail="ok") if r.ok else r for r in results])


@booted_task(help={"env": "only this environment"})
def ssh_config(ctx: Booted, env: str | None = None) -> None:
    """Print an OpenSSH config of the hosts (ssh -F)."""
    from booted.hosts import access

    entries, cred = ctx.access(env)
    print(access.ssh_config(entries, cred), end="")


@booted_task(help={"env": "only this environment", "format": "ansible (YAML, the default), pyinfra or json"})
def inventory(ctx: Booted, env: str | None = None, format: str = "ansible") -> None:
    """Print an Ansible, pyinfra or JSON inventory."""
    from booted.hosts import access

    if format not in access.FORMATS:
        raise ConfigError(f"--format {format!r}: one of {', '.join(access.FORMATS)}")
    entries, cred = ctx.access(env)
    print(access.FORMATS[format](entries, cred), end="")


@booted_task(help={"name": "a listed host", "command": "run this instead of an interactive shell",
                   "env": "only this environment"})
def host_ssh(ctx: Booted, name: str, command: str | None = None, env: str | None = None) -> None:
    """Shell on a host (like vagrant ssh) or --command."""
    from booted.hosts import access

    entries, cred = ctx.access(env)
    if name not in {e.name for e in entries}:
        raise ConfigError(f"{name!r} is not in the current host list (see fab hosts_list)")
    config = ctx.settings.state_dir / "ssh_config"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(access.ssh_config(entries, cred))
    ssh = shutil.which("ssh") or "ssh"
    tty = ["-t"] if sys.stdin.isatty() else []
    sys.stdout.flush()
    os.execv(ssh, [ssh, "-F", str(config), *tty, name, *([command] if command else [])])


@booted_task()
def restart_nginx(ctx: Booted) -> None:
    """Restart booted's nginx with a new boot log (old kept)."""
    state, kept = ctx.restart_nginx()
    print(f"nginx {state} on port {ctx.settings.http_port}; boot log {ctx.settings.boot_log}"
          + (f" (previous kept as {kept})" if kept else ""))


TASKS = [hosts_logged, hosts_filter, hosts_list, hosts_clear, hosts_reset, hosts_run, ssh_config, inventory, host_ssh,
         restart_nginx]
