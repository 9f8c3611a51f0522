"""The monitor's status and control API, for local users only: HTTP on 127.0.0.1 with a token kept in the
state directory (0600), so neither the lab network nor another user reaches it.

  GET  /                         the status page (no external assets): hosts per role, load and serving
                                 hosts over time with the monitor's actions marked
  GET  /api/status               the last pass (JSON), and its history
  GET  /api/events               recent actions with reason and outcome
  GET  /api/timeline             the last heal or start of a host, and where that boot's time went (phases,
                                 a waterfall SVG)
  GET  /metrics                  Prometheus text format
  POST /api/hosts/NAME/reprovision   restart, redeploy and test a host at the next pass
  POST /api/hosts/NAME/dismiss       drop a reprovision that has not started
One action per host at a time: a request for a host that is busy or already queued is refused (409).
"""

from __future__ import annotations

import hmac
import json
import secrets
import sys
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from booted.report import when
from booted.report_svg import waterfall
from booted.state import timelines

if TYPE_CHECKING:
    from booted.state.inventory import Inventory

PAGE = Path(__file__).resolve().parent / "page.html"


class Control:
    """What the API and the daemon share (a lock around it): the last pass, its history, requests."""

    def __init__(self, env: str, hosts: set[str]) -> None:
        self.env, self.hosts = env, hosts
        self.lock = threading.Lock()
        self.status: dict[str, Any] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=600)
        self.queued: dict[str, str] = {}  # host -> what was asked
        self.busy: str | None = None  # the host the daemon acts on now

    def record(self, status: dict[str, Any]) -> None:
        point = {"at": status["at"], "roles": {r: {"load": v["load"], "healthy": len(v["healthy"]),
                                                   "warm": len(v.get("warm", []))}
                                               for r, v in status["roles"].items()}}
        with self.lock:
            self.status = status
            self.history.append(point)

    def request(self, host: str, what: str) -> tuple[int, str]:
        with self.lock:
            if host not in self.hosts:
                return 404, f"no host {host!r} in environment {self.env!r}"
            if self.busy == host or host in self.queued:
                return 409, f"{host} is busy ({'in progress' if self.busy == host else self.queued[host]}): " \
                            "one action per host at a time"
            self.queued[host] = what
            return 202, f"{what} of {host} queued for the next pass"

    def dismiss(self, host: str) -> tuple[int, str]:
        with self.lock:
            if self.busy == host:
                return 409, f"{host}'s action is in progress and cannot be dismissed"
            if self.queued.pop(host, None) is None:
                return 404, f"nothing queued for {host}"
            return 200, f"dismissed the queued action on {host}"

    def take(self) -> list[tuple[str, str]]:
        with self.lock:
            items, self.queued = list(self.queued.items()), {}
            return items

    def set_busy(self, host: str | None) -> None:
        with self.lock:
            self.busy = host


BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)  # seconds: a warm take to a TCG boot
FINISHED = ("done", "failed", "interrupted")


def metrics(env: str, status: dict[str, Any], counts: dict[tuple[str, str], int],
            took: dict[str, list[float]]) -> str:
    """Prometheus text: hosts per role and state and load (gauges, from the last pass); finished actions by kind
    and outcome (counters over every action in the database: they never go down, restarts included); heal and
    scale-up durations (histograms, from the same records)."""
    lines = ["# HELP booted_hosts Hosts of a role by state.", "# TYPE booted_hosts gauge"]
    for role, v in status.get("roles", {}).items():
        for state in ("running", "healthy", "held"):
            lines.append(f'booted_hosts{{env="{env}",role="{role}",state="{state}"}} {len(v[state])}')
        lines.append(f'booted_hosts{{env="{env}",role="{role}",state="wanted"}} {v["wanted"] or 0}')
    lines += ["# HELP booted_load_requests_per_second Load measured at the lb, per role.",
              "# TYPE booted_load_requests_per_second gauge"]
    for role, v in status.get("roles", {}).items():
        if v["load"] is not None:
            lines.append(f'booted_load_requests_per_second{{env="{env}",role="{role}"}} {v["load"]:.3f}')
    lines += ["# HELP booted_actions_total Finished monitor actions by kind and outcome.",
              "# TYPE booted_actions_total counter"]
    lines += [f'booted_actions_total{{env="{env}",kind="{k}",status="{s}"}} {n}'
              for (k, s), n in sorted(counts.items()) if s in FINISHED]
    lines += ["# HELP booted_actions_in_progress Monitor actions under way.", "# TYPE booted_actions_in_progress gauge",
              f'booted_actions_in_progress{{env="{env}"}} '
              f'{sum(n for (_, s), n in counts.items() if s not in FINISHED)}']
    for kind, name, what in (("heal", "booted_heal_seconds", "a heal (restart, redeploy, test) took"),
                             ("start", "booted_scaleup_seconds", "a scale-up start took until the host served"),
                             ("take", "booted_warm_take_seconds", "taking a warm host (resume, check, lb) took")):
        values = took.get(kind, [])
        lines += [f"# HELP {name} Seconds {what}.", f"# TYPE {name} histogram"]
        lines += [f'{name}_bucket{{env="{env}",le="{b:g}"}} {sum(1 for v in values if v <= b)}' for b in BUCKETS]
        lines += [f'{name}_bucket{{env="{env}",le="+Inf"}} {len(values)}',
                  f'{name}_sum{{env="{env}"}} {sum(values):.3f}', f'{name}_count{{env="{env}"}} {len(values)}']
    return "\n".join(lines) + "\n"


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that never writes a traceback: a client that went away is not news (nothing is
    logged), anything else is one line."""

    daemon_threads = True
    request_queue_size = 64  # a burst of clients waits in the backlog instead of retrying a dropped SYN after 1 s

    def handle_error(self, request: object, client_address: object) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        host = client_address[0] if isinstance(client_address, tuple) else client_address
        print(f"monitor api: request from {host} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def action_timeline(inventory: Inventory, env: str, actions: list[dict[str, Any]]) -> dict[str, Any]:
    """The last finished heal or start (of `actions`, newest first: the monitor booted a host) with that
    boot's timeline as env_timeline shows it: phases and a waterfall picture. {} before the first one."""
    act = next((a for a in actions if a["kind"] in ("heal", "start") and a["finished"] is not None), None)
    if act is None:
        return {}
    starts = timelines.during(inventory, env, act["host"], act["started"], act["finished"])
    last = max(starts, key=lambda t: t.start, default=None)
    if last is None:
        return {"action": act, "hosts": [], "svg": ""}
    title = f"{act['kind']} of {last.host} at {when(last.start)}: {timelines.total(last):.2f} s to verified"
    return {"action": act, "hosts": [timelines.as_json(last)],
            "svg": waterfall(title, [(last.host, timelines.phases(last))])}


