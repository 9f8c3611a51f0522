"""Stand-ins at the two process boundaries of the engine, for tests without root, hosts or SSH:

- FakeProvider makes no hosts: a started host "boots" by writing its boot-log line (as nginx would log its
  phone-home) and answering SSH's banner on a loopback port (as its sshd would);
- FakeFleet opens no SSH connection: it reads which operation a rendered remote script is (its first line)
  and its quoted values, and keeps each host's releases, current/previous and running state as the script
  would on a host; the health URL answers from that state.
Both share a World the test inspects.
"""

from __future__ import annotations

import json
import shlex
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from booted.config import Settings
from booted.hosts.identity import Identity, fingerprint
from booted.providers.base import Progress, Provider, Started
from booted.providers.lab import Lab
from booted.remote.fanout import Fleet, StepFailed, Target


@dataclass
class FakeHost:
    current: str | None = None
    previous: str | None = None
    running: bool = False
    backends: str = ""  # a proxy's list (its health checks take every one in at once)


@dataclass
class World:
    """What the fake provider and fleet share: which hosts run, what they serve, what was asked."""

    running: dict[str, int] = field(default_factory=dict)
    hosts: dict[str, FakeHost] = field(default_factory=dict)
    fail_start: set[str] = field(default_factory=set)  # the provider cannot start these
    silent: set[str] = field(default_factory=set)  # start, but never phone home
    no_serve: set[str] = field(default_factory=set)  # their serve.sh fails at boot (booted deploys over SSH)
    dead: set[str] = field(default_factory=set)  # unreachable over SSH
    scripts: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # (host, op, values)
    calls: list[str] = field(default_factory=list)  # provider methods, in order
    banners: dict[str, socket.socket] = field(default_factory=dict)

    def close(self) -> None:
        for sock in self.banners.values():
            sock.close()


