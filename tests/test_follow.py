"""The monitor follows the user (issue 19, item 5) and booted's own parts are watched (item 6): the pure parts,
without hosts. Pins against drift, the reload of a changed environments.py, env_status's verdicts for pinned
and frozen hosts, the one-deadline SSH probe (on loopback), and a full state dir as a message."""

from __future__ import annotations

import errno
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from booted.environments import load_environments
from booted.errors import ConfigError, StorageError, storage_error
from booted.lab.status import status_rows
from booted.monitor.follow import take
from booted.monitor.reconcile import Observed, decide
from booted.netcheck import banners
from booted.state import pins
from booted.state.inventory import Host, Inventory
from booted.state.records import Pin

ENV = '''ENVIRONMENTS = {
    "lab": {
        "network": "10.213.70.0/24",
        "hosts": {"web[01:03]": {"role": "worker", "service": "hello", "version": "VERSION"}},
        "min": {"worker": 2},
    },
}
'''


def env_file(tmp_path: Path, version: str = "1.0", text: str = ENV) -> Path:
    path = tmp_path / "environments.py"
    path.write_text(text.replace("VERSION", version))
    return path


def test_a_users_pin_is_kept_until_environments_py_changes(tmp_path: Path) -> None:
    env = load_environments(env_file(tmp_path, "1.0"))["lab"]
    running = frozenset({"web01", "web02"})
    pinned = {"web01": Pin("web01", "hello", "1.1", "1.0")}
    seen = Observed(running, {}, frozenset(), {"web01": "1.1", "web02": "1.0"}, pinned)
    assert decide(env, seen, {"worker": 2}) == []  # the user's 1.1 is not "drift"
    # without the pin it would have been reverted: what the probe saw
    unpinned = Observed(running, {}, frozenset(), {"web01": "1.1", "web02": "1.0"})
    assert [(a.kind, a.host, a.reason) for a in decide(env, unpinned, {"worker": 2})] == [
        ("deploy", "web01", "runs hello 1.1, 1.0 wanted")]
    # environments.py now says 2.0: the file wins again, on both hosts, and says why on the pinned one
    env2 = load_environments(env_file(tmp_path, "2.0"))["lab"]
    reasons = {a.host: a.reason for a in decide(env2, seen, {"worker": 2})}
    assert reasons == {"web01": "runs hello 1.1, 2.0 wanted (environments.py changed since a user deployed 1.1)",
                       "web02": "runs hello 1.0, 2.0 wanted"}


def test_pins_are_recorded_for_what_differs_from_the_file(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "state.db")
    for host, version in (("web01", "1.1"), ("web02", "1.0"), ("web03", "1.1")):
        inv.record_release(host, "hello", version)
    made = pins.record_by_user(inv, "hello", ["web01", "web02", "web03"], {"web01": "1.0", "web02": "1.0",
                                                                         "web03": "1.1"})
    assert [p.host for p in made] == ["web01"]
    assert pins.pins(inv) == {"web01": Pin("web01", "hello", "1.1", "1.0")}
    inv.record_release("web01", "hello", "1.0")  # deployed the file's version again: the pin ends
    pins.record_by_user(inv, "hello", ["web01"], {"web01": "1.0"})
    assert pins.pins(inv) == {}
    pins.set_pins(inv, [Pin("web02", "hello", "0.9", "1.0")])
    inv.forget_releases("web02")  # env_stop discards the disk: nothing deployed, nothing pinned
    assert pins.pins(inv) == {}
    inv.close()


def test_the_monitor_takes_a_changed_file_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    path = env_file(tmp_path, "1.0")
    old = load_environments(path)["lab"]

    def load() -> dict[str, object]:
        return load_environments(path)  # type: ignore[return-value]

    assert take(old, load) == (None, "")  # unchanged
    env_file(tmp_path, "1.1")
    new, said = take(old, load)  # type: ignore[arg-type]
    assert new is not None and new.host("web01").version == "1.1" and "following it" in said
    path.write_text("ENVIRONMENTS = {'lab': {'network': 5}}\n")
    new, said = take(old, load)  # type: ignore[arg-type]
    assert new is None and "does not validate; keeping the last good one" in said and "network" in said
    env_file(tmp_path, "1.0", ENV.replace("10.213.70.0/24", "10.213.71.0/24"))
    new, said = take(old, load)  # type: ignore[arg-type]
    assert new is None and "changed network" in said and "fab env_stop" in said
    env_file(tmp_path, "1.0", ENV.replace('"lab"', '"other"'))
    new, said = take(old, load)  # type: ignore[arg-type]
    assert new is None and "no longer defines 'lab'" in said


