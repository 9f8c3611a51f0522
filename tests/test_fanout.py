"""Fan-out without hosts: a step function stands in for the SSH work (the process boundary is faked)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from booted.remote.fanout import Fleet, StepFailed, Target


def fleet(tmp_path: Path, parallel: int) -> Fleet:
    return Fleet(tmp_path / "key", tmp_path / "known_hosts", "root", parallel)


def test_one_dead_host_does_not_abort_the_others(tmp_path: Path) -> None:
    targets = [Target(f"h{i}", f"10.213.9.{i}") for i in range(2, 8)]

    def step(t: Target) -> str:
        if t.name == "h4":
            raise ConnectionRefusedError(111, "Connection refused")
        if t.name == "h5":
            raise StepFailed("serves version '1.0', expected '1.1'")
        return f"did {t.name}"

    results = fleet(tmp_path, 3).run(targets, step)
    assert [r.host for r in results] == [t.name for t in targets]
    assert {r.host for r in results if not r.ok} == {"h4", "h5"}
    assert next(r for r in results if r.host == "h4").detail.startswith("unreachable:")
    assert next(r for r in results if r.host == "h5").detail == "serves version '1.0', expected '1.1'"
    assert next(r for r in results if r.host == "h2").detail == "did h2"


def test_parallelism_is_bounded(tmp_path: Path) -> None:
    active = peak = 0
    lock = threading.Lock()

    def step(t: Target) -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return "ok"

    results = fleet(tmp_path, 4).run([Target(f"h{i}", "10.0.0.1") for i in range(20)], step)
    assert all(r.ok for r in results) and len(results) == 20
    assert 2 <= peak <= 4


def test_a_host_that_never_answers_fails_within_its_timeout(tmp_path: Path) -> None:
    """A step blocked for good (a frozen host) is cut off: the others finish, the run ends."""
    never = threading.Event()

    def step(t: Target) -> str:
        if t.name == "frozen":
            never.wait()
        return "ok"

    f = fleet(tmp_path, 2)
    f.abandon = 0.2
    start = time.monotonic()
    results = f.run([Target("frozen", "10.0.0.9"), Target("a", "10.0.0.2"), Target("b", "10.0.0.3")], step,
                    timeout=0.3)
    assert time.monotonic() - start < 3
    assert [(r.host, r.ok) for r in results] == [("frozen", False), ("a", True), ("b", True)]
    assert results[0].detail == "no answer within 0.3s (host frozen or overloaded?)"
    never.set()


def test_failure_reasons_are_sentences() -> None:
    import paramiko

    from booted.remote.fanout import describe

    assert describe(EOFError()) == "the host closed the connection (stopped or rebooting?)"
    assert describe(paramiko.SSHException("No existing session")).startswith("SSH did not answer")
    assert describe(ConnectionRefusedError(111, "Connection refused")) == "unreachable: Connection refused"
    assert "Error" not in describe(ValueError("bad"))


def test_each_connection_gets_only_its_hosts_pinned_keys(tmp_path: Path) -> None:
    """known_hosts is parsed once per version of the file, and a connection is given its own host's keys only
    (no SSH connection is made: the test stops before Connection.open)."""
    import os
    import subprocess

    import paramiko

    from booted.remote.fanout import known_hosts
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hk")], check=True)
    kind, blob = (tmp_path / "hk.pub").read_text().split()[:2]
    pins = tmp_path / "known_hosts"
    pins.write_text(f"# pinned\n10.213.9.2 {kind} {blob}\n[127.0.0.1]:2222 {kind} {blob}\nnot a key line\n")
    keys = known_hosts(pins)
    assert sorted(keys) == ["10.213.9.2", "[127.0.0.1]:2222"]
    assert keys["10.213.9.2"][0].get_base64() == blob
    f = fleet(tmp_path, 2)
    first = f.pinned()
    assert f.pinned() is first  # the same file: not parsed again
    pins.write_text(pins.read_text() + f"10.213.9.3 {kind} {blob}\n")
    os.utime(pins, ns=(1, 1))  # a new version of the file (mtime and size differ)
    assert "10.213.9.3" in f.pinned()
    client = paramiko.SSHClient()
    added = client.get_host_keys()
    for key in f.pinned()["10.213.9.3"]:
        added.add("10.213.9.3", key.get_name(), key)
    assert list(added.keys()) == ["10.213.9.3"]