def authorized(given: str, token: str) -> bool:
    """Whether a request's token is the API's: compared in constant time, as UTF-8 bytes (any text a client
    sends, non-ASCII included, is a yes or a no, never an error)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode())


class Api:
    """The HTTP server (a daemon thread); `url` carries the token."""

    def __init__(self, control: Control, inventory: Inventory, url_file: Path) -> None:
        self.control, self.inventory = control, inventory
        self.token = secrets.token_urlsafe(24)
        self.server = Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/?token={self.token}"
        url_file.parent.mkdir(parents=True, exist_ok=True)
        url_file.touch(mode=0o600)
        url_file.chmod(0o600)
        url_file.write_text(self.url + "\n")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # seconds a client may take to send its request (a stalled one is dropped, silently)

            def _authorized(self) -> bool:
                query = parse_qs(urlsplit(self.path).query)
                given = (query.get("token") or [""])[0] or self.headers.get("Authorization", "").removeprefix(
                    "Bearer ")
                return authorized(given, api.token)

            def do_GET(self) -> None:
                self._answer(self._get)

            def do_POST(self) -> None:
                self._answer(self._post)

            def _answer(self, method: Any) -> None:
                """The method's reply; a failure in it is a 500 and one log line (a client that left: none)."""
                try:
                    method()
                except (ConnectionError, TimeoutError):
                    raise
                except Exception as exc:
                    print(f"monitor api: {self.command} {urlsplit(self.path).path!r}: {type(exc).__name__}: {exc}",
                          file=sys.stderr, flush=True)
                    self.reply(500, {"error": f"{type(exc).__name__}: {exc}"})

            def _get(self) -> None:
                if not self._authorized():
                    return self.reply(401, {"error": "token required (see .booted/monitor/ENV.url)"})
                path = urlsplit(self.path).path
                c = api.control
                if path == "/":
                    return self.send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
                if path == "/api/status":
                    with c.lock:
                        body = {**c.status, "history": list(c.history), "queued": dict(c.queued), "busy": c.busy}
                    return self.reply(200, body)
                actions = api.inventory.actions(c.env, 200)
                if path == "/api/events":
                    return self.reply(200, actions)
                if path == "/api/timeline":
                    return self.reply(200, action_timeline(api.inventory, c.env, actions))
                if path == "/metrics":
                    counts, took = api.inventory.action_totals(c.env)
                    with c.lock:
                        text = metrics(c.env, c.status, counts, took)
                    return self.send(200, text.encode(), "text/plain; version=0.0.4")
                return self.reply(404, {"error": f"no {path}"})

            def _post(self) -> None:
                if not self._authorized():
                    return self.reply(401, {"error": "token required"})
                parts = urlsplit(self.path).path.strip("/").split("/")
                if len(parts) == 4 and parts[:2] == ["api", "hosts"] and parts[3] in ("reprovision", "dismiss"):
                    code, message = (api.control.request(parts[2], "reprovision") if parts[3] == "reprovision"
                                     else api.control.dismiss(parts[2]))
                    return self.reply(code, {"message": message})
                return self.reply(404, {"error": "POST /api/hosts/NAME/reprovision or /dismiss"})

            def reply(self, code: int, body: object) -> None:
                self.send(code, json.dumps(body, default=str).encode(), "application/json")

            def send(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                pass

        return Handler
