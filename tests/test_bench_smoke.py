"""Smoke runs of the benchmarks in bench/: each exits 0 and ends with its result line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NUM = r"\d+(?:\.\d+)?"


def run_bench(*args: str, timeout: int = 300) -> str:
    return run_bench_said(*args, timeout=timeout)[0]


def run_bench_said(*args: str, timeout: int = 300) -> tuple[str, str]:
    """The bench's last line, and what it said went wrong on stderr (a failed request's error, an HTTP status)."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / args[0]), *args[1:]], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{args[0]} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{args[0]} printed nothing; stderr:\n{proc.stderr[-2000:]}"
    said = [line for line in proc.stderr.splitlines() if re.match(r"\[bench\] [\d.]+: ", line)]  # lb.py's get()
    return lines[-1], " | ".join(said[-8:])


def test_bootlog_smoke() -> None:
    last = run_bench("bootlog.py", "--lines", "2000", "--refreshes", "2")
    match = re.fullmatch(rf"bootlog_first_s=({NUM}) bootlog_refresh_s=({NUM}) refresh_bytes_read=(\d+) "
                         rf"log_bytes=(\d+) rereads=no", last)
    assert match, last
    assert int(match.group(3)) < int(match.group(4))


def test_status_smoke() -> None:
    last = run_bench("status.py", "--hosts", "5", "--runs", "1")
    assert re.fullmatch(rf"hosts_list_s={NUM} env_status_s={NUM} fab_list_s={NUM} hosts=5", last), last


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="netns lab hosts need root")
@pytest.mark.skipif(not (BIN / "ansible-playbook").exists() or not (BIN / "pyinfra").exists(),
                    reason="needs the bench extra: pip install -e '.[bench]'")
@pytest.mark.skipif(shutil.which("ip") is None or shutil.which("unshare") is None, reason="needs iproute2, util-linux")
def test_fanout_smoke() -> None:
    last = run_bench("fanout.py", "--hosts", "3", "--runs", "1", timeout=600)
    assert re.fullmatch(rf"booted_over_ansible={NUM} booted_over_pyinfra={NUM} booted_over_floor={NUM}", last), last


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="netns lab hosts need root")
def test_lb_smoke() -> None:
    last, said = run_bench_said("lb.py", "--smoke", timeout=600)
    match = re.fullmatch(rf"haproxy_over_pylb_rps=({NUM}) haproxy_p99_ms={NUM} pylb_p99_ms={NUM} "
                         rf"failed_kill=(\d+)/(\d+) failed_change=(\d+)/(\d+)", last)
    assert match, last
    assert match.group(2) == "0" and match.group(4) == "0", f"{last} ({said})"  # HAProxy retries: none lost


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="netns lab hosts need root")
def test_deploy_load_smoke() -> None:
    last = run_bench("deploy_load.py", "--deploys", "2", "--timed", "2", timeout=600)
    match = re.fullmatch(rf"failed_stop_start=(\d+) failed_overlap=(\d+) requests=(\d+) idle_deploy_s={NUM} "
                         rf"loaded_deploy_s={NUM} loaded_over_idle={NUM} within_bound=(yes|no)", last)
    assert match, last
    assert match.group(2) == "0", last  # overlapped restarts refuse no connection


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("libvirtd", path="/usr/sbin:/usr/bin") is None,
                    reason="QEMU VMs and a private libvirtd need root and libvirt-daemon (setup.sh)")
def test_libvirt_smoke() -> None:
    last = run_bench("libvirt.py", "--smoke", timeout=900)
    assert re.fullmatch(rf"libvirt_over_qemu={NUM} libvirt_over_qemu_disk={NUM}", last), last


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("debootstrap") is None,
                    reason="QEMU VMs and debootstrap need root (setup.sh installs debootstrap)")
def test_provision_smoke() -> None:
    last = run_bench("provision.py", "--smoke", timeout=900)
    assert re.fullmatch(rf"installer_lb_over_image_1={NUM} debian_installer_finished=-", last), last
