"""A lab's impaired links: what each host's link should be (environments.py's `impair`, overridden by
net_impair and net_clear), applied to the running hosts' NICs on this machine (impair/kernel.py), and what
is live (net_status).

Recorded in the lab's folder (`impair.json`), written under the lab lock: `want` holds net_impair's and
net_clear's word per host and network ({} = cleared: environments.py's impairment is off too, until
env_stop), `live` what was applied to which interface by which mechanisms. A host that (re)starts gets its
impairment again (the lab handle calls `apply`); a stopped host's delay lines end (`stopped`); env_stop
forgets everything (`forget`). Each network a host is on is its own link here (the provider's
`local_nics`: network -> interface); a lab with one network names it after its environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from booted.environments import Environment
from booted.environments.impairment import Impairment, impairment, ms_text, rate_text
from booted.errors import BootedError, ConfigError
from booted.impair import kernel
from booted.kit import Kit
from booted.providers.base import Provider
from booted.providers.lab import Lab
from booted.results import HostResult

Records = dict[str, dict[str, dict[str, Any]]]  # host -> network -> value


class LabLinks:
    def __init__(self, kit: Kit, lab: Lab, env: Environment, provider: Provider,
                 locked: Callable[[str], AbstractContextManager[None]]) -> None:
        self.kit, self.lab, self.env, self.provider, self.locked = kit, lab, env, provider, locked
        self.path, self.run_dir = lab.dir / "impair.json", lab.dir / "impair"

    # what is wanted ----------------------------------------------------------------------------------
    def networks(self, network: str | None = None, host: str | None = None) -> list[str]:
        """The lab's networks (`network`: only that one, checked; `host`: only those it is on)."""
        names = [n.name for n in self.env.networks]
        if network is not None and network not in names:
            raise ConfigError(f"environment {self.env.name!r} has no network {network!r} (networks: "
                              f"{', '.join(names)}: a lab with one network names it after its environment)")
        on = [n.name for n in self.env.host_nets(host)] if host is not None else names
        return [n for n in names if n in on and n == (network or n)]

    def hosts(self, names: list[str] | None) -> list[str]:
        """The named hosts (checked: of this environment), or all of them."""
        known = sorted({h.name for h in self.env.hosts} | {i.name for i in self.kit.inventory.images(self.env.name)})
        for name in names or []:
            if name not in known:
                raise ConfigError(f"environment {self.env.name!r} has no host {name!r} (hosts: {', '.join(known)})")
        return names or known

    def wanted(self, records: dict[str, Records], host: str, network: str) -> Impairment:
        said = records["want"].get(host, {}).get(network)
        if said is not None:
            return impairment(said)
        spec = next((h for h in self.env.hosts if h.name == host), None)
        return spec.impair if spec is not None and spec.impair is not None else self.env.impair

    # tasks -------------------------------------------------------------------------------------------
    def impair(self, names: list[str] | None, network: str | None, spec: Impairment) -> list[HostResult]:
        """Impair the hosts' links (on one network, or all) as `spec` says; recorded, so a host that starts
        later, or again, gets it too."""
        return self._set(names, network, spec.as_dict(), "impairing links of")

    def clear(self, names: list[str] | None, network: str | None) -> list[HostResult]:
        """No impairment on the hosts' links (environments.py's included) until env_stop or net_impair."""
        return self._set(names, network, {}, "clearing links of")

    def _set(self, names: list[str] | None, network: str | None, value: dict[str, str], what: str
             ) -> list[HostResult]:
        hosts, networks = self.hosts(names), self.networks(network)
        with self.locked(what):
            records = self._load()
            for host in hosts:
                for net in (n for n in networks if n in self.networks(host=host)):
                    records["want"].setdefault(host, {})[net] = value
            self._save(records)
            return self._apply(records, hosts)

    def apply(self, names: list[str]) -> list[HostResult]:
        """Make the running hosts' links what is wanted (a host started or restarted): converges."""
        with self.locked("impairing links of"):
            return self._apply(self._load(), names)

    def failed(self, names: list[str]) -> dict[str, str]:
        """`apply` at a (re)start: host -> why its links are not as wanted (the host runs, but not so)."""
        return {r.host: f"started, but its links are not impaired as wanted: {r.detail}"
                for r in self.apply(names) if not r.ok}

    def stopped(self, names: list[str]) -> None:
        """Hosts that stopped: their links are gone; so go their delay lines and what was live."""
        with self.locked("clearing links of"):
            records = self._load()
            gone = [live for name in names for live in records["live"].pop(name, {}).values()]
            for live in gone:
                kernel.clear_link(self.run_dir, live["interface"])
            if gone:
                self._save(records)

    def forget(self) -> None:
        """env_stop: nothing impaired, nothing recorded (a fresh start applies environments.py again)."""
        if not self.path.exists():
            return  # nothing was ever impaired: nothing to ask the kernel
        with self.locked("clearing links of"):
            records = self._load()
            for host in records["live"].values():
                for live in host.values():
                    kernel.clear_link(self.run_dir, live["interface"])
            kernel.sync_loss(self.lab.lab_id, {})
            self.path.unlink(missing_ok=True)

    def status(self) -> list[dict[str, Any]]:
        """One row per impaired link (wanted, or still live): what it is, on which interface, by which
        mechanisms, and whether it is in force."""
        records, running = self._load(), self.provider.running(self.lab)
        rows = []
        for host in self.hosts(None):
            for net in self.networks(host=host):
                spec, live = self.wanted(records, host, net), records["live"].get(host, {}).get(net)
                if not spec and not live:
                    continue
                mechanisms = live["mechanisms"] if live else {}
                rows.append({"host": host, "network": net, "interface": live["interface"] if live else None,
                             "delay": ms_text(spec.delay_ms) if spec.delay_ms else None,
                             "jitter": ms_text(spec.jitter_ms) if spec.jitter_ms else None,
                             "loss": f"{spec.loss_pct:g}%" if spec.loss_pct else None,
                             "rate": rate_text(spec.rate_bits) if spec.rate_bits else None,
                             "mechanism": mechanisms, "state": self._state(host in running, live, spec)})
        return rows

    def _state(self, running: bool, live: dict[str, Any] | None, spec: Impairment) -> str:
        if not running:
            return "host not running (applied when it starts)"
        if live is None or live.get("spec") != spec.as_dict():
            return "not applied as wanted (environments.py changed? fab net_impair, or start the host again)"
        if live["mechanisms"].get("delay") == kernel.DELAY_LINE and \
                kernel.delay_line_pid(self.run_dir, live["interface"]) is None:
            return "FAILED: its delay line is not running (fab net_impair again)"
        return "applied"

    # applying ----------------------------------------------------------------------------------------
    def _apply(self, records: dict[str, Records], names: list[str]) -> list[HostResult]:
        if not self.path.exists() and not self.env.impair and not any(h.impair for h in self.env.hosts):
            return [HostResult(n, True, "not impaired") for n in names]  # the usual lab: no tc, no nft
        running = self.provider.running(self.lab)
        images = self.kit.inventory.images_named(set(names))
        had_loss = bool(self._losses(records, running))
        results = []
        for name in names:
            if name not in running or name not in images:
                records["live"].pop(name, None)
                results.append(HostResult(name, True, "not running: recorded, applied when it starts"))
                continue
            nics = self.provider.local_nics(self.lab, name, images[name].ip)
            done, errors = [], []
            for net in self.networks(host=name):
                spec, link = self.wanted(records, name, net), nics.get(net)
                if link is None:
                    if spec:
                        errors.append(f"network {net}: its NIC is no link on this machine (provider "
                                      f"{self.provider.name}: README, Impaired links)")
                    continue
                try:
                    done.append(self._apply_link(records, name, net, link, spec))
                except BootedError as exc:
                    errors.append(f"network {net}: {exc}")
            results.append(HostResult(name, not errors, "; ".join(errors or done)))
        self._save(records)
        losses = self._losses(records, running)
        try:
            if losses or had_loss:
                kernel.sync_loss(self.lab.lab_id, losses)
        except BootedError as exc:
            results = [HostResult(r.host, False, f"{r.detail}; loss: {exc}") for r in results]
        return results

    def _apply_link(self, records: dict[str, Records], host: str, net: str, link: str, spec: Impairment) -> str:
        if not spec:
            if records["live"].get(host, {}).pop(net, None) is not None:
                kernel.clear_link(self.run_dir, link)
            return f"{link}: not impaired"
        records["live"].get(host, {}).pop(net, None)  # until applied: a failure leaves nothing claimed
        used = kernel.apply_link(self.run_dir, link, spec)
        if spec.loss_pct:
            used["loss"] = kernel.NFTABLES
        records["live"].setdefault(host, {})[net] = {"interface": link, "mechanisms": used, "spec": spec.as_dict()}
        parts = [f"{k} {v}" for k, v in spec.as_dict().items()]
        return f"{link}: {', '.join(parts)} ({', '.join(f'{k}: {m}' for k, m in sorted(used.items()))})"

    def _losses(self, records: dict[str, Records], running: dict[str, int]) -> dict[str, float]:
        """Every live link's loss (the loss table is rewritten whole)."""
        return {live["interface"]: self.wanted(records, host, net).loss_pct
                for host, nets in records["live"].items() if host in running
                for net, live in nets.items() if live["mechanisms"].get("loss")}

    # records -----------------------------------------------------------------------------------------
    def _load(self) -> dict[str, Records]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = {}
        return {"want": dict(data.get("want", {})), "live": dict(data.get("live", {}))}

    def _save(self, records: dict[str, Records]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)
