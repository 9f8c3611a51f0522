"""The lab end to end on netns hosts: real namespaces, real sshd, real nginx boot log, real hello."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import LabRun, leftovers

pytestmark = pytest.mark.integration

ENV3 = '''ENVIRONMENTS = {{
    "itest": {{
        "provider": "netns",
        "network": "{net}",
        "hosts": {{
            "lb01": {{"role": "lb", "service": "{lb}"}},
            "web[01:02]": {{"role": "worker", "service": "hello", "version": "1.0"}},
        }},
        "min": {{"lb": 1, "worker": 1}},
    }},
}}
'''


def health(ip: str) -> dict[str, str]:
    with urllib.request.urlopen(f"http://{ip}:8000/health", timeout=5) as resp:
        return json.loads(resp.read())


def test_lab_survives_a_dead_host_and_stops_clean(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV3.format(net="10.213.21.0/24", lb="lb"))
    run = lab_run.fab("env_start_all")
    out = run.stdout
    assert "3 ok, 0 failed" in out, out
    # every host pulled its release from booted's nginx and served at first boot: no deploy over SSH
    assert "hello: served at first boot, verified: web01, web02; deploying over SSH: none" in run.stderr
    assert "lb: served at first boot, verified: lb01; deploying over SSH: none" in run.stderr
    listed = json.loads(lab_run.fab("hosts_list", "--json").stdout)
    assert {h["name"]: h["ip"] for h in listed} == {"lb01": "10.213.21.2", "web01": "10.213.21.3",
                                                     "web02": "10.213.21.4"}
    assert all(h["reachable"] for h in listed)
    assert health("10.213.21.3") == {"service": "hello", "host": "web01", "version": "1.0", "status": "ok"}
    assert "2 ok, 0 failed" in lab_run.fab("hello_test").stdout
    # the load balancer spreads requests over both workers (HAProxy, started at boot beside them, takes a
    # worker in when its health check passes: within about a second; 30 s: a margin for a busy machine)
    answers: set[str] = set()
    deadline = time.monotonic() + 30
    while len(answers) < 2 and time.monotonic() < deadline:
        with urllib.request.urlopen("http://10.213.21.2:8080/", timeout=5) as resp:
            answers.add(resp.read().decode().strip())
    assert answers == {"hello from web01 (version 1.0)", "hello from web02 (version 1.0)"}

    # the host's hostname, its sshd on its own IP only, and its own /etc
    hostnames = lab_run.fab("hosts_run", "hostname; cat /run/sshd.pid >/dev/null; ss -ltn | grep -c ':22 '").stdout
    assert "--- web02\nweb02\n1" in hostnames
    assert not (Path("/etc") / "booted-marker").exists()
    lab_run.fab("hosts_run", "touch /etc/booted-marker", "--hosts", "web01")
    assert not (Path("/etc") / "booted-marker").exists()  # the write stayed inside web01's overlay

    # web02 dies: every process of it is killed
    ctx = lab_run.ctx()
    pid = ctx.lab().running()["web02"]
    os.kill(pid, signal.SIGKILL)
    ctx.close()

    test = lab_run.fab("hello_test", check=False)
    assert test.returncode == 1, test.stdout + test.stderr
    assert "web01  ok" in test.stdout and "web02  FAILED" in test.stdout
    assert "1 host(s) failed: web02" in test.stderr
    assert "Traceback" not in test.stderr

    deploy = lab_run.fab("hello_deploy", check=False)
    assert deploy.returncode == 1
    assert "web01  ok" in deploy.stdout and "web02  FAILED" in deploy.stdout

    filtered = lab_run.fab("hosts_filter", check=False)
    assert filtered.returncode == 1 and "removed from the host list" in filtered.stdout
    assert {h["name"] for h in json.loads(lab_run.fab("hosts_list", "--json").stdout)} == {"lb01", "web01"}

    status = lab_run.fab("env_status").stdout
    assert "web02" in status and "stopped" in status

    # env_start_worker brings it back with its service
    out = lab_run.fab("env_start_worker", "web02").stdout
    assert "1 ok, 0 failed" in out
    assert health("10.213.21.4")["host"] == "web02"

    stop = lab_run.fab("env_stop")
    assert "3 ok, 0 failed" in stop.stdout
    assert leftovers(lab_run) == []
    assert subprocess.run(["ping", "-c1", "-W1", "10.213.21.3"], capture_output=True).returncode != 0

    # re-running converges
    assert "0 ok, 0 failed" in lab_run.fab("env_stop").stdout


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args], check=True,
                   capture_output=True)


def make_hello_repo(tmp: Path) -> Path:
    from tests.conftest import REPO

    repo = tmp / "hello-repo"
    repo.mkdir()
    git(repo, "init", "-q")
    for version in ("1.0", "1.1"):
        for f in ("app.py", "service.toml"):
            (repo / f).write_text((REPO / "service" / "hello" / f).read_text())
        (repo / "CHANGES").write_text(f"release {version}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", version)
        git(repo, "tag", version)
    return repo


def test_versions_rollback_login_user_and_images(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV3.format(net="10.213.22.0/24", lb="lb"))
    secret = "s3cret-pw-for-test"
    extra = {"BOOTED_USER": "labuser", "BOOTED_PW": secret, "HELLO_REPO": str(make_hello_repo(lab_run.tmp))}
    lab_run.env.update(extra)
    lab_run.fab("env_start_min")
    assert {h["name"] for h in json.loads(lab_run.fab("hosts_list", "--json").stdout)} == {"lb01", "web01"}
    lab_run.fab("env_start_all")

    who = lab_run.fab("hosts_run", "id -un; ls -ld /srv/booted | cut -d' ' -f3", "--hosts", "web01").stdout
    assert "labuser\nlabuser" in who
    state = Path(lab_run.env["BOOTED_STATE_DIR"])
    leaked = subprocess.run(["grep", "-rl", secret, str(state)], capture_output=True, text=True).stdout
    assert leaked == "", f"clear-text password found in {leaked}"
    upper = state / "labs" / "itest" / "hosts" / "web01" / "upper" / "etc" / "shadow"
    assert "labuser:$6$" in upper.read_text() and secret not in upper.read_text()

    out = lab_run.fab("hello_deploy", "--version", "1.1").stdout
    assert "switched to 1.1, restarted" in out
    assert health("10.213.22.3")["version"] == "1.1"
    assert "2 ok" in lab_run.fab("hello_test").stdout  # expects what was deployed last
    assert "already at 1.1" in lab_run.fab("hello_deploy", "--version", "1.1", "--hosts", "web01").stdout
    wrong = lab_run.fab("hello_test", "--version", "1.0", check=False)
    assert wrong.returncode == 1 and "expected '1.0'" in wrong.stdout

    assert "rolled back to 1.0" in lab_run.fab("hello_rollback").stdout
    assert health("10.213.22.4")["version"] == "1.0"
    assert "2 ok" in lab_run.fab("hello_test").stdout
    lab_run.fab("hello_stop")
    assert lab_run.fab("hello_test", check=False).returncode == 1
    lab_run.fab("hello_start")

    bad = lab_run.fab("hello_deploy", "--version", "7.7", check=False)
    assert bad.returncode != 0 and "'7.7' is not a tag or commit" in bad.stderr and "Traceback" not in bad.stderr

    # a new boot log; the old one is kept; hosts_reset rebuilds the list from the new (empty) log
    lab_run.fab("restart_nginx")
    logs = sorted(p.name for p in (state / "nginx").glob("boot.log*") if p.suffix != ".tally")
    assert len(logs) == 2, logs  # (boot.log.tally: the count of answered calls, for the cap's dropped lines)
    reset = lab_run.fab("hosts_reset")
    assert "0 ok, 0 failed" in reset.stdout

    # clone web01 (with its deployed release) into web03 with a fresh identity
    assert "10.213.22.5" in lab_run.fab("image_clone", "web01", "web03").stdout
    started = lab_run.fab("image_start", "web03").stdout
    assert "1 ok, 0 failed" in started
    web03 = lab_run.fab("hosts_run", "hostname; readlink /srv/booted/hello/current", "--hosts", "web03").stdout
    assert "--- web03\nweb03\nreleases/1.0-" in web03
    images = json.loads(lab_run.fab("image_list", "--json").stdout)
    assert {i["name"] for i in images} == {"lb01", "web01", "web02", "web03"}

    assert "4 ok, 0 failed" in lab_run.fab("env_stop").stdout
    assert leftovers(lab_run) == []
    deleted = lab_run.fab("image_del", "web03").stdout
    assert "10.213.22.5" in deleted and "released" in deleted
    assert not (state / "labs" / "itest" / "hosts" / "web03").exists()
