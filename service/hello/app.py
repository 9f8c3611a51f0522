"""hello: a tiny HTTP service for booted labs. /health answers with host name and version as JSON.

It imports only what it uses (socketserver, no http.server/json/argparse/pathlib): a lab host under software
emulation pays for every module at start-up, and a host serves only once this process listens. It is started as
`python3 -c 'import app; app.main()' ...`: imported, so the bytecode the release carries is used (a script run as
`python3 app.py` is compiled at every start)."""

import os
import signal
import socket
import socketserver
import sys
import threading

VERSION = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "VERSION")).read().strip()
HOST = socket.gethostname()
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 501: "Not Implemented"}
MAX_LINE = 8192  # bytes of a request or header line; more is a bad request


def quoted(text: str) -> str:
    """`text` as a JSON string (host names and versions are plain, this keeps it JSON if they were not)."""
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in text) + '"'


def answer(method: str, path: str) -> tuple[int, str, bytes]:
    """The status, content type and body for a request."""
    if method not in ("GET", "HEAD"):
        return 501, "text/plain", b"not implemented\n"
    if path == "/health":
        body = (f'{{"service": "hello", "host": {quoted(HOST)}, "version": {quoted(VERSION)}, '
                '"status": "ok"}')
        return 200, "application/json", body.encode()
    if path == "/":
        return 200, "text/plain", f"hello from {HOST} (version {VERSION})\n".encode()
    return 404, "text/plain", b"not found\n"


class Handler(socketserver.StreamRequestHandler):
    """One HTTP/1.0 request per connection: the request line, headers up to the blank line, one answer."""

    timeout = 10  # seconds a client may take to send its request

    def handle(self) -> None:
        try:
            line = self.rfile.readline(MAX_LINE + 1)
            while (header := self.rfile.readline(MAX_LINE + 1)) not in (b"\r\n", b"\n", b""):
                if len(header) > MAX_LINE:
                    line = b""
                    break
        except OSError:  # the client went away or was too slow
            return
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or len(line) > MAX_LINE or not parts[2].startswith("HTTP/"):
            status, kind, body, method = 400, "text/plain", b"bad request\n", "GET"
        else:
            method = parts[0]
            status, kind, body = answer(method, parts[1])
        head = (f"HTTP/1.0 {status} {REASONS[status]}\r\nServer: hello\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            self.wfile.write(head if method == "HEAD" else head + body)
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    """Binds with SO_REUSEPORT (a new release starts beside this one: service.toml's reuse_port) and, on
    SIGTERM, stops accepting, closes its listener and finishes the requests it has (no daemon threads)."""

    daemon_threads = False
    block_on_close = True
    request_queue_size = 64
    allow_reuse_address = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def options(argv: list[str]) -> tuple[str, int]:
    """--bind ADDRESS (the host's lab IP) and --port N (default 8000)."""
    given = dict(zip(argv[::2], argv[1::2]))
    if len(argv) % 2 or set(given) - {"--bind", "--port"} or "--bind" not in given or \
            not given.get("--port", "8000").isdigit():
        sys.exit("usage: python3 -c 'import app; app.main()' --bind ADDRESS [--port N]")
    return given["--bind"], int(given.get("--port", "8000"))


def main() -> None:
    server = Server(options(sys.argv[1:]), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever(poll_interval=0.05)
    server.server_close()  # the listener closes; the answers in flight are finished


if __name__ == "__main__":
    main()