def test_status_shows_pins_and_frozen_hosts(tmp_path: Path) -> None:
    env = load_environments(env_file(tmp_path, "1.0"))["lab"]
    listed = [Host(n, "10.213.70.2", "m", "k", 1.0, True, 1.0) for n in ("web01", "web02")]
    rows = status_rows(env, {"web01": 1, "web02": 2}, [], listed, {("web01", "hello"): "1.1",
                                                                   ("web02", "hello"): "1.0"},
                       {"web01": Pin("web01", "hello", "1.1", "1.0")}, {"web01": True, "web02": False})
    by = {r["host"]: r for r in rows}
    assert (by["web01"]["want"], by["web01"]["pinned"], by["web01"]["state"]) == ("hello 1.1 (pinned)", "1.1", "ok")
    assert (by["web02"]["reachable"], by["web02"]["state"]) == (False, "frozen/unreachable")
    assert (by["web03"]["reachable"], by["web03"]["state"]) == (None, "stopped")


def test_banners_probe_all_hosts_within_one_deadline() -> None:
    """Loopback stand-ins: one greets like sshd, one accepts and never greets (a frozen host), one port is
    closed. 40 silent ones still take one deadline, not 40."""
    def server(greet: bool) -> socket.socket:
        srv = socket.create_server(("127.0.0.1", 0))
        srv.listen(64)

        def serve() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                if greet:
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
                conns.append(conn)
        threading.Thread(target=serve, daemon=True).start()
        return srv

    conns: list[socket.socket] = []
    good, frozen = server(True), server(False)
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    endpoints = {"good": ("127.0.0.1", good.getsockname()[1]), "closed": ("127.0.0.1", closed_port)}
    endpoints |= {f"frozen{i}": ("127.0.0.1", frozen.getsockname()[1]) for i in range(40)}
    started = time.monotonic()
    got = banners(endpoints, deadline=0.5)
    took = time.monotonic() - started
    assert got["good"] is True and got["closed"] is False
    assert not any(v for k, v in got.items() if k.startswith("frozen"))
    assert took < 5  # one shared deadline (0.5 s), not one per host (20 s): a bound, not a benchmark
    for s in (good, frozen, *conns):
        s.close()


@pytest.mark.parametrize(("exc", "words"), [
    (OSError(errno.ENOSPC, "No space left on device", "/st/state.db"), "is full (writing /st/state.db)"),
    (OSError(errno.EROFS, "Read-only file system"), "is read-only"),
    (sqlite3.OperationalError("disk I/O error"), "cannot be written (disk I/O error)"),
    (sqlite3.OperationalError("database or disk is full"), "cannot be written"),
])
def test_a_full_or_read_only_state_dir_is_a_message(exc: BaseException, words: str) -> None:
    err = storage_error(exc, "/st")
    assert isinstance(err, StorageError) and err.exit_code == 1
    assert str(err).startswith("the state directory /st ") and words in str(err)


def test_other_errors_are_not_taken_for_a_full_disk() -> None:
    assert storage_error(OSError(errno.ENOENT, "gone"), "/st") is None
    assert storage_error(sqlite3.OperationalError("no such table: x"), "/st") is None
    assert storage_error(ConfigError("x"), "/st") is None


def test_metrics_parse_and_counters_never_go_down(tmp_path: Path) -> None:
    """/metrics' text through prometheus_client's own parser, scraped while 300 actions are recorded (more
    than the 200 the old window held): every counter and histogram count only grows (issue 20, item 3)."""
    from prometheus_client.parser import text_string_to_metric_families

    from booted.monitor.api import metrics

    inv = Inventory(tmp_path / "state.db")
    status = {"roles": {"worker": {"running": ["web01"], "healthy": ["web01"], "held": [], "wanted": 1,
                                   "load": 2.5}}}
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for i in range(300):
        kind = ("heal", "start", "stop", "deploy")[i % 4]
        action = inv.open_action("lab", kind, f"web{i % 3:02d}", "test")
        inv.finish_action(action, i % 7 != 0, "detail")
        if i % 25:
            continue
        text = metrics("lab", status, *inv.action_totals("lab"))
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["booted_actions"].type == "counter"  # the parser names a counter without _total
        assert families["booted_heal_seconds"].type == "histogram"
        assert families["booted_scaleup_seconds"].type == "histogram"
        assert families["booted_hosts"].type == "gauge"
        now = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for name in ("booted_actions", "booted_heal_seconds", "booted_scaleup_seconds")
               for s in families[name].samples if not s.name.endswith("_sum")}
        assert all(now.get(key, 0) >= value for key, value in before.items()), "a counter went down"
        before = now
    total = sum(v for (name, _), v in before.items() if name == "booted_actions_total")
    assert total == 276  # every action up to the last scrape (i = 275), none forgotten
    inv.close()
