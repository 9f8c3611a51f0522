"""lb: a small round-robin HTTP proxy for booted labs. /health answers for the proxy itself; every other
path is forwarded to the next backend that answers (a dead backend is skipped, not fatal)."""

import argparse
import itertools
import json
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = (Path(__file__).resolve().parent / "VERSION").read_text().strip()
HOST = socket.gethostname()


def make_handler(backends):
    ring = itertools.cycle(backends)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path == "/health":
                body = {"service": "lb", "host": HOST, "version": VERSION, "status": "ok", "backends": backends}
                return self.reply(200, json.dumps(body).encode(), "application/json")
            for _ in backends:
                with lock:
                    backend = next(ring)
                try:
                    with urllib.request.urlopen(f"http://{backend}{self.path}", timeout=3) as resp:
                        return self.reply(resp.status, resp.read(), resp.headers.get("Content-Type", "text/plain"))
                except OSError:
                    continue
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
    parser.add_argument("--backends", default="", help="ip:port,ip:port,...")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    ThreadingHTTPServer((args.bind, args.port), make_handler(backends)).serve_forever()


if __name__ == "__main__":
    main()
