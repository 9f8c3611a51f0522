"""An environment's status: desired (environments.py) against observed (what runs, what is listed, what
was deployed, whose SSH answers now), one row per host. `status_rows` is pure; `status` gathers."""

from __future__ import annotations

from booted.environments import Environment
from booted.errors import ConfigError
from booted.lab.handle import LabHandle
from booted.netcheck import listening
from booted.remote.fanout import Fleet
from booted.state import pins as user_pins
from booted.state.inventory import Host, Image, Inventory
from booted.state.records import Pin
from booted.state.warm import warm_hosts

PROBES = ("auto", "ssh")  # how env_status tells a serving host: see reachable()


def status(handle: LabHandle, inventory: Inventory, fleet: Fleet, probe: str = "auto") -> list[dict[str, object]]:
    """The lab's rows: what its provider runs, its images, the host list, deployments, pins, whether SSH serves."""
    if probe not in PROBES:
        raise ConfigError(f"--probe {probe!r}: one of {', '.join(PROBES)}")
    running, images = handle.running(), inventory.images(handle.env.name)
    warm = warm_hosts(inventory, handle.env.name, running)  # paused: their SSH would not answer
    answers = reachable(handle, fleet, [i for i in images if i.name in running and i.name not in warm], running,
                        probe)
    return status_rows(handle.env, running, images, inventory.hosts(), inventory.releases(),
                       user_pins.pins(inventory), answers, warm)


def reachable(handle: LabHandle, fleet: Fleet, images: list[Image], running: dict[str, int],
              probe: str = "auto") -> dict[str, bool]:
    """Whether each running host's SSH serves now. probe "auto": a host in a network namespace of its own
    (provider netns: `own_netns`) by its namespace's socket table (port 22 listening, its holder running,
    nothing left in its accept queue: no connection, so no sshd session per host), every other host (VMs)
    by its SSH banner; "ssh": every host by its banner (what a client sees, at a session per host)."""
    seen = {} if probe == "ssh" or not handle.provider.own_netns \
        else listening({i.name: (running[i.name], i.ip) for i in images})
    rest = [i for i in images if seen.get(i.name) is None]
    banners = fleet.answers([handle.target(i) for i in rest]) if rest else {}
    return {name: ok for name, ok in seen.items() if ok is not None} | banners


def status_rows(env: Environment, running: dict[str, int], images: list[Image], listed: list[Host],
                deployed: dict[tuple[str, str], str], pins: dict[str, Pin] | None = None,
                answers: dict[str, bool] | None = None, warm: set[str] | None = None) -> list[dict[str, object]]:
    """One row per host; `pins`: versions users deployed by hand; `answers`: whether each running host's SSH
    greeted just now (None: not probed, the host list's last check is shown); `warm`: the monitor's paused spares."""
    pins, warm = pins or {}, warm or set()
    by_image = {i.name: i for i in images}
    by_host = {h.name: h for h in listed}
    desired = {h.name: h for h in env.hosts}
    out: list[dict[str, object]] = []
    for name in sorted(set(desired) | set(by_image)):
        spec, img, host = desired.get(name), by_image.get(name), by_host.get(name)
        service = spec.service if spec else (img.service if img else None)
        pin = pins.get(name)
        version = spec.version if spec else None
        pinned = pin is not None and pin.holds(version)
        version = pin.version if pin is not None and pinned else version
        want = f"{service} {version or ''}".strip() if spec and service else (service or "-")
        have = deployed.get((name, service or "")) if service else None
        reachable = (answers.get(name, False) if name in running and name not in warm else None) \
            if answers is not None \
            else (host.reachable if host else None)
        out.append({"host": name, "desired": "yes" if spec else "no (extra)", "image": "yes" if img else "no",
                    "ip": img.ip if img else None, "running": name in running, "listed": host is not None,
                    "reachable": reachable, "want": want + (" (pinned)" if pinned else ""),
                    "pinned": pin.version if pinned and pin else None,
                    "deployed": f"{service} {have}" if have else "-",
                    "warm": name in warm,
                    "state": "warm (paused by the monitor)" if name in warm and spec
                    else verdict(spec is not None, name in running, service, version, have, reachable)})
    return out


def verdict(desired: bool, running: bool, service: str | None, want: str | None, have: str | None,
            reachable: bool | None = None) -> str:
    if not desired:
        return "extra" if running else "extra, stopped"
    if not running:
        return "stopped"
    if reachable is False:
        return "frozen/unreachable"
    if service and have is None:
        return "running, not deployed"
    if service and want and have != want:
        return f"running, drift ({have})"
    return "ok"
