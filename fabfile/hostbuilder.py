"""Host image tasks: golden image, build, clone, delete, list, start, stop, console."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from booted.errors import ConfigError
from booted.report import table, when
from booted.results import HostResult
from fabfile._task import JSON_HELP, booted_task, emit_json, finish, names

if TYPE_CHECKING:
    from booted.context import Booted

NAME_HELP = {"name": "host name, a comma list or a range like web[01:03]",
             "env": "environment name (default: the image's, BOOTED_ENV, or the only one)"}


@booted_task(help={"refresh": "build a new generation now from the mirrors' current packages (the older one "
                           "stays until no host uses it)"})
def image_golden(ctx: Booted, refresh: bool = False) -> None:
    """Build the golden Debian image, or show the cached one."""
    from booted.images import golden

    image = ctx.golden(refresh)
    print("\n".join(golden.describe(ctx.settings, image)))


@booted_task(help={**NAME_HELP, "installer": "preseed (Debian's installer) or kickstart (RHEL 9 family, --iso)",
                   "timeout": "seconds an install may take (default 3600)",
                   "iso": "the installer ISO to boot (kickstart: a Rocky/Alma 9 DVD; preseed: optional)", **JSON_HELP})
def image_build(ctx: Booted, name: str | None = None, env: str | None = None, installer: str | None = None,
                timeout: int = 3600, iso: str | None = None, json_: bool = False) -> None:
    """Make host images (identity, keys); all when no name."""
    from booted.lab import install

    if installer is not None:  # Debian's installer and booted's preseed, onto the host's own disk
        if not name:
            raise ConfigError("--installer needs the host(s) to install: fab image_build NAME --installer preseed")
        media = Path(iso).resolve() if iso else None
        finish("installs", [install.install(ctx.lab_of(n, env), n, installer, timeout, media)
                           for n in names(name)], json_)
        return
    if iso is not None:
        raise ConfigError("--iso goes with --installer: fab image_build NAME --installer kickstart --iso PATH")
    groups = ctx.group(names(name), env)
    ctx.golden()
    finish("host images", [HostResult(i.name, True, f"{i.ip} {i.mac} ({i.role})")
                           for lab, hosts in groups for i in lab.images(hosts)], json_)


@booted_task(help={"name": "host name", "kind": "kickstart (RHEL 9 family installers) or preseed (Debian 12)",
                   "env": NAME_HELP["env"]})
def image_installer(ctx: Booted, name: str, kind: str = "preseed", env: str | None = None) -> None:
    """Serve a host's checked kickstart or preseed; show its URL."""
    from booted.lab import install

    rendered = install.installer(ctx.lab_of(name, env), name, kind)
    arg = "inst.ks" if kind == "kickstart" else "auto=true priority=critical url"
    print(f"{kind} for {name}: {rendered.url} (checked; setup script {rendered.setup_url})\n"
          f"installer command line: {arg}={rendered.url}\n"
          "the installed host takes its identity from its seed disk (booted attaches it) and phones home")


@booted_task(help={"src": "existing host image", "new": "name of the new image", "env": NAME_HELP["env"]})
def image_clone(ctx: Booted, src: str, new: str, env: str | None = None) -> None:
    """Copy a host image (role, service, disk); new identity."""
    image = ctx.lab_of(src, env).clone(src, new)
    print(f"cloned {src} -> {new}: {image.ip} {image.mac} (start it with: fab image_start {new})")


@booted_task(help={**NAME_HELP, **JSON_HELP})
def image_del(ctx: Booted, name: str, env: str | None = None, json_: bool = False) -> None:
    """Delete host images; their IP and MAC return to the pool."""
    finish("deleted host images", [ctx.delete_image(n, env) for n in names(name) or []], json_)


@booted_task(help={"env": "only this environment", **JSON_HELP})
def image_list(ctx: Booted, env: str | None = None, json_: bool = False) -> None:
    """List host images: identity, role, service, running."""
    rows = [{**r, "created": when(r["created"])} for r in ctx.image_rows(env)]  # type: ignore[arg-type]
    if json_:
        emit_json(rows)
        return
    if not rows:
        print("no host images (fab image_build or fab env_start_all)")
        return
    placed = any(r["hypervisor"] for r in rows)  # the column only when a lab runs on hypervisors (libvirt)
    print(table(["name", "env", "provider", *(["hypervisor"] if placed else []), "ip", "mac", "role", "service",
                 "running", "created"],
                [(r["name"], r["env"], r["provider"], *([r["hypervisor"] or "-"] if placed else []), r["ip"], r["mac"],
                  r["role"], f"{r['service'] or '-'} {r['version'] or ''}".strip(), "yes" if r["running"] else "no",
                  r["created"]) for r in rows]))


@booted_task(help={**NAME_HELP, **JSON_HELP})
def image_start(ctx: Booted, name: str, env: str | None = None, json_: bool = False) -> None:
    """Start host images; wait until they phone home and SSH."""
    finish("started host images", [r for lab, hosts in ctx.group(names(name), env)
                                   for r in lab.start(lab.images(hosts))], json_)


@booted_task(help={**NAME_HELP, **JSON_HELP})
def image_stop(ctx: Booted, name: str, env: str | None = None, json_: bool = False) -> None:
    """Stop host images: no process, namespace or VM is left."""
    finish("stopped host images", [r for lab, hosts in ctx.group(names(name), env) for r in lab.stop(hosts)],
           json_)


@booted_task(help={"name": "host name", "lines": "how many lines from the end (default 40)", "env": NAME_HELP["env"]})
def image_console(ctx: Booted, name: str, lines: int = 40, env: str | None = None) -> None:
    """Show the end of a host's console log (boot output)."""
    path = ctx.lab_of(name, env).console(name)
    if not path.exists():
        raise ConfigError(f"{name} has no console log yet at {path}: start it with fab image_start {name}")
    print("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


TASKS = [image_golden, image_build, image_clone, image_del, image_list, image_start, image_stop, image_console,
         image_installer]
