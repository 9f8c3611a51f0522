"""The lab handle: one environment on this machine (environment + lab + provider, checked once).

It owns what is done to that lab: host images, start (boot + discovery), stop, destroy, status, and the
whole-environment runs (start all / min / one worker: boot, then deliver each service). Tasks and the
monitor call it; nothing else reaches a provider.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from booted.config import Settings
from booted.discovery.netcheck import ssh_banner
from booted.discovery.wait import Expected, wait_booted
from booted.environments import Environment, HostSpec
from booted.errors import ConfigError, ProviderError, StateError
from booted.hosts.identity import Identity, fingerprint, hash_password
from booted.hosts.images import ensure_image, identity
from booted.images.golden import default_mirror
from booted.images.installer import Rendered
from booted.images.installer import publish as publish_installer
from booted.images.isoboot import boot_files
from booted.images.netboot import ensure_netboot
from booted.lab.preflight import preflight
from booted.lab.status import status_rows
from booted.providers.base import InstallMedia, Lab, Provider
from booted.remote import deploy, firstboot
from booted.results import HostResult
from booted.rules import HOST_NAME
from booted.state import pins
from booted.state.inventory import Image

if TYPE_CHECKING:
    from booted.context import Booted

STEPS = ("boot", *deploy.DELIVER)
SYSTEMD_PACKAGES = ("systemd-sysv", "dbus")  # what "init": "systemd" adds to the golden image


@dataclass
class StartReport:
    """An environment run: each host's image, and its result of each step it reached."""

    images: list[Image]
    steps: dict[str, dict[str, HostResult]] = field(default_factory=dict)

    def add(self, step: str, results: list[HostResult]) -> None:
        self.steps.setdefault(step, {}).update({r.host: r for r in results})

    def failed(self) -> list[str]:
        return [i.name for i in self.images if any(not s[i.name].ok for s in self.steps.values() if i.name in s)]


F = TypeVar("F", bound=Callable[..., Any])


