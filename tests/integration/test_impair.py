"""Issue 23 item 2 on a real netns lab: environments.py's `impair` is in force once the lab has started,
net_impair's delay, loss and rate are measured from the controller (TCP connects to the host's sshd, pings,
a bounded transfer into the host's namespace) and gone after net_clear; a host that restarts gets its
impairment again; env_stop leaves no delay line, veth pair or nft table behind.

Every measurement is bounded in count and time and goes only to this run's hosts. The bands are loose on
purpose (2 shared cores): they tell an impaired link from a clear one, not a benchmark."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from booted.environments.impairment import impairment
from booted.impair.kernel import DELAY_LINE, MARK, apply_link, clear_link, delay_line_pid, pair
from booted.providers.procs import processes
from tests.integration.conftest import LabRun, leftovers

pytestmark = pytest.mark.integration

NET = "10.213.171"
ENV = """ENVIRONMENTS = {{
    "imp": {{
        "provider": "netns",
        "network": "{net}.0/24",
        "hosts": {{
            "a01": {{"role": "worker"}},
            "b01": {{"role": "worker", "impair": {{"delay": "50ms"}}}},
        }},
    }},
}}
"""
# run in a host's network namespace with the controller's python: count what arrives in at most 30 s
SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 5001)); s.listen(1)
s.settimeout(30); c, _ = s.accept(); c.settimeout(30); n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    n += len(b)
c.sendall(str(n).encode()); c.close()
"""


def connect_ms(ip: str, count: int = 7) -> float:
    """Median time of a TCP connect to the host's sshd (the SYN travels towards the host: its delay)."""
    times = []
    for _ in range(count):
        start = time.monotonic()
        with socket.create_connection((ip, 22), timeout=5):
            times.append((time.monotonic() - start) * 1000)
    return statistics.median(times)


def ping_loss(ip: str, count: int = 300) -> float:
    out = subprocess.run(["ping", "-n", "-q", "-c", str(count), "-i", "0.01", "-W", "1", ip], capture_output=True,
                         text=True, timeout=60).stdout
    sent = received = 0
    for line in out.splitlines():
        if "packets transmitted" in line:
            sent, received = int(line.split()[0]), int(line.split(",")[1].split()[0])
    assert sent == count, out
    return 100.0 * (sent - received) / sent


