"""The reconcile loop: every `interval` seconds observe the lab (what runs, what answers its health check,
what the lb carries), decide (reconcile.decide, the scaling rule), act through the lab handle and the
deploy operations the tasks use, keep every lb's backend list equal to its upstream's healthy hosts (live,
no restart), and record each action with its reason and outcome."""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable

from booted.context import Booted
from booted.environments import Environment
from booted.errors import BootedError, storage_error
from booted.monitor import backends, warmpool
from booted.monitor.api import Api, Control
from booted.monitor.follow import Watch, stamp, take
from booted.monitor.load import measure
from booted.monitor.reconcile import Action, Kind, Observed, Shortage, decide, managed, wanted_version
from booted.monitor.refill import Refill
from booted.monitor.scaling import Scaler
from booted.monitor.statusfile import status_file, write_status
from booted.remote import deploy
from booted.remote.fanout import Target
from booted.state import pins
from booted.state.warm import clear_warm, warm_hosts


class Monitor:
    """The daemon's state for one environment (scalers, failure counts, lb counters, its SSH connections, the
    warm pool's refill): no globals."""

    def __init__(self, ctx: Booted, env: str | None = None) -> None:
        self.ctx = ctx
        self.watch = Watch(ctx.settings.environments_file, stamp(ctx.settings.environments_file))
        self.lab = ctx.lab(env)
        self.env = self.lab.env
        self.scalers: dict[str, Scaler] = {}
        self.rules: dict[str, tuple[object, ...]] = {}
        self._scalers()
        self.failures: dict[str, int] = {}
        self.counters: dict[str, tuple[float, int]] = {}  # lb host -> (time, requests served)
        self.load: dict[str, float] = {}
        self.last_wanted: dict[str, int] = {}
        self.ran: frozenset[str] = frozenset()
        self.serving: tuple[set[str], dict[str, dict[str, object]]] = (set(), {})  # the lbs' last hosts, health
        self.status_file = status_file(ctx.settings.state_dir, self.env.name)
        self.control = Control(self.env.name, {h.name for h in self.env.hosts})
        # connections kept from pass to pass (the lbs' stats and backend changes, warm hosts while paused): a
        # login into a TCG VM costs about a second, a command on an open connection milliseconds
        self.fleet = ctx.fleet()
        self.pids: dict[str, int] = {}  # host -> its handle PID as last seen (a new one: a new connection)
        self.refill = Refill(lambda: Booted(ctx.settings, ctx.say, ctx.providers, ctx.fleets))

    def _scalers(self) -> None:
        """A scaler per role with a load target; one whose rule is unchanged keeps its history."""
        spec, scalers = self.env.monitor, {}
        for role, rate in spec.target.items():
            rule = (*spec.bounds(role, self.env.minimum, self.pool(role)), rate, spec.tolerance, spec.window)
            keep = self.scalers.get(role)
            scalers[role] = keep if keep is not None and self.rules.get(role) == rule else Scaler(*rule)
            self.rules[role] = rule
        self.scalers = scalers

    def follow(self) -> None:
        """environments.py changed: run from the new environment (a broken one is reported, the last good kept)."""
        if not self.watch.changed():
            return
        new, said = take(self.env, self._reload)
        if said:
            self.ctx.say(f"monitor: {said}")
        if new is not None:
            self.lab = self.ctx.lab(self.env.name)
            self.env = self.lab.env
            self.control.hosts = {h.name for h in self.env.hosts}
            self._scalers()

    def _reload(self) -> dict[str, Environment]:
        self.ctx.reload_environments()
        return self.ctx.environments

    def watch_gateways(self) -> None:
        """booted's nginx and apt proxy run while the lab is up: restart what is down, and say so."""
        down = self.ctx.gateways_down()
        if down:
            for line in down:
                self.ctx.say(f"monitor: {line}")
            self.ctx.serve_gateways()
            left = self.ctx.gateways_down()
            self.ctx.say("monitor: restarted booted's gateway services" if not left
                         else f"monitor: could not restart: {'; '.join(left)}")

    # observing ---------------------------------------------------------------------------------------
    def observe(self) -> tuple[Observed, dict[str, dict[str, object]]]:
        """What runs, its health, and what each lb reports (host -> its /health JSON)."""
        procs = self.lab.running()
        for name in [n for n, pid in self.pids.items() if procs.get(n) != pid]:
            self.fleet.drop(name)  # gone, or another process now: its connection is dead
        self.pids = procs
        filling = frozenset(n for n in [self.refill.filling()] if n)
        running, warm = frozenset(procs), frozenset(warm_hosts(self.ctx.inventory, self.env.name, procs)) | filling
        images = {i.name: i for i in self.ctx.inventory.images(self.env.name)}
        targets = {t.name: t for t in self.ctx.targets(env=self.env.name)}
        unlisted = {n for n in running - set(targets) if n in images}
        for name in unlisted:  # runs but is not listed (booted before this boot log, a killed run): checked
            targets[name] = self.lab.target(images[name])
        health = self.health([targets[n] for n in sorted(running - warm) if n in targets])  # warm: paused
        for name in sorted(unlisted & set(health)):  # it serves: list it again (its pinned key still checked)
            self.ctx.say(f"monitor: {name} runs and serves but was not listed: {self.lab.relist(images[name]).detail}")
        for name in images:
            ok = name in health
            self.failures[name] = 0 if ok or name not in running - warm else self.failures.get(name, 0) + 1
        held = frozenset(n for n, i in images.items() if i.held)
        deployed = {h: v for (h, s), v in self.ctx.inventory.releases().items()
                    if h in images and images[h].service == s}
        pinned = pins.pins(self.ctx.inventory)
        versions = {h.name: h.version for h in self.env.hosts}
        pins.clear_pins(self.ctx.inventory, [n for n, p in pinned.items() if n in versions
                                             and not p.holds(versions[n]) and deployed.get(n) == versions[n]])
        return Observed(running, {n: f for n, f in self.failures.items() if n in running}, held, deployed,
                        pinned, warm - filling, filling), health

    def health(self, targets: list[Target]) -> dict[str, dict[str, object]]:
        """host -> its health JSON, for the hosts whose service answers with its own name."""
        services = self.ctx.services
        specs = {h.name: h for h in self.env.hosts}
        out: dict[str, dict[str, object]] = {}
        fleet = self.fleet

        def check(t: Target) -> str:
            spec = specs.get(t.name)
            if spec is None or spec.service not in services:
                return "no service"
            svc = services[spec.service]
            _, body = fleet.http_get(t, svc.port, svc.health, timeout=2.0)
            data = json.loads(body)
            if not isinstance(data, dict) or data.get("host") != t.name:
                raise ValueError("answers for another host")
            if svc.stats:  # a proxy's counters and backends, from its own command over SSH
                data.update(json.loads(fleet.sh(t, deploy.stats_script(svc, t))))
            out[t.name] = data
            return "ok"
        # an HTTP check has its own 2 s; a proxy's counters need an SSH command, and the first (a login) into a
        # TCG VM on a loaded machine may take longer than 5 s: cut off each time, it never got its connection
        for r in fleet.run(targets, check, progress=False, timeout=15.0):
            if r.ok and r.detail == "no service":
                out.setdefault(r.host, {})
        return out

    def measure(self, health: dict[str, dict[str, object]], now: float) -> dict[str, float]:
        return measure(self.env, self.ctx.services, self.counters, health, now)

    # one pass ------------------------------------------------------------------------------------------
    def wanted(self, seen: Observed, load: dict[str, float], now: float) -> dict[str, int]:
        out = {}
        for role in managed(self.env):
            low, high = self.env.monitor.bounds(role, self.env.minimum, self.pool(role))
            serving = sum(1 for h in self.env.hosts if h.role == role and h.name in seen.running
                          and h.name not in seen.held | seen.warm | seen.filling and seen.failures.get(h.name, 0) == 0)
            if role in self.scalers and role in load:
                out[role] = self.scalers[role].recommend(now, serving, load[role])
            else:  # no load to go by: keep what runs (a user's start included) between min and max
                out[role] = min(high, max(low, serving))
        return out

    def pool(self, role: str) -> int:
        return sum(1 for h in self.env.hosts if h.role == role)

    def pass_once(self) -> list[tuple[Action | Shortage, bool, str]]:
        self.follow()
        busy = self.ctx.locks.lab_busy(self.env.name)
        if busy and not self.refill.holding:  # a user's start/stop: what runs is changing; look again next pass
            self.ctx.say(f"monitor: {busy}; waiting for it")
            return []
        quick = [(a, *self.act(a)) for a in warmpool.replacements(self)]  # before any health check
        self.watch_gateways()
        now = time.monotonic()
        seen, health = self.observe()
        self.ran = seen.running  # what the wait after this pass compares with
        self.load = self.measure(health, now)
        wanted = self.last_wanted = self.wanted(seen, self.load, now)
        decided = decide(self.env, seen, wanted)
        # a failing host leaves the lb at once, before it is healed; a host about to be stopped leaves it
        # before it stops (its requests in flight finish), so scaling down drops no request
        leaving = {a.host for a in decided if isinstance(a, Action) and a.kind is Kind.STOP}
        healthy = {n for n in seen.running if seen.failures.get(n, 0) == 0 and n in health} - leaving
        self.sync_backends(healthy, health)
        self.serving = (healthy, health)
        asked: list[Action | Shortage] = [Action(Kind.HEAL, host, "reprovision requested through the API")
                                          for host, _ in self.control.take()]
        chosen = {a.host for a in asked if isinstance(a, Action)}
        todo = asked + [a for a in decided if not isinstance(a, Action) or a.host not in chosen]
        todo.sort(key=warmpool.order)  # takes (no boot: serving first), the rest, refills (background) last
        done: list[tuple[Action | Shortage, bool, str]] = [*quick]
        for a in todo:
            if isinstance(a, Action) and (later := warmpool.later(self, a)):
                self.ctx.say(f"monitor: {a.kind.value} {a.host}: {later}")
            elif isinstance(a, Action) and a.kind is Kind.WARM and not warmpool.cannot_pause(self.lab):
                warmpool.background(self, a)
            else:
                done.append((a, *self.act(a)))
        if any(ok and isinstance(a, Action) and a.kind is not Kind.DEPLOY for a, ok, _ in done):
            seen, health = self.settle()
        self.control.record(self.write_status(seen, wanted, health))
        return done

    def settle(self) -> tuple[Observed, dict[str, dict[str, object]]]:
        """Look again and put the lbs on the hosts healthy now (after actions, or a warm host taken)."""
        seen, health = self.observe()
        self.sync_backends({n for n in seen.running if n in health}, health)
        return seen, health

    def act(self, action: Action | Shortage) -> tuple[bool, str]:
        """Do one action (recorded with its reason and outcome); a shortage is only said."""
        if isinstance(action, Shortage):
            self.ctx.say(f"monitor: {action.reason}")
            return False, action.reason
        record = self.ctx.inventory.open_action(self.env.name, action.kind.value, action.host, action.reason)
        self.ctx.say(f"monitor: {action.kind.value} {action.host}: {action.reason}")
        self.control.set_busy(action.host)
        doers: dict[Kind, Callable[[str], tuple[bool, str]]] = {
            Kind.HEAL: self.heal, Kind.START: self.start, Kind.STOP: self.stop, Kind.DEPLOY: self.redeploy,
            Kind.TAKE: functools.partial(warmpool.take, self),
            Kind.WARM: lambda _: (False, warmpool.cannot_pause(self.lab))}  # else it runs in the background
        try:
            ok, detail = doers[action.kind](action.host)
        except Exception as exc:  # one failed action is recorded and retried next pass, never the end
            ok, detail = False, str(exc) or type(exc).__name__
        finally:
            self.control.set_busy(None)
        self.ctx.inventory.finish_action(record, ok, detail)
        self.ctx.say(f"monitor: {action.kind.value} {action.host}: {'done' if ok else 'FAILED'}: {detail}")
        return ok, detail

    def heal(self, host: str) -> tuple[bool, str]:
        return self.ctx.runs(self.env.name).start_worker(host, by_user=False).outcome()

    def start(self, host: str) -> tuple[bool, str]:
        return self.ctx.runs(self.env.name).start_hosts([self.env.host(host)]).outcome()

    def stop(self, host: str) -> tuple[bool, str]:
        clear_warm(self.ctx.inventory, [host])
        r = self.lab.stop([host], by_user=False)[0]
        return r.ok, r.detail

    def redeploy(self, host: str) -> tuple[bool, str]:
        """Deploy and start the version the host should run (its pin, else environments.py's)."""
        spec = self.env.host(host)
        assert spec.service is not None
        known = pins.pins(self.ctx.inventory)
        version = wanted_version(spec.name, spec.version, known)
        p = deploy.plan(self.ctx.remote, spec.service, [host], self.env.name, version)
        results = deploy.run_op(self.ctx.remote, "deploy", p) + deploy.run_op(self.ctx.remote, "start", p)
        ok = all(r.ok for r in results)
        if ok and spec.name in known and version == spec.version:  # the file changed: its pin is over
            pins.clear_pins(self.ctx.inventory, [spec.name])
        return ok, "; ".join(r.detail for r in results)

    def sync_backends(self, healthy: set[str], health: dict[str, dict[str, object]]) -> None:
        """Every lb of the environment sends to exactly its upstream's healthy hosts (live, no restart)."""
        backends.sync(self.ctx, self.env, self.fleet, healthy, health)

    def write_status(self, seen: Observed, wanted: dict[str, int], health: dict[str, dict[str, object]]
                     ) -> dict[str, object]:
        return write_status(self.status_file, self.env, seen, wanted, health, self.load)

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until `stop` is set (SIGTERM, Ctrl-C)."""
        interrupted = self.ctx.inventory.interrupt_actions(self.env.name)
        if interrupted:
            self.ctx.say(f"monitor: {interrupted} action(s) of a previous run were interrupted; reconciling")
        api = Api(self.control, self.ctx.inventory, self.status_file.with_suffix(".url"))
        self.ctx.say(f"monitor: {self.env.name}, a pass every {self.env.monitor.interval:g}s; status page and "
                     f"API for local users: {self.status_file.with_suffix('.url')}")
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    self.pass_once()
                except (BootedError, OSError, sqlite3.Error) as exc:  # a full disk, a lock: next pass tries again
                    storage = storage_error(exc, self.ctx.settings.state_dir)
                    self.ctx.say(f"monitor: pass failed: {storage or exc}")
                warmpool.wait(self, stop, max(0.0, self.env.monitor.interval - (time.monotonic() - started)))
        finally:
            self.refill.join()  # a refill under way ends as an action does: the host warm, or stopped
            self.fleet.close()
            api.close()
