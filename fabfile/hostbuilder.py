"""Host image tasks: golden image, build, clone, delete, list, start, stop, console."""

from __future__ import annotations

import json

from booted import machines
from booted.context import Booted
from booted.errors import ConfigError
from booted.report import table, when
from fabfile._task import booted_task, finish, names

NAME_HELP = {"name": "host name, a comma list or a range like web[01:03]",
             "env": "environment name (default: the image's, BOOTED_ENV, or the only one)"}


def _group(ctx: Booted, name: str | None, env: str | None) -> list[tuple[object, list[str]]]:
    """Resolve names (or the whole environment) into (environment, [host names]) groups."""
    wanted = names(name)
    if not wanted:
        environment = ctx.environment(env)
        return [(environment, [h.name for h in environment.hosts])]
    groups: dict[str, tuple[object, list[str]]] = {}
    for host in wanted:
        environment, _ = machines.image_env(ctx, host, env)
        groups.setdefault(environment.name, (environment, []))[1].append(host)
    return list(groups.values())


@booted_task()
def image_golden(ctx: Booted) -> None:
    """Build the golden Debian image, or show the cached one."""
    image = machines.golden(ctx)
    print(f"golden image {image.key}\n  rootfs {image.rootfs}\n  layer  {image.layer}")


@booted_task(help=NAME_HELP)
def image_build(ctx: Booted, name: str | None = None, env: str | None = None) -> None:
    """Make host images (identity, keys); all when no name."""
    machines.golden(ctx)
    rows = []
    for environment, hosts in _group(ctx, name, env):
        for image in machines.images_for(ctx, environment, hosts):  # type: ignore[arg-type]
            rows.append((image.name, True, f"{image.ip} {image.mac} ({image.role})", None))
    finish("host images", rows)


@booted_task(help={"src": "existing host image", "new": "name of the new image"})
def image_clone(ctx: Booted, src: str, new: str) -> None:
    """Copy a host image (role, service, disk); new identity."""
    image = machines.clone_image(ctx, src, new)
    print(f"cloned {src} -> {new}: {image.ip} {image.mac} (start it with: fab image_start {new})")


@booted_task(help=NAME_HELP)
def image_del(ctx: Booted, name: str, env: str | None = None) -> None:
    """Delete host images; their IP and MAC return to the pool."""
    outcomes = [machines.delete_image(ctx, n, env) for n in names(name) or []]
    finish("deleted host images", [(o.host, o.ok, o.detail, None) for o in outcomes])


@booted_task(help={"env": "only this environment", "json": "print JSON instead of a table"})
def image_list(ctx: Booted, env: str | None = None, json_: bool = False) -> None:
    """List host images: identity, role, service, running."""
    images = ctx.inventory.images(env)
    running: set[str] = set()
    for name in {i.env for i in images} & set(ctx.environments):
        environment = ctx.environments[name]
        running |= set(ctx.provider(environment).running(ctx.lab(environment)))
    rows = [{"name": i.name, "env": i.env, "provider": i.provider, "ip": i.ip, "mac": i.mac, "role": i.role,
             "service": i.service, "version": i.version, "running": i.name in running,
             "created": when(i.created)} for i in images]
    if json_:
        print(json.dumps(rows, indent=2))
        return
    print(table(["name", "env", "provider", "ip", "mac", "role", "service", "running", "created"],
                [(r["name"], r["env"], r["provider"], r["ip"], r["mac"], r["role"],
                  f"{r['service'] or '-'} {r['version'] or ''}".strip(), "yes" if r["running"] else "no",
                  r["created"]) for r in rows]) if rows else "no host images (fab image_build or fab env_start_all)")


@booted_task(help=NAME_HELP)
def image_start(ctx: Booted, name: str, env: str | None = None) -> None:
    """Start host images; wait until they phone home and SSH."""
    rows = []
    for environment, hosts in _group(ctx, name, env):
        images = machines.images_for(ctx, environment, hosts)  # type: ignore[arg-type]
        rows += [(o.host, o.ok, o.detail, None) for o in machines.start_images(ctx, environment, images)]
    finish("started host images", rows)


@booted_task(help=NAME_HELP)
def image_stop(ctx: Booted, name: str, env: str | None = None) -> None:
    """Stop host images: no process, namespace or VM is left."""
    rows = []
    for environment, hosts in _group(ctx, name, env):
        rows += [(o.host, o.ok, o.detail, None) for o in machines.stop_images(ctx, environment, hosts)]
    finish("stopped host images", rows)


@booted_task(help={"name": "host name", "lines": "how many lines from the end (default 40)"})
def image_console(ctx: Booted, name: str, lines: int = 40) -> None:
    """Show the end of a host's console log (boot output)."""
    environment, _ = machines.image_env(ctx, name)
    path = ctx.lab(environment).host_dir(name) / "console.log"
    if not path.exists():
        raise ConfigError(f"{name} has no console log yet at {path}: start it with fab image_start {name}")
    print("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


TASKS = [image_golden, image_build, image_clone, image_del, image_list, image_start, image_stop, image_console]
