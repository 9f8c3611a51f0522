"""Host images: one lab host's machine (identity + disk). Build, start, wait for boot, stop, clone, delete."""

from __future__ import annotations

import base64
import hashlib
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from booted import bootlog
from booted.context import Booted
from booted.environments import Environment, HostSpec
from booted.errors import BootedError, ConfigError, StateError
from booted.fanout import Target
from booted.identity import Identity, hash_password
from booted.image import GoldenImage, build_golden, find_golden
from booted.inventory import Image
from booted.netcheck import ssh_banner
from booted.nginx import Nginx, local_addresses
from booted.services import get_service


def fingerprint(pub: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line (what a host reports in its boot URL)."""
    blob = base64.b64decode(pub.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def golden(ctx: Booted) -> GoldenImage:
    """The golden image, built on first use (about a minute), then reused from the cache."""
    return find_golden(ctx.settings.cache_dir) or build_golden(ctx.settings.cache_dir, ctx.say)


def ensure_image(ctx: Booted, env: Environment, spec: HostSpec) -> Image:
    """The host image for `spec`, leased on first use; follows role/service/version changes."""
    image = ctx.inventory.image(spec.name)
    if image is None:
        hostkey = ctx.keys.ensure_host_key(spec.name)
        image = ctx.inventory.lease(name=spec.name, env=env.name, provider=env.provider, network=env.network,
                                    role=spec.role, service=spec.service, version=spec.version, hostkey=hostkey,
                                    memory=spec.memory, cpus=spec.cpus)
        return image  # its key is pinned by start_images, before anything connects
    if image.env != env.name:
        raise StateError(f"host image {spec.name!r} belongs to environment {image.env!r}, not {env.name!r}: "
                         "host names are unique per state directory; rename one of them")
    if (image.provider, image.role, image.service, image.version, image.memory, image.cpus) != (
            env.provider, spec.role, spec.service, spec.version, spec.memory, spec.cpus):
        ctx.inventory.update_spec(spec.name, env.provider, spec.role, spec.service, spec.version, spec.memory,
                                  spec.cpus)
        image = ctx.inventory.image(spec.name)
        assert image is not None
    return image


def images_for(ctx: Booted, env: Environment, names: list[str]) -> list[Image]:
    """Host images for names: from environments.py (made on first use), or existing clones not in it."""
    desired = {h.name: h for h in env.hosts}
    out = []
    for name in names:
        image = ctx.inventory.image(name)
        if name in desired or image is None:
            image = ensure_image(ctx, env, desired.get(name) or env.host(name))
        out.append(image)
    return out


def endpoints(ctx: Booted, image: Image) -> dict[int, tuple[str, int]]:
    """Where the controller reaches this host's ports when not at its lab IP (user-mode VMs)."""
    env = ctx.environments.get(image.env)
    return ctx.provider(env).endpoints(ctx.lab(env), image.name) if env else {}


def target(ctx: Booted, name: str, ip: str, images: dict[str, Image] | None = None) -> Target:
    """A fan-out target for a listed host, with its forwarded ports if it has any."""
    image = (images or {}).get(name) or ctx.inventory.image(name)
    fwd = endpoints(ctx, image) if image else {}
    return Target(name, ip, tuple((g, a, p) for g, (a, p) in sorted(fwd.items())))


def write_known_hosts(ctx: Booted) -> None:
    """Pin every host key: at the lab IP, and at [addr]:port where a host's SSH is forwarded."""
    pins = []
    for image in ctx.inventory.images():
        pins.append((image.ip, image.hostkey))
        if 22 in (fwd := endpoints(ctx, image)):
            pins.append((f"[{fwd[22][0]}]:{fwd[22][1]}", image.hostkey))
    ctx.keys.write_known_hosts(pins)


def image_env(ctx: Booted, name: str, env_name: str | None = None) -> tuple[Environment, Image | None]:
    """The environment a host image belongs to (from state, else from environments.py)."""
    image = ctx.inventory.image(name)
    if image is not None:
        if image.env not in ctx.environments:
            raise ConfigError(f"host image {name!r} belongs to environment {image.env!r}, which "
                              f"{ctx.settings.environments_file} no longer defines; delete it with "
                              f"'fab image_del {name}'")
        return ctx.environments[image.env], image
    if env_name or ctx.settings.env_name or len(ctx.environments) == 1:
        env = ctx.environment(env_name)
        env.host(name)  # raises with the list of hosts
        return env, None
    owners = [e for e in ctx.environments.values() if name in {h.name for h in e.hosts}]
    if len(owners) != 1:
        raise ConfigError(f"host {name!r} is defined in {len(owners)} environments: pick one with --env NAME")
    return owners[0], None


def identity(ctx: Booted, env: Environment, image: Image) -> Identity:
    settings = ctx.settings
    return Identity(
        name=image.name, ip=image.ip, prefix=env.network.prefixlen, gateway=str(env.gateway), mac=image.mac,
        boot_url=f"http://{env.gateway}:{settings.http_port}/booted", login_user=settings.user,
        pw_hash=hash_password(settings.password) if settings.password else None,
        host_key=ctx.keys.host_key(image.name), authorized_key=ctx.keys.ensure_lab_key(),
        memory=image.memory, cpus=image.cpus, ports=_service_ports(ctx, image))


def _service_ports(ctx: Booted, image: Image) -> tuple[int, ...]:
    if not image.service:
        return ()
    try:
        return (get_service(ctx.settings.services_dir, image.service).port,)
    except BootedError:
        return ()  # an unknown or broken service fails at deploy, with its own message


@dataclass(frozen=True)
class Outcome:
    """Per-host result of a host-level operation."""

    host: str
    ok: bool
    detail: str


def ensure_nginx(ctx: Booted, keep: bool = False) -> str:
    """Run booted's nginx where the labs that are up call it (their gateways; loopback for user-mode VMs).
    With no lab left it stops (nothing is left running after env_stop), unless `keep`: then it listens on
    loopback only."""
    gateways = {a for e in ctx.environments.values() for a in ctx.provider(e).listen_addresses(ctx.lab(e))}
    gateways &= local_addresses() | {"127.0.0.1"}
    nginx = Nginx(ctx.settings)
    if not gateways and not keep:
        return "stopped" if nginx.stop() else "not running"
    return nginx.ensure(sorted(gateways))


def start_images(ctx: Booted, env: Environment, images: list[Image]) -> list[Outcome]:
    """Start host images (already-running ones are left as they are) and wait until each has booted:
    phoned home in the boot log with its pinned host key, and answers SSH."""
    if not images:
        return []
    provider = ctx.provider(env)
    lab = ctx.lab(env)
    provider.check(lab)
    image = golden(ctx)
    since = time.time()
    already = provider.running(lab)
    idents = [identity(ctx, env, i) for i in images]
    ctx.say(f"starting {len(images)} host(s) of {env.name} on {env.provider} ({len(already)} already running)")
    provider.prepare_network(lab)  # network and nginx on its gateway first: hosts phone home while booting
    ensure_nginx(ctx)
    started, errors = provider.start(lab, image, idents, ctx.say)
    for s in started:
        ctx.inventory.set_running(s.name, s.pid)
    write_known_hosts(ctx)  # forwarded SSH ports (user-mode VMs) are known once the VMs run
    fresh = [i for i in images if i.name not in already and i.name not in errors]
    waited = wait_booted(ctx, env, fresh, since)
    outcomes = []
    listed = {h.name for h in ctx.inventory.hosts()}
    for img in images:
        if img.name in errors:
            outcomes.append(Outcome(img.name, False, errors[img.name]))
        elif img.name in already and img.name not in listed:
            outcomes.append(_relist(ctx, img))
        elif img.name in already:
            outcomes.append(Outcome(img.name, True, "already running"))
        else:
            outcomes.append(waited[img.name])
    return outcomes


def _relist(ctx: Booted, img: Image) -> Outcome:
    """A host that runs but is not in the host list (cleared, or booted before the current boot log):
    list it again from its pinned identity if it answers SSH (connections still verify its host key)."""
    addr, port = target(ctx, img.name, img.ip).endpoint(22)
    if not ssh_banner(addr, port=port):
        return Outcome(img.name, False, "running but SSH does not answer: fab env_start_worker " + img.name)
    ctx.inventory.list_host(img.name, img.ip, img.mac, fingerprint(img.hostkey), img.started or time.time())
    return Outcome(img.name, True, "already running (listed again)")


def _console_tail(ctx: Booted, env: Environment, name: str, lines: int = 3) -> str:
    path = ctx.lab(env).host_dir(name) / "console.log"
    try:
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | console: " + " / ".join(tail) if tail else ""


def wait_booted(ctx: Booted, env: Environment, images: list[Image], since: float) -> dict[str, Outcome]:
    """Poll the boot log until every image phoned home after `since`, then check its SSH banner."""
    timeout = ctx.settings.boot_timeout
    pending = {i.name: i for i in images}
    result: dict[str, Outcome] = {}
    deadline = time.monotonic() + timeout
    shown = -1
    while pending and time.monotonic() < deadline:
        bootlog.read_new(ctx.inventory, ctx.settings.boot_log)
        booted = {h.name: h for h in ctx.inventory.hosts() if h.booted_at >= since - 1}
        for name in [n for n in pending if n in booted]:
            img, host = pending.pop(name), booted[name]
            if host.hostkey != fingerprint(img.hostkey):
                result[name] = Outcome(name, False, f"reported host key {host.hostkey} is not the pinned one")
            elif host.ip != img.ip:
                result[name] = Outcome(name, False, f"phoned home from {host.ip}, expected {img.ip}")
            else:
                result[name] = Outcome(name, True, f"booted in {host.booted_at - since:.1f}s")
        if len(result) != shown:
            shown = len(result)
            ctx.say(f"  discovered {len(result)}/{len(images)} host(s)")
        if pending:
            time.sleep(0.1)
    for name in pending:
        result[name] = Outcome(name, False, f"no boot-log line within {timeout}s{_console_tail(ctx, env, name)}")
    ok = [n for n, o in result.items() if o.ok]
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(ok)))) as pool:
        ssh = {i.name: target(ctx, i.name, i.ip).endpoint(22) for i in images if i.name in ok}
        banners = dict(zip(ok, pool.map(lambda n: _wait_banner(*ssh[n], deadline), ok)))
    for name, up in banners.items():
        if not up:
            result[name] = Outcome(name, False, f"phoned home but SSH does not answer{_console_tail(ctx, env, name)}")
    ctx.inventory.set_reachable({n: o.ok for n, o in result.items() if n in banners})
    return result