def _locked(what: str) -> Callable[[F], F]:
    """Run the method under the lab's lifecycle lock ("another booted run (pid N) is starting lab 'x'")."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(self: LabHandle, *args: Any, **kwargs: Any) -> Any:
            with self._lifecycle(what):
                return fn(self, *args, **kwargs)
        return cast(F, inner)
    return wrap


class LabHandle:
    def __init__(self, ctx: Booted, env: Environment, provider: Callable[[Settings], Provider]) -> None:
        s = ctx.settings
        self.ctx, self.env = ctx, env
        self.lab = Lab(env.name, s.lab_id(env.name), env.network, s.state_dir / "labs" / env.name, init=env.init,
                       boot=env.boot, hypervisors=env.hypervisors, uplink=env.uplink)
        self.provider = provider(s)
        self._checked = False
        self._held = 0  # depth of this handle's lab lock (start_worker -> stop + start_hosts -> start)

    @contextmanager
    def _lifecycle(self, what: str) -> Iterator[None]:
        """One lifecycle operation per lab at a time, across runs and the monitor (re-entrant here)."""
        if self._held:
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
            return
        with self.ctx.locks.lab(self.env.name, what):
            self._held = 1
            try:
                yield
            finally:
                self._held = 0

    def check(self) -> None:
        """Can this machine run the lab (tools, root)? Asked once per handle, before anything is made."""
        if not self._checked:
            self.provider.check(self.lab)
            self._checked = True

    def validate(self, specs: list[HostSpec]) -> None:
        """What input decides, checked before any host is touched (lab/preflight.py): ConfigError, exit 2."""
        preflight(self.ctx, self.env, self.lab.bridge, specs)

    # observing (no root needed) ----------------------------------------------------------------------
    def running(self) -> dict[str, int]:
        return self.provider.running(self.lab)

    def endpoints(self, name: str) -> dict[int, tuple[str, int]]:
        return self.provider.endpoints(self.lab, name)

    def listen_addresses(self) -> list[str]:
        return self.provider.listen_addresses(self.lab)

    def console(self, name: str) -> Path:
        return self.provider.console(self.lab, name)

    def console_tail(self, name: str, lines: int = 3) -> str:
        try:
            tail = self.console(name).read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return " | console: " + " / ".join(tail) if tail else ""

    def status(self) -> list[dict[str, object]]:
        """Desired (environments.py) vs actual (provider, host list, deployments), one dict per host."""
        inv = self.ctx.inventory
        running, images = self.running(), inv.images(self.env.name)
        with self.ctx.fleet() as fleet:
            answers = fleet.answers([self.ctx.target(i) for i in images if i.name in running])
        return status_rows(self.env, running, images, inv.hosts(), inv.releases(), pins.pins(inv), answers)

    def packages(self) -> tuple[str, ...]:
        """The extra Debian packages of this lab's golden image: the environment's and its services'."""
        services = self.ctx.services
        wanted = set(self.env.packages) | (set(SYSTEMD_PACKAGES) if self.env.init == "systemd" else set())
        for spec in self.env.hosts:
            if spec.service in services:
                wanted |= set(services[spec.service].packages)
        return tuple(sorted(wanted))

    # host images -----------------------------------------------------------------------------------
    def images(self, names: list[str]) -> list[Image]:
        """Host images for names: from environments.py (made on first use), or existing clones not in it."""
        desired = {h.name: h for h in self.env.hosts}
        out = []
        for name in names:
            image = self.ctx.inventory.image(name)
            if name in desired or image is None:
                image = ensure_image(self.ctx.inventory, self.ctx.keys, self.env,
                                     desired.get(name) or self.env.host(name))
            out.append(image)
        return out

    def installer(self, name: str, kind: str) -> Rendered:
        """A host's kickstart or preseed file (and its setup script), validated and served by booted's nginx."""
        return self._installer(self.images([name])[0], kind)[0]

    def _installer(self, image: Image, kind: str) -> tuple[Rendered, Identity]:
        settings = self.ctx.settings
        pw_hash = hash_password(settings.password, settings.path) if settings.password else None
        ident = identity(settings, self.ctx.keys, self.env, image, pw_hash, (), "")
        rendered = publish_installer(settings, kind, ident, self.env.name, settings.mirror or default_mirror())
        self.ctx.serve_gateways(keep=True)
        return rendered, ident

    @_locked("installing a host of")
    def install(self, name: str, kind: str, timeout: float, iso: Path | None = None) -> HostResult:
        """Install a host with an OS installer onto its own disk: Debian's (netboot kernel and initrd from
        Debian's package, or a Debian ISO's) with booted's preseed, or a RHEL-family ISO's with booted's
        kickstart; the file comes from booted's nginx, Debian packages through the lab's apt proxy."""
        if kind not in ("preseed", "kickstart"):
            raise ConfigError(f"--installer {kind!r}: preseed (Debian 12) or kickstart (RHEL 9 family, with --iso)")
        if kind == "kickstart" and iso is None:
            raise ConfigError("--installer kickstart needs the installer ISO: --iso PATH (a Rocky or Alma 9 DVD: the "
                              "installer takes its packages from it)")
        self.check()
        try:
            self.provider.check_install()
        except ConfigError as exc:
            raise ConfigError(f"{self.env.source}: environment {self.env.name!r}: {exc}") from None
        if name in self.running():
            raise StateError(f"{name} is running: stop it first (fab image_stop {name})")
        image = self.images([name])[0]
        settings = self.ctx.settings
        if iso is not None:  # checked (and its kernel taken out) before anything is started
            kernel, initrd = boot_files(iso, kind, self.lab.host_dir(name) / "installer", settings.path)
            source = f"{iso.name}'s installer"
        try:
            self.provider.prepare_network(self.lab)
            rendered, ident = self._installer(image, kind)
            if iso is None:
                netboot = ensure_netboot(settings.cache_dir, self.ctx.say, settings.path)
                kernel, initrd, source = netboot.linux, netboot.initrd, f"Debian's installer {netboot.version}"
            media = InstallMedia(kernel, initrd, self._append(image, kind, rendered), iso)
            self.ctx.say(f"installing {name} with {source}: {kind} {rendered.url}")
            return HostResult(name, *self.provider.install(self.lab, ident, media, timeout, self.ctx.say))
        finally:
            self.provider.teardown(self.lab)
            self.ctx.serve_gateways()

    def _append(self, image: Image, kind: str, rendered: Rendered) -> str:
        """The installer's command line: where its file is, and the host's static lab address."""
        net, gw, name = self.env.network, self.env.gateway, image.name
        if kind == "kickstart":  # dracut: the NIC with the host's MAC is named "lab" and gets its address
            return (f"inst.ks={rendered.url} inst.repo=cdrom inst.text ifname=lab:{image.mac} "
                    f"ip={image.ip}::{gw}:{net.netmask}:{name}:lab:none nameserver={gw} console=ttyS0")
        return (f"auto=true priority=critical url={rendered.url} interface=auto netcfg/disable_autoconfig=true "
                f"netcfg/get_ipaddress={image.ip} netcfg/get_netmask={net.netmask} netcfg/get_gateway={gw} "
                f"netcfg/get_nameservers={gw} netcfg/confirm_static=true hostname={name} domain=lab "
                "locale=en_US.UTF-8 keymap=us console=ttyS0 DEBIAN_FRONTEND=text")

    @_locked("cloning a host in")
    def clone(self, src: str, new: str) -> Image:
        """A new host image like `src` (role, service, version, disk contents) with a fresh identity."""
        if not HOST_NAME.match(new):
            raise ConfigError(f"image name {new!r}: use lowercase letters, digits and -, starting with a letter, "
                              "at most 31 characters")
        image = self.ctx.inventory.image(src)
        if image is None:
            raise StateError(f"host image {src!r} does not exist yet: build it first with 'fab image_build {src}'")
        if self.ctx.inventory.image(new) is not None:
            raise StateError(f"host image {new!r} already exists: pick another name or 'fab image_del {new}'")
        self.check()
        spec = HostSpec(new, image.role, image.service, image.version, image.memory, image.cpus)
        clone = ensure_image(self.ctx.inventory, self.ctx.keys, self.env, spec)
        self.provider.clone(self.lab, src, new)
        if image.hypervisor:  # the copy of its disk is where the source's is
            self.ctx.inventory.set_hypervisors({new: image.hypervisor})
        return clone

    @_locked("deleting a host of")
    def delete(self, name: str) -> HostResult:
        """Stop and delete a host image; its IP and MAC go back to the pool."""
        image = self.ctx.inventory.image(name)
        if image is None:
            return HostResult(name, True, "no such image (nothing to delete)")
        self.check()
        if name in self.running():
            self.stop([name])
        self.provider.destroy(self.lab, name)
        self.ctx.forget_image(name)
        return HostResult(name, True, f"deleted; {image.ip} and {image.mac} released")

    # lifecycle -------------------------------------------------------------------------------------
    def start(self, images: list[Image]) -> list[HostResult]:
        """Start host images (running ones are left as they are) and wait until each has booted: phoned
        home in the boot log with its pinned host key, and answers SSH."""
        return self._start(images, serve=False)[0]

    @_locked("starting hosts of")
    def _start(self, images: list[Image], serve: bool) -> tuple[list[HostResult], dict[str, firstboot.Serve]]:
        """start(); with `serve`, each fresh host that runs a service starts it at boot, before it phones
        home (remote/firstboot.py): also returns what each was told to serve."""
        served: dict[str, firstboot.Serve] = {}
        if not images:
            return [], served
        self.validate([])
        self.check()
        since = time.time()
        already = self.running()
        settings = self.ctx.settings
        pw_hash = hash_password(settings.password, settings.path) if settings.password else None  # once per run
        services = self.ctx.services
        tokens = {i.name: (i.boot_token or "") if i.name in already else secrets.token_hex(16) for i in images}
        for name, token in tokens.items():
            if name not in already:
                self.ctx.inventory.set_boot_token(name, token)  # a new boot: lines of earlier ones are void
        self.ctx.say(f"starting {len(images)} host(s) of {self.env.name} on {self.env.provider} "
                     f"({len(already)} already running)")
        self.provider.prepare_network(self.lab)  # network and nginx first: hosts phone home while booting
        self.ctx.serve_gateways()
        fresh_names = {i.name for i in images if i.name not in already}
        if serve:
            served = firstboot.prepare(self.ctx, self.env, [i for i in images if i.name in fresh_names],
                                       set(already) | fresh_names)
        idents = [identity(self.ctx.settings, self.ctx.keys, self.env, i, pw_hash,
                           (services[i.service].port,) if i.service in services else (), tokens[i.name],
                           *((served[i.name].script, served[i.name].release) if i.name in served else ()))
                  for i in images]
        lab = replace(self.lab, packages=self.packages())
        idents, errors = self._place(images, idents)
        started, failed = self.provider.start(lab, idents, self.ctx.say)
        errors.update(failed)
        for s in started:
            self.ctx.inventory.set_running(s.name, s.pid)
        self.ctx.inventory.set_held([s.name for s in started], False)
        self.ctx.pin_host_keys()  # forwarded SSH ports (user-mode VMs) are known once the VMs run
        fresh = [i for i in images if i.name not in already and i.name not in errors]
        expected = [Expected(i.name, self.ctx.target(i).endpoint(22)) for i in fresh]
        waited = wait_booted(self.ctx.inventory, self.ctx.settings.boot_log, expected, since,
                             self.ctx.settings.boot_timeout, self.ctx.say, self.console_tail)
        listed = {h.name for h in self.ctx.inventory.hosts()}
        out = []
        for img in images:
            if img.name in errors:
                out.append(HostResult(img.name, False, errors[img.name]))
            elif img.name in already:
                out.append(HostResult(img.name, True, "already running") if img.name in listed else self.relist(img))
            else:
                out.append(waited[img.name])
        return out, served

    def _place(self, images: list[Image], idents: list[Identity]) -> tuple[list[Identity], dict[str, str]]:
        """Hosts on hypervisors (libvirt; other providers place nothing): where they were before (their disk
        is there), their pin in environments.py, or the provider's choice; recorded before they start."""
        specs = {h.name: h for h in self.env.hosts}
        recorded = {i.name: i.hypervisor for i in images if i.hypervisor}
        pins = {i.name: specs[i.name].hypervisor for i in images if i.name in specs and specs[i.name].hypervisor}
        placement, errors = self.provider.place(self.lab, idents, recorded, pins)
        if not placement:
            return [i for i in idents if i.name not in errors], errors
        self.ctx.inventory.set_hypervisors({n: hv for n, hv in placement.items() if recorded.get(n) != hv})
        return [replace(i, hypervisor=placement[i.name]) for i in idents if i.name in placement], errors

    def relist_unlisted(self, service: str) -> list[HostResult]:
        """Hosts of `service` that run but are not in the host list (a run killed between a boot and its
        listing): listed again, or a failed result saying why; a service task never skips them silently."""
        listed = {h.name for h in self.ctx.inventory.hosts()}
        running = self.running()
        return [self.relist(i) for i in self.ctx.inventory.images(self.env.name)
                if i.service == service and i.name in running and i.name not in listed]

    def relist(self, img: Image) -> HostResult:
        """A host that runs but is not in the host list (cleared, or booted before the current boot log):
        list it again from its pinned identity if it answers SSH (connections still verify its host key)."""
        addr, port = self.ctx.target(img).endpoint(22)
        if not ssh_banner(addr, port=port):
            return HostResult(img.name, False, "running but SSH does not answer: fab env_start_worker " + img.name)
        self.ctx.inventory.list_host(img.name, img.ip, img.mac, fingerprint(img.hostkey), img.started or time.time())
        return HostResult(img.name, True, "already running (listed again)")

    @_locked("stopping hosts of")
    def stop(self, names: list[str], by_user: bool = True) -> list[HostResult]:
        """Stop hosts; stopped hosts leave the host list. Removes the lab network when none runs. A user's
        stop is remembered: the monitor does not start those hosts again (a start by anyone clears it)."""
        self.check()
        if by_user:
            self.ctx.inventory.set_held(names, True)
        running = self.running()
        errors = self.provider.stop(self.lab, names)
        stopped = [n for n in names if n not in errors]
        for name in stopped:
            self.ctx.inventory.set_running(name, None)
        self.ctx.inventory.remove_hosts(stopped)
        self.provider.teardown(self.lab)
        self.ctx.serve_gateways()  # stop listening on a gateway that is gone
        return [HostResult(n, n not in errors, errors.get(n, "stopped" if n in running else "was not running"))
                for n in names]

    @_locked("stopping")
    def stop_all(self) -> list[HostResult]:
        """Stop every host (clones included), discard their disks (overlay, qcow2) and remove the network.
        Identities (IP, MAC, host key) stay leased until image_del."""
        self.check()
        images = self.ctx.inventory.images(self.env.name)
        names = sorted(set(self.running()) | {i.name for i in images if i.pid})
        results = {r.host: r for r in (self.stop(names, by_user=False) if names else [])}
        # the whole lab is down: no host is "stopped by a user" any more, nothing is pinned (issue 19)
        self.ctx.inventory.set_held([i.name for i in images], False)
        for image in images:
            if image.name in results and not results[image.name].ok:
                continue
            try:
                self.provider.discard(self.lab, image.name)
            except ProviderError as exc:  # one host's disk that cannot be discarded does not stop the others
                results[image.name] = HostResult(image.name, False, f"stopped, but its disk stays: {exc}")
                continue
            self.ctx.inventory.forget_releases(image.name)
        if not names:
            self.provider.teardown(self.lab)
            self.ctx.serve_gateways()
        return sorted(results.values(), key=lambda r: r.host)

    # whole-environment runs --------------------------------------------------------------------------
    @_locked("starting")
    def start_hosts(self, specs: list[HostSpec]) -> StartReport:
        """Make and boot `specs`, then deploy, start and test each host's service. Never stops at one host."""
        self.validate(specs)
        self.check()
        report = StartReport(self.images([s.name for s in specs]))
        booted, served = self._start(report.images, serve=True)
        report.add("boot", booted)
        up = [i for i in report.images if report.steps["boot"][i.name].ok]
        services = self.ctx.services
        # services that front others (an lb's upstream) go last, so their backend list is complete
        order = sorted({i.service for i in up if i.service}, key=lambda n: (services[n].upstream is not None, n))
        with self.ctx.fleet() as fleet:
            for name in order:
                hosts = [i.name for i in up if i.service == name]
                verified, rest = firstboot.verify(self.ctx, fleet, name, hosts, self.env.name, served)
                for step, results in verified.items():
                    report.add(step, results)
                ok = sorted(set(hosts) - set(rest))
                self.ctx.say(f"{name}: served at first boot, verified: {', '.join(ok) or 'none'}; "
                             f"deploying over SSH: {', '.join(rest) or 'none'}")
                if rest:
                    for step, results in deploy.deliver(self.ctx, fleet, name, rest, self.env.name).items():
                        report.add(step, results)
                for r in firstboot.settle_proxies(self.ctx, fleet, name, [h for h in ok if h in served], served):
                    start = report.steps.get("start", {}).get(r.host)
                    report.add("start", [HostResult(r.host, r.ok, f"{start.detail if start else 'started'}; "
                                                    f"{r.detail}")])
        return report

    def start_all(self) -> StartReport:
        return self.start_by_user(list(self.env.hosts))

    def start_by_user(self, specs: list[HostSpec]) -> StartReport:
        """A user's start: the hosts run what environments.py says again (their pins end; their holds end
        when they start)."""
        pins.clear_pins(self.ctx.inventory, [s.name for s in specs])
        return self.start_hosts(specs)

    def start_min(self) -> StartReport:
        """The first `min[role]` hosts of each role (by name); roles without a minimum start none."""
        if not self.env.minimum:
            raise ConfigError(f"{self.env.source}: environment {self.env.name!r} has no 'min' "
                              "(e.g. 'min': {'worker': 1})")
        chosen: list[HostSpec] = []
        for role, count in self.env.minimum.items():
            chosen += sorted((h for h in self.env.hosts if h.role == role), key=lambda h: h.name)[:count]
        return self.start_by_user(chosen)

    @_locked("restarting a host of")
    def start_worker(self, name: str, by_user: bool = True) -> StartReport:
        """(Re)start one host: stop it if it runs, boot it, deploy/start/test its service. The monitor's heal
        (not `by_user`) keeps a user's pin: its next pass deploys the pinned version again."""
        spec = self.env.host(name)
        self.validate([spec])  # before the host is stopped: bad input never leaves it down
        self.check()
        if name in self.running():
            self.stop([name], by_user=False)  # a restart, not a stop the monitor should respect
        return self.start_by_user([spec]) if by_user else self.start_hosts([spec])
