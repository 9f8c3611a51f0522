"""The lab handle: one environment on this machine (environment + lab + provider, checked once). It owns
the lab's host images and their lifecycle: make, clone, delete, start (boot + discovery: each fresh host has
phoned home and answers SSH; its links impaired as wanted: booted/impair/), stop. It is handed the run's kit,
the service definitions and booted's gateway work; it never delivers a service (booted/runs.py composes that
on top of it) and never reaches back up for more. Nothing else reaches a provider."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

from booted.config import Settings
from booted.discovery.gateways import Gateways
from booted.discovery.hostlist import relist
from booted.discovery.wait import Expected, boot_timeout, wait_booted
from booted.environments import Environment, HostSpec
from booted.errors import ConfigError, ProviderError, StateError
from booted.hosts.identity import Identity, hash_password
from booted.impair.links import LabLinks
from booted.kit import Kit
from booted.lab import timeline
from booted.lab.hostimages import ensure_image, host_target, identity, make_host_keys
from booted.lab.lock import LabLock, under_lab_lock
from booted.lab.preflight import preflight
from booted.providers.base import Provider
from booted.providers.lab import Lab
from booted.providers.vm import VmProvider
from booted.remote.fanout import Target
from booted.remote.firstboot import Serve
from booted.remote.services import Service
from booted.results import HostResult
from booted.rules import HOST_NAME
from booted.state import timelines
from booted.state.inventory import Image
from booted.state.records import Timeline

SYSTEMD_PACKAGES = ("systemd-sysv", "dbus")  # what "init": "systemd" adds to the golden image
# (fresh hosts, every host running or about to) -> what each fresh host serves at boot (remote/firstboot.py)
Serving = Callable[[list[Image], set[str]], Mapping[str, Serve]]


class LabHandle:
    def __init__(self, kit: Kit, env: Environment, provider: Callable[[Settings], Provider],
                 services: Mapping[str, Service], gateways: Gateways) -> None:
        s = kit.settings
        self.kit, self.env, self.services, self.gateways = kit, env, services, gateways
        self.lab = Lab(env.name, s.lab_id(env.name), env.network, s.state_dir / "labs" / env.name, init=env.init,
                       options=env.options, placed=self.placed, nets=env.lab_nets)
        self.provider = provider(s)
        self._checked, self._lock = False, LabLock(kit.locks, env.name)
        self.links = LabLinks(kit, self.lab, env, self.provider, self.locked)  # impaired links (booted/impair/)

    @property
    def name(self) -> str:
        return self.env.name

    def locked(self, what: str) -> AbstractContextManager[None]:
        """The lab's lifecycle lock (lab/lock.py), re-entrant within this handle."""
        return self._lock.held(what)

    def check(self) -> None:
        """Can this machine run the lab (tools, root)? Asked once per handle, before anything is made."""
        if not self._checked:
            self.provider.check(self.lab)
            self._checked = True

    def validate(self, specs: list[HostSpec]) -> None:
        """What input decides, checked before any host is touched (lab/preflight.py): ConfigError, exit 2."""
        preflight(self.kit, self.services, self.env, self.lab.bridges, specs)

    # observing (no root needed) ----------------------------------------------------------------------
    def running(self) -> dict[str, int]:
        return self.provider.running(self.lab)

    def endpoints(self, name: str) -> dict[int, tuple[str, int]]:
        return self.provider.endpoints(self.lab, name)

    def target(self, image: Image) -> Target:
        """A fan-out target for a host image of this lab, with its forwarded ports if it has any."""
        return host_target(self.env, self.services, image, self.endpoints(image.name))

    def ssh_endpoint(self, image: Image) -> tuple[str, int]:
        return self.target(image).endpoint(22)

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

    def why_not_booted(self, name: str) -> str:
        """What the provider sees of a host that did not phone home, and its console's last lines."""
        hint = self.provider.why_not_booted(self.lab, name)
        return (f": {hint}" if hint else "") + self.console_tail(name)

    def last_start(self) -> list[Timeline]:
        """Where the time of this lab's last start went, one timeline per host it started (lab/timeline.py)."""
        return timelines.last_start(self.kit.inventory, self.env.name)

    def packages(self) -> tuple[str, ...]:
        """The extra Debian packages of this lab's golden image: the environment's and its services'."""
        wanted = set(self.env.packages) | (set(SYSTEMD_PACKAGES) if self.env.init == "systemd" else set())
        for spec in self.env.hosts:
            if spec.service is not None and spec.service in self.services:
                wanted |= set(self.services[spec.service].packages)
        return tuple(sorted(wanted))

    # host images -----------------------------------------------------------------------------------
    def images(self, names: list[str]) -> list[Image]:
        """Host images for names: from environments.py (made on first use), or existing clones not in it."""
        desired, out = {h.name: h for h in self.env.hosts}, []
        make_host_keys(self.kit.inventory, self.kit.keys, names)  # ssh-keygen side by side, not one per lease
        for name in names:
            image = self.kit.inventory.image(name)
            if name in desired or image is None:
                image = ensure_image(self.kit.inventory, self.kit.keys, self.env,
                                     desired.get(name) or self.env.host(name))
            out.append(image)
        return out

    @under_lab_lock("cloning a host in")
    def clone(self, src: str, new: str) -> Image:
        """A new host image like `src` (role, service, version, disk contents) with a fresh identity."""
        if not HOST_NAME.match(new):
            raise ConfigError(f"image name {new!r}: use lowercase letters, digits and -, starting with a letter, "
                              "at most 31 characters")
        inventory = self.kit.inventory
        image = inventory.image(src)
        if image is None:
            raise StateError(f"host image {src!r} does not exist yet: build it first with 'fab image_build {src}'")
        if inventory.image(new) is not None:
            raise StateError(f"host image {new!r} already exists: pick another name or 'fab image_del {new}'")
        self.check()
        spec = HostSpec(new, image.role, image.service, image.version, image.memory, image.cpus)
        clone = ensure_image(inventory, self.kit.keys, self.env, spec)
        self.provider.clone(self.lab, src, new)
        if image.hypervisor:  # the copy of its disk is where the source's is
            inventory.set_hypervisors({new: image.hypervisor})
        return clone

    @under_lab_lock("deleting a host of")
    def delete(self, name: str) -> HostResult:
        """Stop and delete a host image; its IP and MAC go back to the pool."""
        image = self.kit.inventory.image(name)
        if image is None:
            return HostResult(name, True, "no such image (nothing to delete)")
        self.check()
        if name in self.running():
            self.stop([name])
        self.provider.destroy(self.lab, name)
        self.gateways.forget_image(name)
        return HostResult(name, True, f"deleted; {image.ip} and {image.mac} released")

    # lifecycle -------------------------------------------------------------------------------------
    @under_lab_lock("starting hosts of")
    def start(self, images: list[Image], serving: Serving | None = None) -> list[HostResult]:
        """Start host images (running ones are left as they are) and wait until each has booted: phoned home
        in the boot log with its pinned host key, and answers SSH. `serving` (fresh hosts, the hosts running
        or about to) says what each fresh host serves at boot; asked once the network and nginx are up."""
        if not images:
            return []
        self.validate([])
        self.check()
        since = time.time()
        already = self.running()
        kit, settings, services = self.kit, self.kit.settings, self.services
        pw_hash = hash_password(settings.password, settings.path) if settings.password else None  # once per run
        tokens = {i.name: (i.boot_token or "") if i.name in already else secrets.token_hex(16) for i in images}
        for name, token in tokens.items():
            if name not in already:
                kit.inventory.set_boot_token(name, token)  # a new boot: lines of earlier ones are void
        kit.say(f"starting {len(images)} host(s) of {self.env.name} on {self.env.provider} "
                f"({len(already)} already running)")
        self.prepare()
        fresh_names = {i.name for i in images if i.name not in already}
        served = serving([i for i in images if i.name in fresh_names], set(already) | fresh_names) if serving else {}
        idents = [identity(settings, kit.keys, self.env, i, pw_hash,
                           (services[i.service].port,) if i.service and i.service in services else (), tokens[i.name],
                           *((served[i.name].script, served[i.name].release) if i.name in served else ()))
                  for i in images]
        lab = replace(self.lab, packages=self.packages())
        idents, errors = self._place(images, idents)
        started, failed = self.provider.start(lab, idents, kit.say)
        errors.update(failed)
        for s in started:
            kit.inventory.set_running(s.name, s.pid)
        kit.inventory.set_held([s.name for s in started], False)
        self.gateways.pin_host_keys()  # forwarded SSH ports (user-mode VMs) are known once the VMs run
        fresh = [i for i in images if i.name not in already and i.name not in errors]
        expected = [Expected(i.name, self.ssh_endpoint(i)) for i in fresh]
        timeout: float = settings.boot_timeout  # VMs share the cores (TCG is CPU-bound): longer when many boot at once
        if isinstance(self.provider, VmProvider):
            timeout = boot_timeout(timeout, len(expected))
        waited = wait_booted(kit.inventory, settings.boot_log, expected, since, timeout, kit.say, self.why_not_booted)
        errors.update(self.links.failed([s.name for s in started]))  # at every (re)start: environments.py, net_impair
        pids = {s.name: s.pid for s in started}  # where each phase of each fresh host's start went (env_timeline)
        timeline.record(kit.inventory, self.env.name, since, {n: pids.get(n) for n in sorted(fresh_names)},
                        {**waited, **{n: HostResult(n, False, e) for n, e in errors.items()}})
        listed = {h.name for h in kit.inventory.hosts()}
        out = []
        for img in images:
            if img.name in errors:
                out.append(HostResult(img.name, False, errors[img.name]))
            elif img.name in already:
                out.append(HostResult(img.name, True, "already running") if img.name in listed else self.relist(img))
            else:
                out.append(waited[img.name])
        return out

    def prepare(self) -> None:
        """The lab network and booted's gateway services, before a host boots (hosts phone home while booting)."""
        self.provider.prepare_network(self.lab)
        self.gateways.serve()

    def _place(self, images: list[Image], idents: list[Identity]) -> tuple[list[Identity], dict[str, str]]:
        """Hosts on hypervisors (libvirt; other providers place nothing): where they were before (their disk
        is there), their pin in environments.py, or the provider's choice; recorded (once: the database)
        before they start."""
        recorded = {i.name: i.hypervisor for i in images if i.hypervisor}
        placement, errors = self.provider.place(self.lab, idents, recorded)
        if not placement:
            return [i for i in idents if i.name not in errors], errors
        self.kit.inventory.set_hypervisors({n: hv for n, hv in placement.items() if recorded.get(n) != hv})
        return [replace(i, hypervisor=placement[i.name]) for i in idents if i.name in placement], errors

    def placed(self, name: str) -> str:
        """Where the database says a host was placed ("" : nowhere, or a provider that does not place)."""
        image = self.kit.inventory.image(name)
        return image.hypervisor if image is not None else ""

    def relist_unlisted(self, service: str) -> list[HostResult]:
        """Hosts of `service` that run but are not in the host list (a run killed between a boot and its
        listing): listed again, or a failed result saying why; a service task never skips them silently."""
        listed = {h.name for h in self.kit.inventory.hosts()}
        running = self.running()
        return [self.relist(i) for i in self.kit.inventory.images(self.env.name)
                if i.service == service and i.name in running and i.name not in listed]

    def relist(self, img: Image) -> HostResult:
        """A host that runs but is not in the host list: listed again if it answers SSH (discovery/hostlist.py)."""
        return relist(self.kit.inventory, img, self.ssh_endpoint(img))

    @under_lab_lock("stopping hosts of")
    def stop(self, names: list[str], by_user: bool = True, keep_network: bool = False) -> list[HostResult]:
        """Stop hosts; stopped hosts leave the host list. Removes the lab network when none runs (unless
        `keep_network`: a restore starts them again at once). A user's stop is remembered: the monitor does
        not start those hosts again (a start by anyone clears it)."""
        self.check()
        inventory = self.kit.inventory
        if by_user:
            inventory.set_held(names, True)
        running = self.running()
        errors = self.provider.stop(self.lab, names)
        stopped = [n for n in names if n not in errors]
        for name in stopped:
            inventory.set_running(name, None)
        inventory.remove_hosts(stopped)
        self.links.stopped(stopped)
        if not keep_network:
            self.provider.teardown(self.lab)
            self.gateways.serve()  # stop listening on a gateway that is gone
        return [HostResult(n, n not in errors, errors.get(n, "stopped" if n in running else "was not running"))
                for n in names]

    @under_lab_lock("stopping")
    def stop_all(self) -> list[HostResult]:
        """Stop every host (clones included), discard their disks (overlay, qcow2) and remove the network.
        Identities (IP, MAC, host key) stay leased until image_del."""
        self.check()
        inventory = self.kit.inventory
        images = inventory.images(self.env.name)
        names = sorted(set(self.running()) | {i.name for i in images if i.pid})
        results = {r.host: r for r in (self.stop(names, by_user=False) if names else [])}
        # the whole lab is down: no host is "stopped by a user" any more, nothing is pinned (issue 19)
        inventory.set_held([i.name for i in images], False)
        for image in images:
            if image.name in results and not results[image.name].ok:
                continue
            try:
                self.provider.discard(self.lab, image.name)
            except ProviderError as exc:  # one host's disk that cannot be discarded does not stop the others
                results[image.name] = HostResult(image.name, False, f"stopped, but its disk stays: {exc}")
                continue
            inventory.forget_releases(image.name)
        self.links.forget()  # env_stop: nothing impaired, nothing recorded
        if not names:
            self.provider.teardown(self.lab)
            self.gateways.serve()
        return sorted(results.values(), key=lambda r: r.host)