def _banner(world: World, name: str) -> int:
    """A loopback port that greets like sshd (the host's SSH, reached the way a user-mode VM's is)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    world.banners[name] = sock

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"SSH-2.0-fake\r\n")
    threading.Thread(target=serve, daemon=True).start()
    return int(sock.getsockname()[1])


def boot_line(host: str, mac: str, ip: str, hostkey: str, token: str, remote: str | None = None,
              at: float | None = None, serving: str = "") -> str:
    """A boot-log line as booted's nginx writes it for the boot script's call (or for a forged one)."""
    fields = {"host": host, "mac": mac, "ip": ip, "hostkey": hostkey, "token": token}
    args = urllib.parse.urlencode({**fields, "serving": serving} if serving else fields)
    return f'booted1 {time.time() if at is None else at:.3f} {remote or ip} "{args}"\n'


class FakeProvider(Provider):
    name = "fake"

    def __init__(self, settings: Settings, world: World) -> None:
        super().__init__(settings)
        self.world = world
        self.ports: dict[str, int] = {}

    def check(self, lab: Lab | None = None) -> None:
        self.world.calls.append("check")

    def host_of(self, lab: Lab, argv: list[str]) -> str | None:
        return None

    def running(self, lab: Lab) -> dict[str, int]:
        return dict(self.world.running)

    def prepare_network(self, lab: Lab) -> None:
        self.world.calls.append("prepare_network")

    def listen_addresses(self, lab: Lab) -> list[str]:
        return []  # no nginx needed: the fake writes the boot log itself

    def endpoints(self, lab: Lab, name: str) -> dict[int, tuple[str, int]]:
        port = self.ports.get(name) or (self.world.banners[name].getsockname()[1]
                                        if name in self.world.banners else None)
        return {22: ("127.0.0.1", port)} if port else {}

    def start(self, lab: Lab, hosts: list[Identity], progress: Progress) -> tuple[list[Started], dict[str, str]]:
        self.world.calls.append("start")
        started, errors = [], {}
        for host in hosts:
            if host.name in self.world.fail_start:
                errors[host.name] = "could not start: fake failure"
                continue
            self.world.running[host.name] = 40000 + len(self.world.running)
            self.world.hosts.setdefault(host.name, FakeHost())
            self.ports[host.name] = _banner(self.world, host.name)
            started.append(Started(host.name, self.world.running[host.name]))
            if host.name not in self.world.silent:
                self._phone_home(host)
        return started, errors

    def _phone_home(self, host: Identity) -> None:
        """As the boot script: run serve.sh (here: take the release it names), then phone home, naming the
        release when it serves."""
        serving = ""
        if host.serve and host.release:
            _, values = parse_script(host.serve)
            self.world.scripts.append((host.name, "serve", values))
            if host.name not in self.world.no_serve:
                fake = self.world.hosts[host.name]
                fake.previous, fake.current, fake.running = fake.current, values["rel"], True
                fake.backends = values.get("list", "")
                serving = host.release
        pub = Path(f"{host.host_key}.pub").read_text()
        log = self.settings.boot_log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(boot_line(host.name, host.mac, host.ip, fingerprint(pub), host.boot_token, serving=serving))

    def stop(self, lab: Lab, names: list[str]) -> dict[str, str]:
        self.world.calls.append("stop")
        for name in names:
            self.world.running.pop(name, None)
            if name in self.world.banners:
                self.world.banners.pop(name).close()
            if name in self.world.hosts:
                self.world.hosts[name].running = False
        return {}

    def clone(self, lab: Lab, src: str, new: str) -> None:
        self.world.calls.append("clone")

    def teardown(self, lab: Lab) -> None:
        self.world.calls.append("teardown")


def parse_script(script: str) -> tuple[str, dict[str, str]]:
    """The operation (first line `# booted: OP`) and the quoted values a rendered script starts with."""
    first = script.split("\n", 1)[0]
    op = first.removeprefix("# booted: ") if first.startswith("# booted: ") else "command"
    values: dict[str, str] = {}
    lexer = shlex.shlex(script, posix=True)
    lexer.whitespace_split = True
    for token in lexer:  # lazily: stops at the first token that is not an assignment
        key, sep, value = token.partition("=")
        if not sep or not key.isidentifier():
            break
        values[key] = value
    return op, values


def version_of(release: str | None) -> str | None:
    """'releases/1.1-0123456789' -> '1.1'"""
    return release.split("/", 1)[1].rsplit("-", 1)[0] if release else None


class FakeFleet(Fleet):
    def __init__(self, world: World, tmp: Path, parallel: int = 8) -> None:
        super().__init__(tmp / "key", tmp / "known_hosts", "root", parallel)
        self.world = world

    def _host(self, target: Target) -> FakeHost:
        if target.name in self.world.dead:
            raise OSError(113, "No route to host")
        return self.world.hosts.setdefault(target.name, FakeHost())

    def put(self, target: Target, data: bytes, path: str) -> None:
        self._host(target)

    def sh(self, target: Target, script: str) -> str:
        host = self._host(target)
        op, values = parse_script(script)
        self.world.scripts.append((target.name, op, values))
        if op in ("deploy", "backends") and values.get("upstream", "x"):
            host.backends = values.get("list", host.backends)
        if op == "stats":
            servers = {b: {"status": "UP"} for b in host.backends.split(",") if b}
            return json.dumps({"requests": 0, "backends": sorted(servers), "servers": servers})
        if op == "deploy":
            out = ["unchanged"]
            if host.current != values["rel"]:
                host.previous, host.current, out = host.current, values["rel"], ["switched"]
            if values.get("restart") and host.running and out == ["switched"]:
                out.append("started")
            out.append("state=running" if host.running else "state=stopped")  # deploy.sh's last line
            return "\n".join(out)
        if op == "start":
            if host.current is None:
                raise StepFailed("not deployed here")
            host.running = True
            return "started"
        if op == "stop":
            was, host.running = host.running, False
            return "stopped" if was else "was not running"
        if op == "rollback":
            if host.previous is None:
                raise StepFailed("no previous release to roll back to")
            host.current, host.previous, host.running = host.previous, host.current, True
            return f"version {version_of(host.current)}\nstopped\nstarted"
        return f"ran: {script}"

    def answers(self, targets: list[Target], deadline: float = 0.5) -> dict[str, bool]:
        return {t.name: t.name not in self.world.dead for t in targets}

    def http_get(self, target: Target, port: int, path: str, timeout: float = 5.0) -> tuple[str, bytes]:
        url = f"http://{target.ip}:{port}{path}"
        host = self._host(target)
        if not host.running:
            raise StepFailed(f"{url}: [Errno 111] Connection refused")
        return url, json.dumps({"host": target.name, "version": version_of(host.current)}).encode()
