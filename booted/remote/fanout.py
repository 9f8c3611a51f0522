"""Fan-out: run a step on many hosts in parallel, bounded, one result per host, connections reused.

Unlike Fabric's ThreadingGroup (one thread per host, no bound, one exception for all), a Fleet runs at
most `parallel` hosts at once, keeps one SSH connection per host for every step of a task, and returns a
Result for every host: a dead host is one failed row, never an abort of the others.
"""

from __future__ import annotations

import io
import os
import queue
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko
from fabric import Config, Connection
from invoke.exceptions import UnexpectedExit

from booted.errors import BootedError
from booted.netcheck import banners
from booted.results import Done, HostResult


@dataclass(frozen=True)
class Target:
    """A host to work on: its lab IP, and where its ports are reached when not there (user-mode VMs)."""

    name: str
    ip: str
    forwards: tuple[tuple[int, str, int], ...] = ()  # (guest port, address, port) on the controller
    listen: str = ""  # its service's address when on another network than the first ("": at `ip`)
    inside: bool = False  # the controller cannot reach `listen`: the service is asked from the host itself

    @property
    def service_ip(self) -> str:
        """The address its service listens on (service.toml's {ip})."""
        return self.listen or self.ip

    def endpoint(self, port: int) -> tuple[str, int]:
        for guest, addr, fwd in self.forwards:
            if guest == port:
                return addr, fwd
        return self.ip, port


ABANDON_SECONDS = 5.0  # after its timeout, how long a step may take to notice its closed connection
KEEPALIVE_SECONDS = 5


class StepFailed(Exception):
    """Raised inside a step function to fail this host with a one-line reason."""


def describe(exc: BaseException) -> str:
    """A one-line reason for a host's failure, as a sentence (no traceback, no exception class name)."""
    if isinstance(exc, UnexpectedExit):
        res = exc.result
        tail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-2:]
        return f"exit {res.exited}: {' | '.join(tail)}"[:300]
    if isinstance(exc, (StepFailed, BootedError)):
        return str(exc)
    if isinstance(exc, paramiko.BadHostKeyException):
        return "host key does not match the pinned one (refusing to connect)"
    if isinstance(exc, paramiko.AuthenticationException):
        return "login refused: the host does not accept the lab key (made by another state directory?)"
    if isinstance(exc, paramiko.SSHException):
        text = str(exc)
        if "not found in known_hosts" in text:
            return "host key not pinned in the lab's known_hosts (refusing to connect)"
        if "No existing session" in text or "Error reading SSH protocol banner" in text:
            return "SSH did not answer (host stopped, frozen or still booting)"
        return f"SSH failed: {text}"[:300]
    if isinstance(exc, EOFError):
        return "the host closed the connection (stopped or rebooting?)"
    if isinstance(exc, TimeoutError):
        return "no answer in time (host frozen or overloaded?)"
    if isinstance(exc, OSError):
        return f"unreachable: {exc.strerror or exc}"[:300]
    return f"failed: {exc or type(exc).__name__}"[:300]


