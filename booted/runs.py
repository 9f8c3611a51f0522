"""Runs: make hosts exist, then make them serve. The lab handle boots them (each fresh host told what to
serve at first boot); then, per service, what served at boot is verified, the rest is deployed over SSH,
and the lbs are settled on their backends. `env_start_all`, `env_start_min`, `env_start_worker` and the
monitor's heal and scale-up are these same few calls."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from booted.environments import HostSpec
from booted.errors import ConfigError
from booted.lab.handle import LabHandle
from booted.remote import deploy, firstboot
from booted.remote.reach import Remote
from booted.results import HostResult
from booted.state import pins
from booted.state.inventory import Image
from booted.state.warm import clear_warm, warm_hosts

STEPS = ("boot", *deploy.DELIVER)


@dataclass
class StartReport:
    """An environment run: each host's image, and its result of each step it reached."""

    images: list[Image]
    steps: dict[str, dict[str, HostResult]] = field(default_factory=dict)

    def add(self, step: str, results: list[HostResult]) -> None:
        self.steps.setdefault(step, {}).update({r.host: r for r in results})

    def failed(self) -> list[str]:
        return [i.name for i in self.images if any(not s[i.name].ok for s in self.steps.values() if i.name in s)]

    def outcome(self) -> tuple[bool, str]:
        """(all served, one line): the failures' reasons, or "serving; booted in 4.2s" (what a heal's time is
        made of: the monitor records it)."""
        if self.failed():
            reasons = [r.detail for s in self.steps.values() for r in s.values() if not r.ok]
            return False, "; ".join(reasons)[:300]
        booted = [r.detail for r in self.steps.get("boot", {}).values() if r.detail.startswith("booted in")]
        return True, "; ".join(["serving", *booted])


class Runs:
    """The runs of one environment: its lab handle below, remote work beside it."""

    def __init__(self, handle: LabHandle, remote: Remote) -> None:
        self.handle, self.remote, self.env = handle, remote, handle.env

    def start_all(self) -> StartReport:
        return self.start_by_user(list(self.env.hosts))

    def start_min(self) -> StartReport:
        """The first `min[role]` hosts of each role (by name); roles without a minimum start none."""
        if not self.env.minimum:
            raise ConfigError(f"{self.env.source}: environment {self.env.name!r} has no 'min' "
                              "(e.g. 'min': {'worker': 1})")
        chosen: list[HostSpec] = []
        for role, count in self.env.minimum.items():
            chosen += sorted((h for h in self.env.hosts if h.role == role), key=lambda h: h.name)[:count]
        return self.start_by_user(chosen)

    def start_by_user(self, specs: list[HostSpec]) -> StartReport:
        """A user's start: the hosts run what environments.py says again (their pins end; their holds end
        when they start; the monitor's warm hosts among them are resumed and are the user's now)."""
        pins.clear_pins(self.remote.kit.inventory, [s.name for s in specs])
        self.resume_warm([s.name for s in specs])
        return self.start_hosts(specs)

    def resume_warm(self, names: list[str]) -> dict[str, str]:
        """Resume those of `names` paused in the monitor's warm pool and take them out of it; host -> error."""
        inv = self.remote.kit.inventory
        with self.handle.locked("resuming warm hosts of"):
            found = sorted(warm_hosts(inv, self.env.name, self.handle.running()) & set(names))
            errors = self.handle.provider.resume(self.handle.lab, found) if found else {}
            clear_warm(inv, found)
        return {n: errors.get(n, "") for n in found}

    def take_warm(self, name: str) -> StartReport | None:
        """`env_start_worker` of a host in the monitor's warm pool: it was booted, deployed and tested, then
        paused; resume it and test it again (no reboot). None: the host is not warm."""
        resumed = self.resume_warm([name])
        if name not in resumed:
            return None
        spec, report = self.env.host(name), StartReport(self.handle.images([name]))
        error = resumed[name]
        report.add("boot", [HostResult(name, not error, f"could not resume it: {error}" if error
                                       else "resumed from the monitor's warm pool (no boot)")])
        pins.clear_pins(self.remote.kit.inventory, [name])
        self.remote.kit.inventory.set_held([name], False)
        if not error and spec.service:
            report.add("test", deploy.run_op(self.remote, "test", deploy.plan(self.remote, spec.service, [name],
                                                                                self.env.name)))
        return report

    def start_worker(self, name: str, by_user: bool = True) -> StartReport:
        """(Re)start one host: stop it if it runs, boot it, deploy/start/test its service. The monitor's heal
        (not `by_user`) keeps a user's pin: its next pass deploys the pinned version again."""
        spec = self.env.host(name)
        if by_user and (taken := self.take_warm(name)) is not None:
            return taken
        with self.handle.locked("restarting a host of"):
            self.handle.validate([spec])  # before the host is stopped: bad input never leaves it down
            self.handle.check()
            if name in self.handle.running():
                self.handle.stop([name], by_user=False)  # a restart, not a stop the monitor should respect
            return self.start_by_user([spec]) if by_user else self.start_hosts([spec])

    def start_hosts(self, specs: list[HostSpec]) -> StartReport:
        """Make and boot `specs`, then deploy, start and test each host's service. Never stops at one host."""
        handle = self.handle
        with handle.locked("starting"):
            handle.validate(specs)
            handle.check()
            report = StartReport(handle.images([s.name for s in specs]))
            served: dict[str, firstboot.Serve] = {}

            def serving(fresh: list[Image], alive: set[str]) -> Mapping[str, firstboot.Serve]:
                served.update(firstboot.prepare(self.remote, self.env, fresh, alive))
                return served
            report.add("boot", handle.start(report.images, serving))
            self.serve([i for i in report.images if report.steps["boot"][i.name].ok], served, report)
        return report

    def serve(self, up: list[Image], served: Mapping[str, firstboot.Serve], report: StartReport) -> None:
        """Make booted hosts serve: per service, verify what served at first boot, deliver the rest over SSH,
        settle the lbs that started at boot on the backends up now. Services that front others (an lb's
        upstream) go last, so their backend list is complete."""
        services, remote = self.remote.services, self.remote
        order = sorted({i.service for i in up if i.service}, key=lambda n: (services[n].upstream is not None, n))
        with remote.fleet() as fleet:
            for name in order:
                hosts = [i.name for i in up if i.service == name]
                verified, rest = firstboot.verify(remote, fleet, name, hosts, self.env.name, dict(served))
                for step, results in verified.items():
                    report.add(step, results)
                ok = sorted(set(hosts) - set(rest))
                remote.kit.say(f"{name}: served at first boot, verified: {', '.join(ok) or 'none'}; "
                               f"deploying over SSH: {', '.join(rest) or 'none'}")
                if rest:
                    for step, results in deploy.deliver(remote, fleet, name, rest, self.env.name).items():
                        report.add(step, results)
                for r in firstboot.settle_proxies(remote, fleet, name, [h for h in ok if h in served], dict(served)):
                    start = report.steps.get("start", {}).get(r.host)
                    report.add("start", [HostResult(r.host, r.ok, f"{start.detail if start else 'started'}; "
                                                    f"{r.detail}")])
