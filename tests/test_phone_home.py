"""The boot script's phone-home over bash's /dev/tcp (booted/guest/boot: urlencode, boot_get), run by a real
bash against a real socket on loopback: the request it sends is the query curl --data-urlencode makes, so the
boot log's fast parser takes it; a server that answers 404 or is not there is a failure (curl takes over)."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

from booted.discovery.bootlog import FAST_RE, parse_line
from tests.conftest import REPO

BOOT = REPO / "booted" / "guest" / "boot"


def functions(*names: str) -> str:
    """The text of the boot script's functions `names` (each from its `name() {` line to its closing `}`)."""
    lines, out, inside = BOOT.read_text().splitlines(), [], False
    for line in lines:
        inside = inside or any(line.startswith(f"{n}() {{") for n in names)
        if inside:
            out.append(line)
            inside = line != "}"
    return "\n".join(out) + "\n"


def serve_once(status: str) -> tuple[int, list[bytes]]:
    """A loopback server that reads one request, answers `status` and keeps the request bytes."""
    srv = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def run() -> None:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            got.append(data)
            conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1], got


def phone(port: int, tmp: Path) -> subprocess.CompletedProcess[str]:
    script = functions("urlencode", "boot_get") + """
query=""
for field in "host=web01" "mac=52:54:0a:d5:67:02" "ip=127.0.0.1" \\
    "hostkey=SHA256:/iJ9453/kuOnL5bkDYRavsz3khbiXWs46mCINNTzbnQ" "token=c47d48b8b3fa199d133f9b1ee7aba967" \\
    "serving=1.0-9f71616dfb" "times=1796584360.889882_25.14_1.27_14.79_19.37_25.11"; do
  urlencode "${field#*=}"
  query+="${query:+&}${field%%=*}=$enc"
done
boot_get "$query"
"""
    (tmp / "phone.sh").write_text(script)
    return subprocess.run(["bash", str(tmp / "phone.sh")], env={"BOOTED_BOOT_URL": f"http://127.0.0.1:{port}/booted"},
                          capture_output=True, text=True, timeout=20)


def test_the_request_is_the_line_the_boot_log_takes(tmp_path: Path) -> None:
    port, got = serve_once("200 OK")
    assert phone(port, tmp_path).returncode == 0
    request = got[0].decode().split("\r\n")[0]
    assert request.startswith("GET /booted?") and request.endswith(" HTTP/1.0")
    line = f'booted1 1796584361.309 127.0.0.1 "{request[len("GET /booted?"):-len(" HTTP/1.0")]}"'
    assert FAST_RE.fullmatch(line), line
    event = parse_line(line)
    assert (event.host, event.mac, event.hostkey, event.serving) == (
        "web01", "52:54:0a:d5:67:02", "SHA256:/iJ9453/kuOnL5bkDYRavsz3khbiXWs46mCINNTzbnQ", "1.0-9f71616dfb")


def test_an_error_answer_or_no_server_fails(tmp_path: Path) -> None:
    port, _ = serve_once("404 Not Found")
    assert phone(port, tmp_path).returncode != 0
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now: refused at once
    assert phone(port, tmp_path).returncode != 0


def test_the_host_key_fingerprint_is_handed_in(tmp_path: Path) -> None:
    """booted tells the host its key's fingerprint (what ssh-keygen -lf would print in the guest); no key file:
    nothing, and the guest computes it."""
    from booted.hosts.identity import Identity

    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    want = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True,
                          check=True).stdout.split()[1]
    ident = Identity("w1", "10.213.230.3", 24, "10.213.230.1", "52:54:0a:d5:e6:03", "http://x/booted", "root",
                     None, key, "ssh-ed25519 AAAA")
    assert f"BOOTED_HOSTKEY={want}\n" in ident.env_text()
    gone = Identity("w1", "10.213.230.3", 24, "10.213.230.1", "52:54:0a:d5:e6:03", "http://x/booted", "root",
                    None, tmp_path / "nokey", "ssh-ed25519 AAAA")
    assert "BOOTED_HOSTKEY=''\n" in gone.env_text()