def mbit_per_s(ns: str, ip: str, size: int = 2_500_000) -> float:
    """Send `size` bytes into the host's namespace (the controller's python listens there): Mbit/s."""
    sink = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SINK, ip], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = socket.create_connection((ip, 5001), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "the sink did not listen"
                time.sleep(0.1)
        with conn:
            conn.settimeout(30)
            start = time.monotonic()
            conn.sendall(b"x" * size)
            conn.shutdown(socket.SHUT_WR)
            got = int(conn.recv(100))
            seconds = time.monotonic() - start
        assert got == size
        return size * 8 / seconds / 1e6
    finally:
        sink.wait(timeout=40)


def status(lab_run: LabRun) -> dict[str, dict[str, object]]:
    return {r["host"]: r for r in json.loads(lab_run.fab("net_status", "--json").stdout)}


def delay_lines(lab_id: str) -> list[int]:
    """This lab's delay line processes (argv: ... booted-delayline by<link> bv<link> DELAY JITTER)."""
    return [pid for pid, argv in processes() if MARK in argv and any(a.startswith(f"bv{lab_id}") for a in argv)]


def test_impaired_links_measured(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(net=NET))
    out = lab_run.fab("env_start_all").stdout
    assert "2 ok, 0 failed" in out, out
    ctx = lab_run.ctx()
    images = {i.name: i for i in ctx.inventory.images()}
    handle = ctx.lab("imp")
    ns = handle.provider.netns(handle.lab, "a01")  # type: ignore[attr-defined]
    lab_id = handle.lab.lab_id
    ctx.close()
    a01, b01 = images["a01"].ip, images["b01"].ip

    # environments.py's impairment is in force from the start, through the delay line on this kernel
    rows = status(lab_run)
    assert rows["b01"]["delay"] == "50ms" and rows["b01"]["state"] == "applied", rows
    assert rows["b01"]["mechanism"]["delay"] in (DELAY_LINE, "netem"), rows
    assert "a01" not in rows
    measured = {"b01 env 50ms": connect_ms(b01), "a01 clear": connect_ms(a01)}
    assert 40 <= measured["b01 env 50ms"] <= 60 and measured["a01 clear"] < 20, measured

    # a 100 ms delay towards a01, +-20 %; gone after net_clear
    out = lab_run.fab("net_impair", "--hosts", "a01", "--delay", "100ms").stdout
    assert "a01" in out
    measured["a01 100ms"] = connect_ms(a01)
    assert 80 <= measured["a01 100ms"] <= 120, measured
    table = lab_run.fab("net_status").stdout
    assert "a01" in table and "100ms" in table and "applied" in table, table
    lab_run.fab("net_clear", "--hosts", "a01", "--network", "imp")
    measured["a01 cleared"] = connect_ms(a01)
    assert measured["a01 cleared"] < 20, measured
    assert "a01" not in status(lab_run)

    # loss 30 % of 300 pings (a loose statistical band: 15..45 % is beyond 4 sigma of 30 %)
    lab_run.fab("net_impair", "--hosts", "a01", "--loss", "30%")
    assert status(lab_run)["a01"]["mechanism"] == {"loss": "nftables"}
    measured["a01 loss 30%"] = ping_loss(a01)
    assert 15 <= measured["a01 loss 30%"] <= 45, measured
    lab_run.fab("net_clear", "--hosts", "a01")
    measured["a01 loss cleared"] = ping_loss(a01, 50)
    assert measured["a01 loss cleared"] <= 10, measured

    # rate 10mbit: a 2.5 MB transfer into the host's namespace takes it (TCP's start makes it a little less)
    lab_run.fab("net_impair", "--hosts", "a01", "--rate", "10mbit")
    assert status(lab_run)["a01"]["mechanism"] == {"rate": "tbf"}
    measured["a01 10mbit"] = mbit_per_s(ns, a01)
    assert 6 <= measured["a01 10mbit"] <= 11, measured
    lab_run.fab("net_clear", "--hosts", "a01")
    measured["a01 rate cleared"] = mbit_per_s(ns, a01)
    assert measured["a01 rate cleared"] > 30, measured

    # a host that restarts gets its impairment again; its delay line ends with it
    lab_run.fab("image_stop", "b01")
    assert status(lab_run)["b01"]["state"].startswith("host not running")
    assert not delay_lines(lab_id)
    lab_run.fab("image_start", "b01")
    assert status(lab_run)["b01"]["state"] == "applied"
    assert len(delay_lines(lab_id)) == 1
    measured["b01 restarted"] = connect_ms(b01)
    assert 40 <= measured["b01 restarted"] <= 60, measured
    print("measured (ms, %, Mbit/s):", {k: round(v, 1) for k, v in measured.items()})

    # bad input is a message (exit 2), not a traceback
    bad = lab_run.fab("net_impair", "--delay", "100", check=False)
    assert bad.returncode == 2 and "like 100ms" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    bad = lab_run.fab("net_impair", "--network", "back", "--delay", "1ms", check=False)
    assert bad.returncode == 2 and "no network 'back'" in bad.stderr, bad.stderr

    lab_run.fab("env_stop")
    assert not delay_lines(lab_id)
    links = os.listdir("/sys/class/net")
    assert not [n for n in links if n.startswith((f"bxv{lab_id}", f"byv{lab_id}"))]
    nft = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False).stdout
    assert f"booted_impair_{lab_id}" not in nft
    assert leftovers(lab_run) == []


def test_a_qemu_tap_gets_the_tbf_and_the_delay_line(tmp_path: Path) -> None:
    """The mechanisms on a tap as the qemu provider makes it (ip tuntap; no VM: what impairs it is the same
    whoever holds the tap's other side). Its own made-up lab id; removed at the end."""
    tap = "bqf7e1d9c5"
    subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True, timeout=10)
    try:
        subprocess.run(["ip", "link", "set", tap, "up"], check=True, timeout=10)
        used = apply_link(tmp_path, tap, impairment({"rate": "10mbit"}))
        assert used == {"rate": "tbf"}
        qdisc = subprocess.run(["tc", "qdisc", "show", "dev", tap], capture_output=True, text=True, timeout=10).stdout
        assert "tbf" in qdisc and "rate 10Mbit" in qdisc, qdisc
        used = apply_link(tmp_path, tap, impairment({"delay": "20ms", "rate": "1mbit"}))
        assert used["rate"] == "tbf" and used["delay"] in (DELAY_LINE, "netem")
        if used["delay"] == DELAY_LINE:
            assert delay_line_pid(tmp_path, tap) is not None
            qdisc = subprocess.run(["tc", "qdisc", "show", "dev", pair(tap)[0]], capture_output=True, text=True,
                                   timeout=10).stdout
            assert "rate 1Mbit" in qdisc, qdisc
        clear_link(tmp_path, tap)
        assert delay_line_pid(tmp_path, tap) is None and not os.path.exists(f"/sys/class/net/{pair(tap)[0]}")
        qdisc = subprocess.run(["tc", "qdisc", "show", "dev", tap], capture_output=True, text=True, timeout=10).stdout
        assert "tbf" not in qdisc and "netem" not in qdisc, qdisc
    finally:
        clear_link(tmp_path, tap)
        subprocess.run(["ip", "link", "del", tap], check=False, timeout=10)
