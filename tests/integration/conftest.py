"""Integration fixtures: a lab in a temp state dir, driven through the real `fab` CLI as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from booted.config import Settings
from booted.context import Booted
from booted.discovery.nginx import Nginx
from tests.conftest import REPO

FAB = str(Path(sys.executable).parent / "fab")


@dataclass
class LabRun:
    env: dict[str, str]
    tmp: Path

    def fab(self, *args: str, check: bool | None = True, extra: dict[str, str] | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([FAB, *args], cwd=REPO, env={**self.env, **(extra or {})}, capture_output=True,
                              text=True, timeout=timeout)
        if check is True and proc.returncode != 0:
            raise AssertionError(f"fab {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def ctx(self) -> Booted:
        return Booted(Settings.from_env(self.env), say=lambda line: None)


def guest(lab_run: LabRun, host: str, command: str) -> str:
    """A command's first line of output on a host; tried up to 3 times: a TCG guest on a machine loaded far
    past its cores can miss hosts_run's 10 s SSH banner wait."""
    for _ in range(2):
        run = lab_run.fab("hosts_run", command, "--hosts", host, check=False)
        if run.returncode == 0:
            break
    else:
        run = lab_run.fab("hosts_run", command, "--hosts", host)
    return run.stdout.split(f"--- {host}\n", 1)[1].strip().splitlines()[0]



def assert_back_at_one(lab_run: LabRun, ips: tuple[str, str], changed_on: str) -> None:
    """After a restore of the two-host hello 1.0 lab the snapshot tests take: both serve 1.0, env_status
    says so, and the file written on `changed_on` after the snapshot is gone."""
    for ip in ips:
        with urllib.request.urlopen(f"http://{ip}:8000/health", timeout=5) as resp:
            assert json.loads(resp.read())["version"] == "1.0", ip
    rows = {r["name"]: r for r in json.loads(lab_run.fab("env_status", "--json").stdout)}
    # (its `state` needs an SSH banner within 0.5 s: not asserted, a TCG guest on a loaded machine misses it)
    assert {n: (r["running"], r["deployed"]) for n, r in rows.items()} == {
        "web01": (True, "hello 1.0"), "web02": (True, "hello 1.0")}
    assert guest(lab_run, changed_on, "test -e /root/after && echo present || echo absent") == "absent"

def leftovers(run: LabRun) -> list[str]:
    """Anything of this lab still on the machine: namespaces, bridge, host processes, nginx."""
    ctx = run.ctx()
    found: list[str] = []
    for handle in ctx.labs():
        lab = handle.lab
        found += [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(f"bt{lab.lab_id}-")] \
            if os.path.isdir("/run/netns") else []
        if os.path.exists(f"/sys/class/net/{lab.bridge}"):
            found.append(f"bridge {lab.bridge}")
        found += [f"host process {n}={p}" for n, p in handle.running().items()]
        nft = subprocess.run(["nft", "list", "table", "bridge", f"booted_{lab.lab_id}"], capture_output=True,
                             check=False)
        if nft.returncode == 0:
            found.append(f"nft table bridge booted_{lab.lab_id}")
    if Nginx(ctx.settings).pid():
        found.append("nginx")
    ctx.close()
    return found


@pytest.fixture
def lab_run(tmp_path: Path, settings_env: dict[str, str]) -> Iterator[LabRun]:
    run = LabRun({**os.environ, **settings_env}, tmp_path)
    for key in ("BOOTED_ENV", "BOOTED_USER", "BOOTED_PW", "HELLO_REPO", "BOOTED_LOG"):
        run.env.pop(key, None)
    yield run
    if Path(run.env["BOOTED_ENVIRONMENTS"]).exists():
        run.fab("env_stop", check=False)  # teardown even when the test failed half-way
