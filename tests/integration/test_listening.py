"""env_status's probe of netns hosts without an SSH session (booted/netcheck.py `listening`), on real network
namespaces: a process in a namespace of its own listens on port 22 (loopback inside it) and serves, is stopped,
never accepts a connection waiting for it, or has no socket; the probe tells each apart by reading the
namespace's socket table (sock_diag) and the holder's process state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from booted.netcheck import listeners, listening

pytestmark = pytest.mark.integration

# a stand-in sshd: listens on 127.0.0.1:22 of its namespace; "serve" accepts (and closes) every connection,
# "stuck" never accepts and connects to itself once (a connection left in its accept queue, as a hung sshd's),
# "none" holds no socket. It prints "ready" once set up.
SERVER = r'''
import socket, sys, time
mode = sys.argv[1]
if mode != "none":
    srv = socket.socket()
    srv.bind(("127.0.0.1", 22))
    srv.listen(16)
if mode == "stuck":
    client = socket.create_connection(("127.0.0.1", 22))
print("ready", flush=True)
while True:
    if mode == "serve":
        conn, _ = srv.accept()
        conn.close()
    else:
        time.sleep(1)
'''


@pytest.fixture
def spaces() -> Iterator[dict[str, subprocess.Popen[str]]]:
    """One network namespace (loopback up) and one stand-in per mode, started inside it with `ip netns exec`."""
    procs: dict[str, subprocess.Popen[str]] = {}
    names = []
    try:
        for mode in ("serve", "stopped", "stuck", "none"):
            ns = f"btprobe-{uuid.uuid4().hex[:6]}-{mode}"[:15]
            subprocess.run(["ip", "netns", "add", ns], check=True)
            names.append(ns)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER,
                                     "none" if mode == "none" else "serve" if mode == "stopped" else mode],
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            procs[mode] = proc
        yield procs
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_listening_tells_serving_from_stopped_stuck_and_gone(spaces: dict[str, subprocess.Popen[str]]) -> None:
    pids = {mode: proc.pid for mode, proc in spaces.items()}
    found = listeners({mode: (f"/proc/{pid}/ns/net", "127.0.0.1") for mode, pid in pids.items()})
    assert (found["serve"].port, found["serve"].queued) == (22, 0)  # type: ignore[union-attr]
    assert (found["stuck"].port, found["stuck"].queued) == (22, 1)  # type: ignore[union-attr]
    assert found["none"] is None
    assert listeners({"serve": (f"/proc/{pids['serve']}/ns/net", "127.0.0.2")})["serve"] is None  # another address
    os.kill(pids["stopped"], signal.SIGSTOP)
    try:
        got = listening({mode: (pid, "127.0.0.1") for mode, pid in pids.items()} | {"controller": (os.getpid(), "")})
    finally:
        os.kill(pids["stopped"], signal.SIGCONT)
    assert got == {"serve": True, "stopped": False, "stuck": False, "none": False, "controller": None}
    assert listening({"stopped": (pids["stopped"], "127.0.0.1")}) == {"stopped": True}  # running again