def _wait_banner(addr: str, port: int, deadline: float) -> bool:
    while True:
        if ssh_banner(addr, 1.0, port):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def stop_images(ctx: Booted, env: Environment, names: list[str]) -> list[Outcome]:
    """Stop hosts; stopped hosts leave the current host list. Removes the lab network when none runs."""
    provider = ctx.provider(env)
    lab = ctx.lab(env)
    provider.check(lab)
    running = provider.running(lab)
    errors = provider.stop(lab, names)
    for name in names:
        if name not in errors:
            ctx.inventory.set_running(name, None)
    ctx.inventory.remove_hosts([n for n in names if n not in errors])
    provider.teardown(lab)
    ensure_nginx(ctx)  # stop listening on a gateway that is gone
    return [Outcome(n, n not in errors, errors.get(n, "stopped" if n in running else "was not running"))
            for n in names]


def delete_image(ctx: Booted, name: str, env_name: str | None = None) -> Outcome:
    """Stop and delete a host image; its IP and MAC go back to the pool (also for an image whose
    environment was removed from environments.py: then only its state and files are removed)."""
    orphan = ctx.inventory.image(name)
    if orphan is not None and orphan.env not in ctx.environments:
        shutil.rmtree(ctx.settings.state_dir / "labs" / orphan.env / "hosts" / name, ignore_errors=True)
        image: Image | None = orphan
    else:
        env, image = image_env(ctx, name, env_name)
        if image is None:
            return Outcome(name, True, "no such image (nothing to delete)")
        provider = ctx.provider(env)
        lab = ctx.lab(env)
        if name in provider.running(lab):
            stop_images(ctx, env, [name])
        provider.destroy(lab, name)
    assert image is not None
    ctx.inventory.release_image(name)
    ctx.keys.drop_host_key(name)
    write_known_hosts(ctx)
    return Outcome(name, True, f"deleted; {image.ip} and {image.mac} released")


def clone_image(ctx: Booted, src: str, new: str) -> Image:
    """A new host image like `src` (role, service, version, disk contents) with a fresh identity."""
    from booted.environments import NAME_RE

    if not NAME_RE.match(new):
        raise ConfigError(f"image name {new!r}: use lowercase letters, digits and -, starting with a letter")
    env, image = image_env(ctx, src)
    if image is None:
        raise StateError(f"host image {src!r} does not exist yet: build it first with 'fab image_build {src}'")
    if ctx.inventory.image(new) is not None:
        raise StateError(f"host image {new!r} already exists: pick another name or 'fab image_del {new}'")
    spec = HostSpec(new, image.role, image.service, image.version, image.memory, image.cpus)
    clone = ensure_image(ctx, env, spec)
    ctx.provider(env).clone(ctx.lab(env), src, new)
    return clone
