"""hello: a tiny HTTP service for booted labs. /health answers with host name and version as JSON."""

import argparse
import json
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = (Path(__file__).resolve().parent / "VERSION").read_text().strip()
HOST = socket.gethostname()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/health":
            body = json.dumps({"service": "hello", "host": HOST, "version": VERSION, "status": "ok"}).encode()
            kind = "application/json"
        elif self.path == "/":
            body = f"hello from {HOST} (version {VERSION})\n".encode()
            kind = "text/plain"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    """Binds with SO_REUSEPORT (a new release starts beside this one: service.toml's reuse_port) and, on
    SIGTERM, stops accepting, closes its listener and finishes the requests it has (no daemon threads)."""

    daemon_threads = False
    request_queue_size = 64

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True, help="address to listen on (the host's lab IP)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = Server((args.bind, args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever(poll_interval=0.05)
    server.server_close()  # the listener closes; the answers in flight are finished


if __name__ == "__main__":
    main()
