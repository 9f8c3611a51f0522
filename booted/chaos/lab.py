"""The real lab a chaos run works on (run.ChaosLab): its monitor's passes (the status file), its first lb,
kill -9 of a host's processes or of its service's process, links impaired and cleared through the lab's
impairment code (booted/impair/), and the run's events in the monitor's actions (kind "chaos"), so they show
on the monitor's status page next to its heals."""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import shlex
import signal
import time
from typing import TYPE_CHECKING

from booted.chaos.load import http_get
from booted.chaos.report import Report
from booted.chaos.run import Experiment, Pass
from booted.chaos.spec import LinkFault, Plan
from booted.errors import BootedError, ConfigError, ProviderError
from booted.monitor import process
from booted.monitor.statusfile import status_file
from booted.remote.commands import service_dir
from booted.remote.fanout import Target
from booted.results import HostResult

if TYPE_CHECKING:
    from booted.context import Booted

KIND = "chaos"  # the actions' kind of a chaos run's events
FIRST_PASS_WAIT = 30.0  # seconds to wait for the monitor's first pass


class RealLab:
    def __init__(self, ctx: Booted, env: str | None, plan: Plan) -> None:
        self.ctx = ctx
        self.handle = ctx.lab(env)
        self.env = self.handle.env.name
        if process.running(ctx, self.env) is None:
            raise ConfigError(f"the monitor of {self.env!r} is not running: a chaos run needs it (it heals what "
                              f"the run kills, and its passes time the heals): fab monitor_start --env {self.env}")
        self.check(plan)
        self.status = status_file(ctx.settings.state_dir, self.env)
        self.target = self._lb_target()
        services = ctx.services
        spec = self.handle.env.host(self.target.name)
        addr, port = self.target.endpoint(services[spec.service or ""].port)
        self.address, self.lb_port = addr, port
        self.lb = f"{addr}:{port}"
        self.check_address(addr)

    def check(self, plan: Plan) -> None:
        """The role to kill and the host to impair are the environment's."""
        env = self.handle.env
        roles = sorted({h.role for h in env.hosts})
        if plan.kill is not None and plan.kill.role not in roles:
            raise ConfigError(f"--kill role={plan.kill.role}: environment {self.env!r} has no such role "
                              f"(roles: {', '.join(roles)})")
        if plan.kill is not None and plan.kill.what == "service" and any(
                h.service is None for h in env.hosts if h.role == plan.kill.role):
            raise ConfigError(f"--kill role={plan.kill.role},what=service: some of its hosts run no service")
        if plan.impair is not None:
            env.host(plan.impair.host)

    def _lb_target(self) -> Target:
        """The first host whose service fronts another (an lb), running and listed."""
        services = self.ctx.services
        lbs = [h.name for h in self.handle.env.hosts if h.service in services and services[h.service].upstream]
        if not lbs:
            raise ConfigError(f"environment {self.env!r} has no lb (a host whose service has an `upstream`): "
                              "a chaos run sends its load through one")
        found = self.ctx.targets([lbs[0]], env=self.env)
        if not found:
            raise ConfigError(f"the lb {lbs[0]} of {self.env!r} is not running: fab env_start --env {self.env}")
        return found[0]

    def check_address(self, addr: str) -> None:
        """Load goes to a lab address (or this machine's loopback, a forwarded port) and nowhere else."""
        ip = ipaddress.ip_address(addr)
        nets = self.handle.env.networks
        if not (ip.is_loopback or any(ip in n.cidr for n in nets)):
            raise ConfigError(f"the lb's address {addr} is neither in the lab's networks "
                              f"({', '.join(str(n.cidr) for n in nets)}) nor loopback: no load is sent there")

    def wait_first_pass(self) -> None:
        deadline = time.monotonic() + FIRST_PASS_WAIT
        while self.roles() is None:
            if time.monotonic() > deadline:
                raise BootedError(f"the monitor of {self.env!r} has made no pass in {FIRST_PASS_WAIT:g}s; "
                                  f"see fab monitor_status --env {self.env}")
            time.sleep(0.5)

    # the port ----------------------------------------------------------------------------------------
    def roles(self) -> Pass | None:
        try:
            data = json.loads(self.status.read_text())
            if data.get("pid") != process.running(self.ctx, self.env):
                return None  # a pass of an earlier daemon
            roles = data["roles"]
            return Pass(float(data["at"]), {r: list(v["healthy"]) for r, v in roles.items()},
                        {r: int(v["wanted"]) for r, v in roles.items() if v.get("wanted") is not None})
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def role_of(self, host: str) -> str:
        return self.handle.env.host(host).role

    def kill(self, host: str, what: str) -> str:
        if what == "host":
            pid = self.handle.running().get(host)
            if pid is None:
                raise ProviderError(f"{host} does not run")
            try:
                os.kill(pid, signal.SIGKILL)  # a netns host's namespace processes go with it, a VM with its qemu
            except ProcessLookupError:
                raise ProviderError(f"{host} (pid {pid}) ended before the kill") from None
            return f"pid {pid}"
        return self.kill_service(host)

    def kill_service(self, host: str) -> str:
        """kill -9 of what the service's supervisor runs (it restarts it a second later), over SSH."""
        spec = self.handle.env.host(host)
        targets = self.ctx.targets([host], env=self.env)
        if not targets or spec.service is None:
            raise ProviderError(f"{host} is not running a service")
        base = shlex.quote(service_dir(self.ctx.services[spec.service]))
        script = (f"sup=$(cat {base}/supervisor.pid) && kids=$(pgrep -P \"$sup\") && kill -9 $kids && "
                  "echo $kids")
        with self.ctx.fleet() as fleet:
            got: list[str] = []

            def step(t: Target) -> str:
                got.append(fleet.sh(t, script))
                return "killed"
            result = fleet.run(targets, step, progress=False, timeout=15)[0]
        if not result.ok:
            raise ProviderError(f"{host}: {result.detail}")
        return f"{spec.service} pid {' '.join(got)}"

    def impair(self, fault: LinkFault) -> None:
        self._ok(self.handle.links.impair([fault.host], None, fault.spec))

    def clear(self, host: str) -> None:
        self._ok(self.handle.links.clear([host], None))

    @staticmethod
    def _ok(results: list[HostResult]) -> None:
        bad = [f"{r.host}: {r.detail}" for r in results if not r.ok]
        if bad:
            raise ProviderError("; ".join(bad))

    def record(self, host: str, reason: str) -> int:
        return self.ctx.inventory.open_action(self.env, KIND, host, reason)

    def finish(self, record: int, ok: bool, detail: str) -> None:
        self.ctx.inventory.finish_action(record, ok, detail)

    def acted(self, host: str, since: float) -> bool:
        return any(a["host"] == host and a["kind"] != KIND and a["finished"] is not None
                   and float(a["started"]) >= since for a in self.ctx.inventory.actions(self.env, 50))  # type: ignore[arg-type]

    def monitor_actions(self, since: float) -> list[tuple[float, str, str]]:
        out: list[tuple[float, str, str]] = []
        for a in self.ctx.inventory.actions(self.env, 500):
            started, finished = float(a["started"]), a["finished"]  # type: ignore[arg-type]
            if a["kind"] == KIND or started < since:
                continue
            out.append((started, str(a["host"]), f"monitor {a['kind']}: {a['reason']}"))
            if finished is not None:
                out.append((float(finished), str(a["host"]),  # type: ignore[arg-type]
                            f"monitor {a['kind']} {a['status']}: {str(a['detail'])[:60]}"))
        return out


def run_chaos(ctx: Booted, env: str | None, plan: Plan, heal_wait: float = 60.0) -> Report:
    """A chaos run on the environment's lab (its monitor running): the report."""
    lab = RealLab(ctx, env, plan)
    lab.wait_first_pass()
    ctx.say(f"chaos: {lab.env}: {plan.duration:g} s, {plan.rate:g} req/s to {lab.lb}"
            + (f", kill -9 of a {plan.kill.role} {plan.kill.what} every {plan.kill_every:g} s"
               if plan.kill and plan.kill_every else "")
            + (f", {plan.impair.label()} on {plan.impair.host} for {plan.impair.seconds:g} s" if plan.impair else ""))
    send = functools.partial(http_get, lab.address, lab.lb_port, "/", 5.0)
    return Experiment(lab, plan, send, heal_wait).run()