class Fleet:
    """SSH connections to lab hosts (lab key, pinned host keys) and a bounded parallel runner."""

    def __init__(self, key: Path, known_hosts: Path, user: str, parallel: int, timeout: int = 10) -> None:
        self.key, self.known_hosts, self.user = key, known_hosts, user
        self.parallel, self.timeout = parallel, timeout
        self.abandon = ABANDON_SECONDS
        self.config = Config(ssh_config=paramiko.SSHConfig())
        self._conns: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._pins: tuple[tuple[int, int, int], dict[str, list[paramiko.PKey]]] | None = None
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy, whatever is set

    def connection(self, target: Target) -> Connection:
        """The (reused) connection to a host; host keys are checked against the lab's known_hosts only. Each
        gets its own copy of the config: making a Connection writes to its config (inline_ssh_env), which
        rebuilds it, and a step reading a shared one at that moment failed ("No attribute ... 'runners'")."""
        with self._lock:
            conn = self._conns.get(target.name)
            addr, port = target.endpoint(22)
            if conn is None or (conn.host, conn.port) != (addr, port):
                conn = Connection(addr, port=port, user=self.user, config=self.config.clone(),
                                  connect_timeout=self.timeout,
                                  connect_kwargs={"key_filename": str(self.key), "look_for_keys": False,
                                                  "allow_agent": False, "banner_timeout": self.timeout,
                                                  "auth_timeout": self.timeout})
                pinned = conn.client.get_host_keys()  # this host's pins only (not a parse of every host's)
                name = addr if port == 22 else f"[{addr}]:{port}"  # how paramiko looks it up
                for key in self.pinned().get(name, []):
                    pinned.add(name, key.get_name(), key)
                conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
                self._conns[target.name] = conn
        if not conn.is_connected:  # outside the lock: hosts connect in parallel
            conn.open()
            conn.transport.set_keepalive(KEEPALIVE_SECONDS)
        return conn

    def pinned(self) -> dict[str, list[paramiko.PKey]]:
        """known_hosts by host name, parsed once per version of the file (called under the lock): loading the
        whole file into each connection cost O(hosts^2) per connection (paramiko checks each line against
        those before it): 1.5 ms of CPU per connection at 50 hosts, 30 ms at 500."""
        st = os.stat(self.known_hosts)
        version = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._pins is None or self._pins[0] != version:
            self._pins = (version, known_hosts(self.known_hosts))
        return self._pins[1]

    def sh(self, target: Target, script: str) -> str:
        """Run a shell script on a host (one SSH command); its stdout, stripped."""
        return run_command(self.connection(target), script)

    def put(self, target: Target, data: bytes, path: str) -> None:
        """Write bytes to a file on a host (SFTP)."""
        self.connection(target).put(io.BytesIO(data), path)

    def http_get(self, target: Target, port: int, path: str, timeout: float = 5.0) -> tuple[str, bytes]:
        """GET a host's URL from the controller (at its forwarded port where it has one): (url, body). Never
        through a proxy: http_proxy and friends name the way out, and lab addresses are on this machine."""
        addr, fwd = target.endpoint(port)
        if (addr, fwd) == (target.ip, port):
            addr = target.service_ip
        url = f"http://{addr}:{fwd}{path}"
        if target.inside:  # a network the controller has no address on: curl on the host, over SSH
            try:
                return url, self.sh(target, f"curl -fsS -m {max(1, round(timeout))} {url}").encode()
            except (UnexpectedExit, OSError, paramiko.SSHException) as exc:
                raise StepFailed(f"{url} (asked on {target.name}): {describe(exc)}") from None
        try:
            with self._http.open(url, timeout=timeout) as resp:
                return url, resp.read(65536)
        except OSError as exc:
            raise StepFailed(f"{url}: {getattr(exc, 'reason', exc)}") from None

    def answers(self, targets: list[Target], deadline: float = 0.5) -> dict[str, bool]:
        """Which hosts' SSH greets within one short deadline, all probed at once (env_status: a frozen host
        says so, and hundreds of hosts take no longer than one)."""
        return banners({t.name: t.endpoint(22) for t in targets}, deadline)

    def drop(self, name: str) -> None:
        with self._lock:
            conn = self._conns.pop(name, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, targets: list[Target], step: Callable[[Target], str | Done], label: str = "",
            progress: bool = True, timeout: float = 120.0) -> list[HostResult]:
        """Run `step` on every target, at most `parallel` at once; never raises for a host's failure.

        Every host has `timeout` seconds: then its connection is closed (which ends a read blocked on a
        frozen host) and it fails with "no answer within N s"; a step that still does not return is left
        behind a few seconds later (its thread is a daemon and is replaced), so a run always ends."""
        if not targets:
            return []
        show = progress and sys.stderr.isatty() and len(targets) > 1
        todo: queue.SimpleQueue[Target] = queue.SimpleQueue()
        for target in targets:
            todo.put(target)
        results: dict[str, HostResult] = {}
        began: dict[str, float] = {}
        lock = threading.Lock()

        def one(target: Target) -> HostResult:
            start = time.monotonic()
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                self.drop(target.name)
            timer = threading.Timer(timeout, expire)
            timer.daemon = True
            timer.start()
            version = None
            try:
                out, ok = step(target), True
                detail, version = (out.detail, out.version) if isinstance(out, Done) else (out, None)
            except Exception as exc:  # a host's failure is its row in the table, not everyone's abort
                ok = False
                detail = f"no answer within {timeout:g}s (host frozen or overloaded?)" if expired.is_set() \
                    else describe(exc)
                self.drop(target.name)
            finally:
                timer.cancel()
            return HostResult(target.name, ok, detail, time.monotonic() - start, version)

        def worker() -> None:
            while True:
                try:
                    target = todo.get_nowait()
                except queue.Empty:
                    return
                with lock:
                    began[target.name] = time.monotonic()
                result = one(target)
                with lock:
                    results.setdefault(target.name, result)
                    if show:
                        print(f"\r{label}: {len(results)}/{len(targets)} hosts", end="", file=sys.stderr, flush=True)

        def spawn() -> None:
            threading.Thread(target=worker, daemon=True).start()

        for _ in range(min(self.parallel, len(targets))):
            spawn()
        while True:
            with lock:
                if len(results) == len(targets):
                    break
                now = time.monotonic()
                stuck = [n for n, t in began.items() if n not in results and now - t > timeout + self.abandon]
                for name in stuck:
                    results[name] = HostResult(name, False, f"no answer within {timeout:g}s (host frozen or "
                                               "overloaded?)", now - began[name])
            for _ in stuck:
                spawn()  # the stuck thread is left behind; another takes its place
            time.sleep(0.01)
        if show:
            print(file=sys.stderr)
        return [results[t.name] for t in targets]


def known_hosts(path: Path) -> dict[str, list[paramiko.PKey]]:
    """A known_hosts file as host name -> its keys (a line paramiko cannot read is skipped: no pin from it)."""
    out: dict[str, list[paramiko.PKey]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
        except (paramiko.SSHException, paramiko.hostkeys.InvalidHostKey):
            continue
        if entry is not None:
            for host in entry.hostnames:
                out.setdefault(host, []).append(entry.key)
    return out


def run_command(conn: Connection, command: str) -> str:
    """Run a shell command on a host; raises UnexpectedExit (turned into a row by Fleet.run) on failure."""
    return conn.run(command, hide=True, in_stream=False, warn=False).stdout.strip()
