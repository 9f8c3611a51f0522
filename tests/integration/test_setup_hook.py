"""A service's setup command: run in the new release before the switch, once per release and host; a
failing setup leaves the previous release current and serving, and says why per host."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.conftest import LabRun
from tests.integration.test_netns_lab import health

pytestmark = pytest.mark.integration

ENV = '''ENVIRONMENTS = {"hooks": {"provider": "netns", "network": "10.213.29.0/24", "hosts": {
    "web[01:02]": {"role": "worker", "service": "hello", "version": "1.0"}}}}
'''


def test_setup_runs_once_and_a_failed_setup_keeps_the_previous_release(lab_run: LabRun) -> None:
    services = lab_run.tmp / "service"
    shutil.copytree(REPO / "service" / "hello", services / "hello")
    toml = services / "hello" / "service.toml"
    toml.write_text(toml.read_text() + 'setup = "test -f buildable && echo built {version} on {host} > built.txt"\n')
    repo = lab_run.tmp / "hello-repo"
    shutil.copytree(REPO / "service" / "hello", repo)
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "buildable").write_text("yes\n")
    for version in ("1.0", "1.1"):
        if version == "1.1":
            (repo / "buildable").unlink()  # 1.1's setup fails
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", version], check=True)
        subprocess.run([*git, "tag", version], check=True)
    lab_run.env.update({"BOOTED_SERVICES": str(services), "HELLO_REPO": str(repo)})
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV)

    assert "2 ok, 0 failed" in lab_run.fab("env_start_all").stdout
    built = lab_run.fab("hosts_run", "cat /srv/booted/hello/current/built.txt").stdout
    assert "built 1.0 on web01" in built and "built 1.0 on web02" in built

    bad = lab_run.fab("hello_deploy", "--version", "1.1", check=False)
    assert bad.returncode == 1 and "0 ok, 2 failed" in bad.stdout, bad.stdout
    assert "setup failed (exit 1), releases/1.0-" in bad.stdout
    assert health("10.213.29.2")["version"] == "1.0" and health("10.213.29.3")["version"] == "1.0"
    assert "2 ok" in lab_run.fab("hello_test").stdout  # the database still says 1.0 too

    again = lab_run.fab("hello_deploy", "--version", "1.0").stdout
    assert "already at 1.0" in again and "setup ran" not in again  # once per release and host
