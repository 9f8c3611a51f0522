"""Bad input on a real netns lab (issue 19): it stops at validation (exit 2, one message, no traceback)
before any host is touched; hosts_run --timeout; the monitor daemon's clean environment and the README's
curl example against it."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from booted.monitor.process import running
from tests.conftest import REPO
from tests.integration.conftest import LabRun

pytestmark = pytest.mark.integration

ENV = '''ENVIRONMENTS = {"bad": {"provider": "netns", "network": "NET", "hosts": {
    "web01": {"role": "worker", "service": "hello", "version": "1.0"}}, "min": {"worker": 1}}}
'''


def write(lab_run: LabRun, net: str) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV.replace("NET", net))


def refused(proc: subprocess.CompletedProcess[str], words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def listed(lab_run: LabRun) -> dict[str, dict[str, object]]:
    return {r["host"]: r for r in json.loads(lab_run.fab("env_status", "--json").stdout)}


def test_bad_input_stops_before_any_host_is_touched(lab_run: LabRun) -> None:
    services = lab_run.tmp / "service"
    shutil.copytree(REPO / "service", services, ignore=shutil.ignore_patterns("__pycache__"))
    lab_run.env["BOOTED_SERVICES"] = str(services)
    write(lab_run, "10.213.92.0/25")
    lab_run.fab("env_start_all")

    out = lab_run.fab("hosts_run", "echo hi", "--timeout", "10").stdout  # was a TypeError
    assert "--- web01\nhi" in out, out

    # the daemon: booted's clean environment, no BOOTED_PW; the README's curl example works as written
    lab_run.fab("monitor_start", extra={"BOOTED_PW": "pw-in-the-users-env", "SOME_SECRET": "s3"})
    try:
        ctx = lab_run.ctx()
        pid = running(ctx, "bad")
        assert pid
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {e.split(b"=", 1)[0].decode() for e in environ if e}
        assert "BOOTED_PW" not in names and "SOME_SECRET" not in names and b"pw-in-the-users-env" not in b"".join(
            environ), names
        assert {"PATH", "LANG", "BOOTED_STATE_DIR", "BOOTED_ENVIRONMENTS"} <= names, names
        url_file = ctx.settings.state_dir / "monitor" / "bad.url"
        line = next(ln for ln in (REPO / "README.md").read_text().splitlines()
                    if ln.startswith('curl -H "Authorization'))
        proc = subprocess.run(["bash", "-euc", f"url=$(cat {url_file})\n{line}"], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 0 and proc.stdout.startswith("# HELP booted_hosts"), proc.stdout + proc.stderr
        ctx.close()
    finally:
        lab_run.fab("monitor_stop")

    # a service folder a release cannot hold: refused by name, and web01 is not stopped
    fifo = services / "hello" / "ctl"
    os.mkfifo(fifo)
    refused(lab_run.fab("env_start_worker", "web01", check=False), f"{fifo}: a FIFO (named pipe) in service folder")
    assert listed(lab_run)["web01"]["running"] is True
    fifo.unlink()

    # the network changed after the host was made: exit 2 with the command that fixes it, nothing booted
    lab_run.fab("env_stop")
    write(lab_run, "10.213.92.128/25")
    refused(lab_run.fab("env_start_all", check=False), "fab image_del web01")
    assert listed(lab_run)["web01"]["running"] is False
    lab_run.fab("image_del", "web01")
    lab_run.fab("env_start_all")
    row = listed(lab_run)["web01"]
    assert row["running"] is True and ipaddress.IPv4Address(row["ip"]) in ipaddress.IPv4Network("10.213.92.128/25"), row
