"""lb: a small round-robin HTTP proxy for booted labs. /health answers for the proxy itself, with its
counters (requests served; per backend: requests, errors, in flight, mean latency); every other path is
forwarded to the next backend that answers: a backend that fails is skipped, the request retried on the
next, and the failed backend left out for EJECT_SECONDS before it is tried again.

The backend list is live: --backends-file (written by booted over SSH, never through the lab network) is
re-read when it changes, so the monitor adds and removes workers without a restart or a dropped request."""

import argparse
import itertools
import json
import os
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = (Path(__file__).resolve().parent / "VERSION").read_text().strip()
EJECT_SECONDS = 2.0
HOST = socket.gethostname()


class Backends:
    """The backend ring, reloaded from a file when its mtime changes; counters per backend."""

    def __init__(self, initial, path):
        self.lock = threading.Lock()
        self.path, self.mtime = path, None
        self.counts = {}
        self.requests = 0
        self.set(initial)

    def set(self, backends):
        self.list = backends
        self.ring = itertools.cycle(backends) if backends else None
        self.down = {}  # backend -> until when it is left out (monotonic time)
        for b in backends:
            self.counts.setdefault(b, {"requests": 0, "errors": 0, "in_flight": 0, "seconds": 0.0})

    def reload(self):
        if not self.path:
            return
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return
        if mtime != self.mtime:
            text = Path(self.path).read_text()
            with self.lock:
                self.mtime = mtime
                self.set([b for b in text.replace(",", " ").split() if b])

    def next(self):
        """The next backend that is not left out (any, if all are), and how many there are."""
        with self.lock:
            if not self.ring:
                return None, 0
            now = time.monotonic()
            for _ in self.list:
                backend = next(self.ring)
                if self.down.get(backend, 0) <= now:
                    break
            self.counts[backend]["in_flight"] += 1
            return backend, len(self.list)

    def count(self, backend, ok, seconds):
        with self.lock:
            entry = self.counts.setdefault(backend, {"requests": 0, "errors": 0, "in_flight": 1, "seconds": 0.0})
            entry["in_flight"] -= 1
            entry["requests" if ok else "errors"] += 1
            if ok:
                entry["seconds"] += seconds
                self.requests += 1
                self.down.pop(backend, None)
            else:
                self.down[backend] = time.monotonic() + EJECT_SECONDS


def make_handler(backends):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            backends.reload()
            if self.path == "/health":
                with backends.lock:
                    body = {"service": "pylb", "host": HOST, "version": VERSION, "status": "ok",
                            "backends": list(backends.list), "requests": backends.requests,
                            "per_backend": {b: {"requests": c["requests"], "errors": c["errors"],
                                                "in_flight": c["in_flight"],
                                                "mean_ms": round(1000 * c["seconds"] / c["requests"], 2)
                                                if c["requests"] else None}
                                            for b, c in backends.counts.items()}}
                return self.reply(200, json.dumps(body).encode(), "application/json")
            backend, tries = backends.next()
            for attempt in range(tries):
                start = time.monotonic()
                try:
                    with urllib.request.urlopen(f"http://{backend}{self.path}", timeout=3) as resp:
                        data = resp.read()
                        backends.count(backend, True, time.monotonic() - start)
                        return self.reply(resp.status, data, resp.headers.get("Content-Type", "text/plain"))
                except OSError:
                    backends.count(backend, False, 0.0)
                    if attempt + 1 < tries:
                        backend, _ = backends.next()
            return self.reply(502, b"no backend answered\n", "text/plain")

        def reply(self, code, body, kind):
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True, help="address to listen on (the host's lab IP)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--backends", default="", help="ip:port,ip:port,... (until --backends-file exists)")
    parser.add_argument("--backends-file", default="", help="a file with the backend list, re-read on change")
    args = parser.parse_args()
    backends = Backends([b for b in args.backends.split(",") if b], args.backends_file)
    ThreadingHTTPServer((args.bind, args.port), make_handler(backends)).serve_forever()


if __name__ == "__main__":
    main()
