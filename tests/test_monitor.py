"""The monitor's pure parts: its spec in environments.py and the scaling rule (no hosts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from booted.environments import load_environments
from booted.errors import ConfigError
from booted.monitor.scaling import Scaler, desired

ENV = '''ENVIRONMENTS = {
    "lab": {
        "network": "10.213.70.0/24",
        "hosts": {"lb01": {"role": "lb"}, "web[01:04]": {"role": "worker"}},
        "min": {"lb": 1, "worker": 1},
        "max": {"worker": MAX},
        "target": {"worker": TARGET},
        "monitor": MONITOR,
    },
}
'''


def load(tmp_path: Path, maximum: str = "3", target: str = "20", monitor: str = "{'window': 60}") -> object:
    path = tmp_path / "environments.py"
    path.write_text(ENV.replace("MAX", maximum).replace("TARGET", target).replace("MONITOR", monitor))
    return load_environments(path)["lab"]


def test_spec_defaults_and_values(tmp_path: Path) -> None:
    env = load(tmp_path)
    spec = env.monitor  # type: ignore[attr-defined]
    assert spec.bounds("worker", env.minimum, 4) == (1, 3)  # type: ignore[attr-defined]
    assert spec.bounds("lb", env.minimum, 1) == (1, 1)  # type: ignore[attr-defined]
    assert spec.bounds("lb", env.minimum, 3) == (1, 3)  # type: ignore[attr-defined]  # no max: the pool
    assert spec.target == {"worker": 20.0} and spec.window == 60 and spec.failures == 3 and spec.interval == 3


@pytest.mark.parametrize(("maximum", "target", "monitor", "line", "words"), [
    ("5", "20", "{}", 6, "max['worker'] = 5: a whole number from min (1) to 4"),
    ("0", "20", "{}", 6, "max['worker'] = 0"),
    ("True", "20", "{}", 6, "max['worker'] = True"),
    ("3", "-1", "{}", 7, "target['worker'] = -1: requests per second per host"),
    ("3", "20", "{'windw': 1}", 8, "'monitor' takes failures, interval, tolerance, window"),
    ("3", "20", "{'failures': 0}", 8, "monitor failures = 0: 1..100"),
])
def test_spec_mistakes_name_file_and_line(tmp_path: Path, maximum: str, target: str, monitor: str, line: int,
                                          words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, maximum, target, monitor)
    assert str(info.value).startswith(f"{tmp_path / 'environments.py'}:{line}:"), str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize(("current", "load", "expected"), [
    (2, 40.0, 2),  # at target
    (2, 43.0, 2),  # within 10%
    (2, 50.0, 3),  # 25 per host: ceil(2 x 1.25)
    (2, 200.0, 10),
    (4, 10.0, 1),
    (0, 0.0, 0),
    (0, 30.0, 2),
])
def test_desired_is_the_hpa_rule(current: int, load: float, expected: int) -> None:
    assert desired(current, load, 20.0, 0.1) == expected


def test_scale_up_at_once_down_only_after_the_window() -> None:
    s = Scaler(low=1, high=4, target=20.0, window=60)
    assert s.recommend(0, 1, 75.0) == 4  # a load step: up at once, capped at max
    assert s.recommend(10, 4, 10.0) == 4  # the load is gone: held for the window
    assert s.recommend(50, 4, 10.0) == 4
    assert s.recommend(61, 4, 10.0) == 1  # the high recommendation left the window
    assert s.recommend(62, 1, 0.0) == 1  # never below min


def test_a_fresh_monitor_shrinks_nothing_before_one_window() -> None:
    """Started beside 4 hosts a user started, with no load yet: nothing stopped until a window has passed."""
    s = Scaler(low=1, high=4, target=20.0, window=60)
    assert s.recommend(100, 4, 0.0) == 4
    assert s.recommend(159, 4, 0.0) == 4
    assert s.recommend(161, 4, 0.0) == 1


def test_no_flapping_around_the_target() -> None:
    s = Scaler(low=1, high=4, target=20.0, window=30)
    counts = []
    current = 2
    for t in range(0, 120, 3):
        current = s.recommend(t, current, 40.0 + (3.0 if t % 2 else -3.0))  # +-7.5% around the target
        counts.append(current)
    assert set(counts) == {2}


def env_of(tmp_path: Path) -> object:
    return load(tmp_path, "3", "20", "{'failures': 2}")


def test_decide_heals_starts_and_respects_a_users_stop(tmp_path: Path) -> None:
    from booted.monitor.reconcile import Observed, decide

    env = env_of(tmp_path)
    seen = Observed(frozenset({"lb01", "web01", "web02"}), {"web02": 2}, frozenset(), {})
    actions = decide(env, seen, {"lb": 1, "worker": 2})  # type: ignore[arg-type]
    assert [(a.kind, a.host) for a in actions] == [("heal", "web02")]
    # web02 stopped by a user: not restarted; web03 keeps the minimum
    seen = Observed(frozenset({"lb01", "web01"}), {}, frozenset({"web02"}), {})
    actions = decide(env, seen, {"lb": 1, "worker": 2})  # type: ignore[arg-type]
    assert [(a.kind, a.host) for a in actions] == [("start", "web03")]
    # the lb died: started again
    seen = Observed(frozenset({"web01", "web02"}), {}, frozenset(), {})
    assert [(a.kind, a.host) for a in decide(env, seen, {"lb": 1, "worker": 2})] == [  # type: ignore[arg-type]
        ("start", "lb01")]


def test_decide_scales_within_the_pool_and_says_when_it_is_short(tmp_path: Path) -> None:
    from booted.monitor.reconcile import Observed, Shortage, decide

    env = env_of(tmp_path)
    seen = Observed(frozenset({"lb01", "web01", "web02", "web03"}), {}, frozenset(), {})
    assert [(a.kind, a.host) for a in decide(env, seen, {"lb": 1, "worker": 2})] == [  # type: ignore[arg-type]
        ("stop", "web03")]
    seen = Observed(frozenset({"lb01", "web01"}), {}, frozenset({"web02", "web03", "web04"}), {})
    said = decide(env, seen, {"lb": 1, "worker": 3})  # type: ignore[arg-type]
    assert [(type(a), a.role) for a in said if isinstance(a, Shortage)] == [(Shortage, "worker")] and len(said) == 1


def test_decide_redeploys_drift_but_not_on_a_failing_host(tmp_path: Path) -> None:
    from booted.monitor.reconcile import Observed, decide

    text = ENV.replace("MAX", "3").replace("TARGET", "20").replace("MONITOR", "{}").replace(
        '"web[01:04]": {"role": "worker"}', '"web[01:04]": {"role": "worker", "service": "hello", "version": "2.0"}')
    (tmp_path / "environments.py").write_text(text)
    env = load_environments(tmp_path / "environments.py")["lab"]
    seen = Observed(frozenset({"lb01", "web01", "web02"}), {"web02": 5}, frozenset(),
                    {"web01": "1.0", "web02": "1.0"})
    actions = decide(env, seen, {"lb": 1, "worker": 2})
    assert [(a.kind, a.host) for a in actions] == [("heal", "web02"), ("deploy", "web01")]


class NoActions:
    def actions(self, env: str, limit: int = 50) -> list[dict[str, object]]:
        return []

    def action_totals(self, env: str) -> tuple[dict[tuple[str, str], int], dict[str, list[float]]]:
        return {}, {}


def _api(tmp_path: Path) -> object:
    from booted.monitor.api import Api, Control

    return Api(Control("lab", {"web01"}), NoActions(), tmp_path / "monitor" / "lab.url")  # type: ignore[arg-type]


def _raw(port: int, data: bytes, read: bool = True, reset: bool = False) -> bytes:
    """Send bytes as a client would; the status line of the answer (or hang up at once)."""
    import socket
    import struct

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if reset:  # close with RST: the server's write fails (an aborted client)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(data)
        return sock.recv(4096).split(b"\r\n")[0] if read else b""


def test_api_malformed_requests_get_4xx_and_aborted_clients_log_nothing(tmp_path: Path,
                                                                         capfd: pytest.CaptureFixture[str]) -> None:
    import threading
    import time

    api = _api(tmp_path)
    port, token = api.server.server_address[1], api.token  # type: ignore[attr-defined]
    try:
        assert _raw(port, "GET /api/status?token=é€ HTTP/1.0\r\n\r\n".encode()) == b"HTTP/1.0 401 Unauthorized"
        assert _raw(port, b"GET /api/status HTTP/1.0\r\nAuthorization: Bearer \xe9\xff\r\n\r\n") == \
            b"HTTP/1.0 401 Unauthorized"
        assert _raw(port, b"GET /%zz?token=%ff%fe HTTP/1.0\r\n\r\n") == b"HTTP/1.0 401 Unauthorized"
        assert _raw(port, b"GET / HTTP/1.0\r\n" + b"X: y\r\n" * 200 + b"\r\n") == b"HTTP/1.0 431 Too many headers"
        assert _raw(port, b"GET /" + b"a" * 70000 + b" HTTP/1.0\r\n\r\n") == b"HTTP/1.0 414 Request-URI Too Long"
        assert _raw(port, f"POST /api/hosts/%ff/x?token={token} HTTP/1.0\r\n\r\n".encode()).startswith(b"HTTP/1.0 404")
        assert b"400" in _raw(port, b"GARBAGE\r\n\r\n")
        assert _raw(port, f"GET /api/status?token={token} HTTP/1.0\r\n\r\n".encode()) == b"HTTP/1.0 200 OK"
        for _ in range(50):  # clients that hang up: before sending, mid-request, before reading the answer
            _raw(port, f"GET /metrics?token={token} HTTP/1.0\r\n\r\n".encode(), read=False, reset=True)
            _raw(port, b"GET /metr", read=False)
            _raw(port, b"", read=False)
        deadline = time.monotonic() + 15  # the handler drops a stalled client after 10 s
        while any("process_request_thread" in t.name for t in threading.enumerate()):  # every client handled
            assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
            time.sleep(0.02)
        assert _raw(port, f"GET /metrics?token={token} HTTP/1.0\r\n\r\n".encode()) == b"HTTP/1.0 200 OK"
    finally:
        api.close()  # type: ignore[attr-defined]
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_api_token_is_compared_as_bytes() -> None:
    from booted.monitor.api import authorized

    assert authorized("abc", "abc") and not authorized("abd", "abc") and not authorized("é", "abc")
    assert not authorized("\udcff", "abc") and not authorized("", "abc")


def test_readme_curl_example_runs_as_written(tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import REPO

    line = next(ln for ln in (REPO / "README.md").read_text().splitlines() if ln.startswith("curl -H \"Authorization"))
    api = _api(tmp_path)
    try:
        url = (tmp_path / "monitor" / "lab.url").read_text().strip()
        proc = subprocess.run(["bash", "-euc", f"url=$(cat {tmp_path / 'monitor' / 'lab.url'})\n{line}"],
                              capture_output=True, text=True, timeout=30)
    finally:
        api.close()  # type: ignore[attr-defined]
    assert proc.returncode == 0, (url, line, proc.stderr)
    assert proc.stdout.startswith("# HELP booted_hosts"), proc.stdout
