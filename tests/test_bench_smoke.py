"""Smoke runs of the benchmarks in bench/: each exits 0 (a bench checks its own counts and raises when they are
wrong) and its result line and tables carry the values that matter: counts, failed requests, and ratios and
times that are present, finite and positive. No time is compared with a bound here (that is bench/'s job)."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NUM = r"\d+(?:\.\d+)?"


@dataclass
class Bench:
    out: str  # stdout: the tables, then the result line
    said: str  # what it said went wrong on stderr (a failed request's error, an HTTP status)

    @property
    def last(self) -> str:
        return self.out.strip().splitlines()[-1]

    def fields(self, *keys: str) -> dict[str, str]:
        """The result line as key -> value; it has exactly these keys, in this order."""
        pairs = [item.partition("=") for item in self.last.split()]
        assert [k for k, _, _ in pairs] == list(keys), self.last
        return {k: v for k, _, v in pairs}

    def row(self, first: str) -> list[str]:
        """The cells of the table row that starts with `first` (cells are at least two spaces apart)."""
        rows = [re.split(r"\s{2,}", line.strip()) for line in self.out.splitlines()]
        found = [r for r in rows if r[0] == first]
        assert len(found) == 1, f"{len(found)} rows {first!r} in:\n{self.out}"
        return found[0]


def run_bench(*args: str, timeout: int = 300) -> Bench:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / args[0]), *args[1:]], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{args[0]} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), f"{args[0]} printed nothing; stderr:\n{proc.stderr[-2000:]}"
    said = [line for line in proc.stderr.splitlines() if re.match(r"\[bench\] [\d.]+: ", line)]  # lb.py's get()
    return Bench(proc.stdout, " | ".join(said[-8:]))


def positive(value: str) -> float:
    """A ratio or a time: a finite number above 0 (never compared with a time bound)."""
    number = float(value)
    assert math.isfinite(number) and number > 0, value
    return number


def test_bootlog_smoke() -> None:
    # 200 hosts: a refresh also reads each host's row from the database; with as many hosts as lines (2,000) that
    # came to 3/4 of the log's size, close to what the bench calls re-reading the log
    bench = run_bench("bootlog.py", "--lines", "2000", "--refreshes", "2", "--hosts", "200")
    got = bench.fields("bootlog_first_s", "bootlog_refresh_s", "refresh_bytes_read", "log_bytes", "rereads")
    positive(got["bootlog_first_s"])
    positive(got["bootlog_refresh_s"])
    assert got["rereads"] == "no"
    head = re.search(r": (\d+) lines \((\d+) valid boots of (\d+) hosts, (\d+) garbage/hostile\)", bench.out)
    assert head, bench.out
    lines, valid, hosts, bad = map(int, head.groups())
    assert (lines, valid + bad, hosts) == (2000, 2000, 200) and valid > 0 and bad > 0  # both kinds in the log
    # a refresh reads the 100 lines appended, a small part of the log (2,000 lines and 4 x 100 appended)
    assert 0 < int(got["refresh_bytes_read"]) < int(got["log_bytes"]) / 10, got


def test_status_smoke() -> None:
    bench = run_bench("status.py", "--hosts", "5", "--runs", "1")
    got = bench.fields("hosts_list_s", "env_status_s", "fab_list_s", "hosts")
    assert got.pop("hosts") == "5"  # the bench checked hosts_list and env_status show all 5
    for value in got.values():
        positive(value)
    for command in ("fab --list", "fab hosts_list", "fab env_status"):
        assert len(bench.row(command)[2].split()) == 1  # one timed run each


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="netns lab hosts need root")
@pytest.mark.skipif(not (BIN / "ansible-playbook").exists() or not (BIN / "pyinfra").exists(),
                    reason="needs the bench extra: pip install -e '.[bench]'")
@pytest.mark.skipif(shutil.which("ip") is None or shutil.which("unshare") is None, reason="needs iproute2, util-linux")
def test_fanout_smoke() -> None:
    bench = run_bench("fanout.py", "--hosts", "3", "--runs", "1", timeout=600)
    got = bench.fields("booted_over_ansible", "booted_over_pyinfra", "booted_over_floor")
    # every tool ran once and was verified (the bench checked each host's /health), and the ratios are its rows'
    table = re.findall(rf"^(.+?)\s{{2,}}({NUM})\s{{2,}}({NUM})\s{{2,}}({NUM})$", bench.out, re.M)
    assert len(table) == 6 and all(median == runs for _, median, runs, _ in table), bench.out

    def ratio(label: str) -> float:
        return next(float(r) for name, _, _, r in table if name.startswith(label))
    assert ratio("booted: fab hello_deploy;") == 1.0
    assert {k: positive(v) for k, v in got.items()} == {
        "booted_over_ansible": ratio("Ansible:"), "booted_over_pyinfra": ratio("pyinfra:"),
        "booted_over_floor": ratio("floor:")}


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="netns lab hosts need root")
def test_lb_smoke() -> None:
    bench = run_bench("lb.py", "--smoke", timeout=600)
    got = bench.fields("haproxy_over_pylb_rps", "haproxy_p99_ms", "pylb_p99_ms", "failed_kill", "failed_change")
    for key in ("haproxy_over_pylb_rps", "haproxy_p99_ms", "pylb_p99_ms"):
        positive(got[key])
    assert got["failed_kill"].split("/")[0] == "0" and got["failed_change"].split("/")[0] == "0", \
        f"{bench.last} ({bench.said})"  # HAProxy retries: none lost
    for proxy in ("haproxy", "pylb"):  # each phase sent requests through each proxy
        _, rps, _, _, failed, killed, changed = bench.row(proxy)
        positive(rps)
        for cell in (killed, changed):
            assert re.fullmatch(r"\d+ of [1-9]\d*", cell), bench.row(proxy)
        if proxy == "haproxy":
            assert failed == "0", f"{bench.row(proxy)} ({bench.said})"  # throughput: none failed either


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="netns lab hosts need root")
def test_chaos_smoke() -> None:
    bench = run_bench("chaos.py", "--smoke", timeout=600)
    got = bench.fields("failed_requests", "heal_p50_s", "heal_max_s", "p99_ms")
    assert got["failed_requests"] == "0", f"{bench.last} ({bench.said})"  # HAProxy retries: none lost
    for key in ("heal_p50_s", "heal_max_s", "p99_ms"):
        positive(got[key])
    _, at, healed, detail = bench.row("web01")  # the first kill: the first worker, taking turns
    positive(at)
    positive(healed)
    assert re.fullmatch(r"pid \d+", detail), bench.row("web01")


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="netns lab hosts need root")
def test_deploy_load_smoke() -> None:
    bench = run_bench("deploy_load.py", "--deploys", "1", "--timed", "1", timeout=600)
    got = bench.fields("failed_stop_start", "failed_overlap", "requests", "idle_deploy_s", "loaded_deploy_s",
                       "loaded_over_idle", "within_bound")
    assert got["failed_overlap"] == "0", bench.last  # overlapped restarts refuse no connection
    assert int(got["requests"]) > 0
    for key in ("idle_deploy_s", "loaded_deploy_s", "loaded_over_idle"):
        positive(got[key])
    assert got["within_bound"] in ("yes", "no")  # a time bound: the bench's figure, not asserted here
    for restart in ("stop, then start (reuse_port = false)", "overlapped (reuse_port = true)"):
        assert bench.row(restart)[1] == "1" and int(bench.row(restart)[3]) > 0  # 1 deploy, under load
    through_lb = bench.row("under 20 clients on the lb")[4]
    assert re.fullmatch(r"[1-9]\d* ok, 0 failed", through_lb), through_lb  # the lb lost none during deploys


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("libvirtd", path="/usr/sbin:/usr/bin") is None,
                    reason="QEMU VMs and a private libvirtd need root and libvirt-daemon (setup.sh)")
def test_libvirt_smoke() -> None:
    bench = run_bench("libvirt.py", "--smoke", timeout=900)
    # the smoke's ways: libvirt and the same disk booted by booted's QEMU (qemu's direct kernel boot runs in
    # every other VM test)
    got = bench.fields("libvirt_over_qemu_disk")
    positive(got["libvirt_over_qemu_disk"])
    assert not [line for line in bench.out.splitlines() if line.startswith("qemu  ")], bench.out
    for way in ("qemu-disk", "libvirt"):  # each way served its host once (the bench checked "1 ok")
        _, hosts, median, first, best, runs = bench.row(way)
        assert (hosts, runs) == ("1", "1") and positive(median) == float(first) == float(best)


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("debootstrap") is None,
                    reason="QEMU VMs and debootstrap need root (setup.sh installs debootstrap)")
def test_provision_smoke() -> None:
    bench = run_bench("provision.py", "--smoke", timeout=900)
    got = bench.fields("installer_lb_over_image_1", "debian_installer_finished")
    assert got["debian_installer_finished"] == "-"  # not asked for
    _, image, installs, lower_bound, _ = bench.row("1")
    positive(image)
    positive(installs)
    assert abs(float(lower_bound) - float(image) - float(installs)) <= 0.11  # the install, then the same boot
    assert positive(got["installer_lb_over_image_1"]) > 1


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None,
                    reason="qemu VMs need root and qemu-system-x86")
def test_snapshot_smoke() -> None:
    bench = run_bench("snapshot.py", "--smoke", timeout=900)  # 1 VM: 44 s here at a load of 4
    got = bench.fields("restore_over_start", "snapshot_pause_s")
    positive(got["restore_over_start"])
    positive(got["snapshot_pause_s"])
    start, restore = bench.row("env_start_all (cold boots, warm image cache)"), bench.row(
        "env_restore (after a deploy of 1.1)")
    assert start[2] == "to serving hello 1.0", start
    assert re.fullmatch(r"median of( [\d.]+)+; to serving hello 1\.0, no boot", restore[2]), restore
