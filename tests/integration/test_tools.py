"""The lab driven by the tools people already use, through what booted exports: Ansible with
`fab inventory`, OpenSSH and pytest-testinfra with `fab ssh_config`, and `fab host_ssh`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from booted.providers.procs import processes
from tests.integration.conftest import LabRun

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent

ENV = '''ENVIRONMENTS = {"tools": {"provider": "netns", "network": "10.213.28.0/24", "hosts": {
    "lb01": {"role": "lb"}, "web[01:02]": {"role": "worker", "service": "hello", "version": "1.0"}}}}
'''

TESTINFRA = '''
def test_the_host_is_a_booted_lab_host(host):
    assert host.check_output("hostname") in ("lb01", "web01", "web02")
    assert host.file("/run/booted/identity").mode == 0o600
    assert host.process.filter(comm="sshd")
'''


def ansible(lab_run: LabRun, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `ansible -i <fab inventory> ARGS` against the lab; fails the test on a non-zero exit."""
    tmp = lab_run.tmp
    inventory = tmp / "inventory.yml"
    inventory.write_text(lab_run.fab("inventory").stdout)
    env = {**lab_run.env, "ANSIBLE_HOME": str(tmp / "ansible"), "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible" / "tmp"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOST_KEY_CHECKING": "True"}
    proc = subprocess.run([str(BIN / "ansible"), "-i", str(inventory), *args], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_ansible_ssh_and_testinfra_reach_every_host(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV)
    assert "3 ok, 0 failed" in lab_run.fab("env_start_all").stdout
    tmp = lab_run.tmp
    (tmp / "ssh_config").write_text(lab_run.fab("ssh_config").stdout)
    assert ansible(lab_run, "all", "-m", "ping").stdout.count("SUCCESS") == 3
    workers = ansible(lab_run, "service_hello", "-m", "command", "-a", "hostname")
    assert "web01" in workers.stdout and "lb01" not in workers.stdout

    # packages at run time: the lab has no route out; apt goes through booted's apt proxy on the gateway
    apt = ansible(lab_run, "all", "-m", "apt", "-a", "name=htop")
    assert apt.stdout.count("CHANGED") == 3
    assert lab_run.fab("hosts_run", "htop --version | head -1").stdout.count("htop 3") == 3
    route = lab_run.fab("hosts_run", "echo routes: $(ip route | grep -c default)", "--hosts", "web01").stdout
    assert "routes: 0" in route  # still no way out: packages came through the proxy

    ssh = subprocess.run(["ssh", "-F", str(tmp / "ssh_config"), "web02", "hostname"], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert ssh.returncode == 0 and ssh.stdout.strip() == "web02", ssh.stderr
    assert lab_run.fab("host_ssh", "web01", "--command", "hostname").stdout.strip() == "web01"
    missing = lab_run.fab("host_ssh", "web09", check=False)
    assert missing.returncode == 2 and "not in the current host list" in missing.stderr

    (tmp / "test_infra.py").write_text(TESTINFRA)
    infra = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            f"--ssh-config={tmp / 'ssh_config'}", "--hosts=ssh://lb01,ssh://web01,ssh://web02",
                            str(tmp / "test_infra.py")], cwd=tmp, capture_output=True, text=True, timeout=300,
                           env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"})
    assert infra.returncode == 0 and "3 passed" in infra.stdout, infra.stdout + infra.stderr

    # booted's own services listen on the lab gateway only (nginx: boot endpoint, apt-cacher-ng: apt proxy)
    state = str(lab_run.env["BOOTED_STATE_DIR"])
    ours = {pid for pid, argv in processes() if any(state in a for a in argv)
            and ("nginx: master process" in argv[0] or argv[0].endswith("apt-cacher-ng"))}
    children = {int(p) for pid in ours for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    addresses = {line.split()[3] for line in listening
                 if any(f"pid={pid}," in line for pid in ours | children)}
    assert addresses == {"10.213.28.1:8470", "10.213.28.1:8471"}, addresses

    inv = json.loads(lab_run.fab("inventory", "--format", "json").stdout)
    assert inv["groups"]["service_hello"] == ["web01", "web02"] and inv["groups"]["role_lb"] == ["lb01"]
    assert "service_hello = [('web01'" in lab_run.fab("inventory", "--format", "pyinfra").stdout


def test_an_environment_with_packages_boots_with_them(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(
        'ENVIRONMENTS = {"pk": {"provider": "netns", "network": "10.213.30.0/24", "packages": ["redis-server"],'
        ' "hosts": {"r[1:2]": {}}}}\n')
    start = lab_run.fab("env_start_all", timeout=900)
    assert "2 ok, 0 failed" in start.stdout, start.stdout + start.stderr
    out = lab_run.fab("hosts_run", "redis-server --version; redis-server --port 6390 --bind 127.0.0.1 --daemonize yes"
                      " >/dev/null; sleep 0.5; redis-cli -p 6390 ping").stdout
    assert out.count("Redis server v=") == 2 and out.count("PONG") == 2, out


def test_systemd_hosts_run_services_from_packages(lab_run: LabRun) -> None:
    """"init": "systemd": Debian's systemd is PID 1 (systemd-nspawn on netns hosts); a package's service
    starts as on a real server and Ansible's service module drives it."""
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(
        'ENVIRONMENTS = {"sd": {"provider": "netns", "network": "10.213.31.0/24", "init": "systemd",'
        ' "hosts": {"s[1:2]": {"service": "hello", "version": "1.0"}}}}\n')
    start = lab_run.fab("env_start_all", timeout=900)
    assert "2 ok, 0 failed" in start.stdout, start.stdout + start.stderr
    out = lab_run.fab("hosts_run", "cat /proc/1/comm; systemctl is-system-running --wait").stdout
    assert out.count("systemd\nrunning") == 2, out
    ansible(lab_run, "all", "-m", "apt", "-a", "name=redis-server")
    assert lab_run.fab("hosts_run", "systemctl is-active redis-server").stdout.count("\nactive") == 2
    ansible(lab_run, "s1", "-m", "service", "-a", "name=redis-server state=stopped")
    states = lab_run.fab("hosts_run", "systemctl is-active redis-server || true").stdout
    assert "--- s1\ninactive" in states and "--- s2\nactive" in states, states  # each host its own systemd
    assert "2 ok, 0 failed" in lab_run.fab("env_stop").stdout
