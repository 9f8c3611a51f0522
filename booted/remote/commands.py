"""What each service operation sends to a host: booted/remote/scripts/*.sh rendered with one host's values.

Layout on a host (BASE = /srv/booted/<service>): releases/<version>-<hash>/, `current` and `previous`
symlinks switched with rename(2), run.sh (the supervisor loop), supervisor.pid, service.log.
"""

from __future__ import annotations

import hashlib
import shlex

from booted.remote import scripts
from booted.remote.fanout import Target
from booted.remote.packing import Release
from booted.remote.services import Service

ROOT = "/srv/booted"
FETCH_FAILED = 7  # deploy.sh's exit code when the host cannot fetch the release from booted's nginx
RUNNING = "state=running"  # deploy.sh's last line when the service runs on the host afterwards


def service_dir(service: Service) -> str:
    """Where a service lives on a host (its releases, current, previous, run.sh)."""
    return f"{ROOT}/{service.name}"


def host_values(service: Service, target: Target) -> dict[str, str]:
    """The values every script of `service` gets on `target` (lib.sh's base, service, url, port, reuse_port,
    on_backends)."""
    return {"base": service_dir(service), "service": service.name,
            "url": f"http://{target.service_ip}:{service.port}{service.health}", "port": str(service.port),
            "port_hex": f"{service.port:04X}",
            "reuse_port": "1" if service.reuse_port else "",
            "on_backends": quoted_command(service.on_backends, service, target, "", "") if service.on_backends else ""}


def quoted_command(command: str, service: Service, target: Target, version: str, backends: str) -> str:
    """A service.toml command with its placeholders ({ip} {port} {host} {version} {backends}) quoted."""
    values = {"ip": target.service_ip, "port": str(service.port), "host": target.name, "version": version,
              "backends": backends}
    return command.format(**{k: shlex.quote(v) for k, v in values.items()})


def run_sh(service: Service, target: Target, version: str, backends: str) -> str:
    """run.sh of a host: the supervisor loop around service.toml's `start`, placeholders quoted."""
    return scripts.run_sh({"base": service_dir(service), "service": service.name},
                          quoted_command(service.start, service, target, version, backends))


def deploy_script(service: Service, target: Target, release: Release, incoming: str, backends: str,
                  restart: bool = True, fetch: tuple[str, str] | None = None, start: bool = False) -> str:
    """Fetch (`fetch`: URL and sha256 on booted's nginx) or take the uploaded `incoming`, unpack, run the
    setup command once, switch, and (with `restart`) restart the service where wanted (`start`: anyway)."""
    url, sha = fetch or ("", "")
    supervisor = run_sh(service, target, release.version, backends)
    return scripts.render("deploy", {**host_values(service, target), "rel": f"releases/{release.id}",
                                     "tgz": incoming, "fetch": url, "sha256": sha, "run_sh": supervisor,
                                     "run_id": hashlib.sha256(supervisor.encode()).hexdigest()[:16],
                                     "restart": "1" if restart else "", "start": "1" if start else "",
                                     "upstream": service.upstream or "", "list": backends,
                                     "setup": quoted_command(service.setup, service, target, release.version, backends)
                                     if service.setup else ""})


def backends_script(service: Service, target: Target, backends: str) -> str:
    """Replace a proxy's live backend list (no restart)."""
    return scripts.render("backends", {**host_values(service, target), "list": backends})


def stats_script(service: Service, target: Target) -> str:
    """Print a proxy's counters as JSON (service.toml's `stats`)."""
    assert service.stats is not None
    return scripts.render("stats", {**host_values(service, target),
                                    "stats": quoted_command(service.stats, service, target, "", "")})


def start_script(service: Service, target: Target) -> str:
    return scripts.render("start", host_values(service, target))


def stop_script(service: Service, target: Target) -> str:
    """Stop the service, then verify it is gone (no supervisor, nothing on its port)."""
    return scripts.render("stop", host_values(service, target))


def rollback_script(service: Service, target: Target) -> str:
    return scripts.render("rollback", host_values(service, target))
