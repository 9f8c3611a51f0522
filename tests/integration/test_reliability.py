"""Safe to leave running (issue 13), reproduced on real netns labs: spoofed boot lines (from a lab host,
from a non-root local user, a flood), a frozen host, concurrent runs, and kill -9 at several points
followed by a re-run. Each test says what it tried and asserts the lab ends consistent."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from booted.hosts.identity import fingerprint
from tests.conftest import REPO
from tests.integration.conftest import FAB, LabRun, leftovers
from tests.integration.test_netns_lab import health, make_hello_repo

pytestmark = pytest.mark.integration

ENV = '''ENVIRONMENTS = {{"rel": {{"provider": "netns", "network": "{net}", "hosts": {{
    "web[01:04]": {{"role": "worker", "service": "hello", "version": "1.0"}}}}}}}}
'''


def start(lab_run: LabRun, net: str) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(net=net))
    lab_run.env["HELLO_REPO"] = str(make_hello_repo(lab_run.tmp))
    out = lab_run.fab("env_start_all").stdout
    assert "4 ok, 0 failed" in out, out


def popen(lab_run: LabRun, *args: str, extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([FAB, *args], cwd=REPO, env={**lab_run.env, **(extra or {})}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def listed(lab_run: LabRun) -> dict[str, tuple[str, str | None]]:
    return {h["name"]: (h["ip"], h["version"]) for h in json.loads(lab_run.fab("hosts_list", "--json").stdout)}


def serving(ips: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, ip in ips.items():
        data = health(ip)
        assert data["host"] == name
        out[name] = data["version"]
    return out


def test_spoofed_boot_lines_never_change_the_host_list(lab_run: LabRun) -> None:
    start(lab_run, "10.213.24.0/24")
    before = listed(lab_run)
    ctx = lab_run.ctx()
    images = {i.name: i for i in ctx.inventory.images()}
    ctx.close()
    web01, web03 = images["web01"], images["web03"]
    fp1 = fingerprint(web01.hostkey)
    url = "http://10.213.24.1:8470/booted"

    def query(**kw: str) -> str:
        values = {"host": "web01", "mac": web01.mac, "ip": web01.ip, "hostkey": fp1, "token": "0" * 32, **kw}
        return f"{url}?{urllib.parse.urlencode(values)}"
    attempts = [query(ip=web03.ip), query(), query(host="ghost", ip=web03.ip), query(token="f" * 32),
                query(hostkey=fingerprint(web03.hostkey), ip=web03.ip)]
    curls = "; ".join(f"curl -s -o /dev/null {shlex.quote(a)}" for a in attempts)
    lab_run.fab("hosts_run", curls, "--hosts", "web03")  # from inside a lab host
    for a in attempts:  # from a non-root user on the controller (it reaches the gateway too)
        subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "curl", "-s", "-o",
                        "/dev/null", a], check=True, timeout=10)
    log = Path(lab_run.env["BOOTED_STATE_DIR"]) / "nginx" / "boot.log"
    size = len(log.read_text().splitlines())
    flood = lab_run.fab("hosts_run", f"for i in $(seq 1 300); do curl -s -o /dev/null -w '%{{http_code}}\\n' "
                        f"{shlex.quote(query(host='junk'))}$i; done | sort | uniq -c", "--hosts", "web03").stdout
    assert " 429" in flood, flood  # the boot endpoint is rate-limited
    assert len(log.read_text().splitlines()) - size < 100  # and refused calls leave no line

    logged = lab_run.fab("hosts_logged").stdout
    assert "0 boot(s)" in logged and " rejected" in logged, logged
    assert listed(lab_run) == before
    reset = lab_run.fab("hosts_reset").stdout  # re-reading the whole log believes only the real boots
    assert "4 ok, 0 failed" in reset, reset
    assert listed(lab_run) == before
    assert "--- web01\nweb01\n" in lab_run.fab("hosts_run", "hostname", "--hosts", "web01").stdout
    assert "4 ok" in lab_run.fab("hello_test").stdout


def test_a_frozen_host_fails_within_the_timeout(lab_run: LabRun) -> None:
    start(lab_run, "10.213.25.0/24")
    ctx = lab_run.ctx()
    ns = f"bt{ctx.lab().lab.lab_id}-web02"
    ctx.close()
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True).stdout.split()
    assert pids
    for pid in pids:
        subprocess.run(["kill", "-STOP", pid], check=True)
    try:
        for args, limit in ((["hello_deploy", "--version", "1.1"], "6"), (["hosts_run", "sleep 3"], "8"),
                            (["hello_test"], "6")):
            t0 = time.monotonic()
            proc = lab_run.fab(*args, check=False, extra={"BOOTED_TIMEOUT": limit}, timeout=120)
            took = time.monotonic() - t0
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert "1 host(s) failed: web02" in proc.stderr, proc.stderr
            assert "3 ok, 1 failed" in proc.stdout, proc.stdout
            assert took < int(limit) + 15, f"{args} took {took:.1f}s"  # the limit, the grace, fab's start-up
            row = next(line for line in proc.stdout.splitlines() if line.startswith("web02"))
            assert "Error" not in row and ("no answer" in row or "timed out" in row), row
    finally:
        for pid in pids:
            subprocess.run(["kill", "-CONT", pid], check=False)


def test_concurrent_starts_and_deploys_end_consistent(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(net="10.213.26.0/24"))
    lab_run.env["HELLO_REPO"] = str(make_hello_repo(lab_run.tmp))
    for _ in range(2):
        runs = [popen(lab_run, "env_start_all") for _ in range(2)]
        outs = [(p.wait(timeout=300), *p.communicate()) for p in runs]
        assert all(code == 0 for code, _, _ in outs), outs
        ips = {n: ip for n, (ip, _) in listed(lab_run).items()}
        assert sorted(ips) == ["web01", "web02", "web03", "web04"]
        assert set(serving(ips).values()) == {"1.0"}
        ctx = lab_run.ctx()
        assert sorted(ctx.lab().running()) == sorted(ips)  # no host lost or doubled
        ctx.close()
        assert "4 ok, 0 failed" in lab_run.fab("env_stop").stdout
        assert leftovers(lab_run) == []

    lab_run.fab("env_start_all")
    runs = [popen(lab_run, "hello_deploy", "--version", v) for v in ("1.1", "1.0", "1.1")]
    outs = [(p.wait(timeout=300), *p.communicate()) for p in runs]
    assert all(code == 0 for code, _, _ in outs), outs
    hosts = listed(lab_run)
    now = serving({n: ip for n, (ip, _) in hosts.items()})
    assert {n: v for n, (_, v) in hosts.items()} == now  # the database says what each host serves
    assert "4 ok" in lab_run.fab("hello_test").stdout


@pytest.mark.parametrize("delays", [(0.6, 1.0, 1.4)])
def test_kill_9_then_rerun_converges(lab_run: LabRun, delays: tuple[float, ...]) -> None:
    start(lab_run, "10.213.27.0/24")
    for delay, version in zip(delays, ("1.1", "1.0", "1.1")):
        proc = popen(lab_run, "hello_deploy", "--version", version)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        again = lab_run.fab("hello_deploy", "--version", version)
        assert "4 ok, 0 failed" in again.stdout, again.stdout
        assert "4 ok" in lab_run.fab("hello_test", "--version", version).stdout
    for delay in delays:
        proc = popen(lab_run, "env_stop")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lab_run.fab("env_stop")
        assert leftovers(lab_run) == []
        proc = popen(lab_run, "env_start_all")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        out = lab_run.fab("env_start_all").stdout
        assert "4 ok, 0 failed" in out, out


def test_a_network_already_on_this_machine_is_refused(lab_run: LabRun) -> None:
    """Two state directories (or this machine) using one network would share a gateway address."""
    subprocess.run(["ip", "link", "add", "btztestdummy", "type", "bridge"], check=True)  # (no dummy module here)
    try:
        subprocess.run(["ip", "addr", "add", "10.213.33.1/24", "dev", "btztestdummy"], check=True)
        Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(net="10.213.33.0/24"))
        proc = lab_run.fab("env_start_all", check=False)
        assert proc.returncode == 1 and "already on interface btztestdummy" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        subprocess.run(["ip", "link", "del", "btztestdummy"], check=False)
