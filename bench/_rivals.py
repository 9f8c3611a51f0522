"""The tools users would pick instead of booted, for bench/fanout.py: Ansible and pyinfra running the same
three steps (upload the release, booted's own deploy and start scripts, check /health from the controller)."""

from __future__ import annotations

import json
from pathlib import Path

import _benchlib as lib

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: upload the release
      ansible.builtin.copy:
        src: "{{ release_tarball }}"
        dest: "{{ incoming }}"
    - name: unpack, switch current
      ansible.builtin.shell: "{{ deploy_script }}"
      args: {executable: /bin/bash}
    - name: start supervised, wait until it answers
      ansible.builtin.shell: "{{ start_script }}"
      args: {executable: /bin/bash}
    - name: check /health from the controller
      ansible.builtin.uri:
        url: "http://{{ ansible_host }}:8000/health"
        return_content: true
      delegate_to: localhost
      register: health
      failed_when: >-
        health.status != 200 or health.json.host != inventory_hostname or health.json.version != want_version
"""
PYINFRA_DEPLOY = """\
import json
import urllib.request

from pyinfra import host
from pyinfra.operations import files, python, server

files.put(name="upload the release", src=host.data.release_tarball, dest=host.data.incoming)
# bash, like booted (Fabric runs commands in root's login shell): booted's stop snippet needs bash
server.shell(name="unpack, switch current", commands=[host.data.deploy_script], _shell_executable="bash")
server.shell(name="start supervised, wait until it answers", commands=[host.data.start_script],
             _shell_executable="bash")


def check(ip, host_name, version):
    with urllib.request.urlopen(f"http://{ip}:8000/health", timeout=5) as resp:
        data = json.loads(resp.read(65536))
    if data.get("host") != host_name or data.get("version") != version:
        raise Exception(f"{host_name}: /health says {data}")


python.call(name="check /health from the controller", function=check, ip=host.data.ssh_hostname,
            host_name=host.name, version=host.data.want_version)
"""


def ansible(adir: Path, inputs: list[dict[str, str]], version: str, key: str, known_hosts: str,
            base_env: dict[str, str], log: Path) -> float:
    """Ansible: copy + shell + shell + uri, one fork per host; seconds."""
    (adir / "cp").mkdir(parents=True, exist_ok=True)
    lines = ["all:", "  hosts:"]
    for h in inputs:
        lines += [f"    {h['name']}:", f"      ansible_host: {h['ip']}",
                  f"      release_tarball: {json.dumps(h['tarball'])}",
                  f"      incoming: {json.dumps(h['incoming'])}",
                  f"      want_version: {json.dumps(version)}",
                  f"      deploy_script: !unsafe {json.dumps(h['deploy_script'])}",
                  f"      start_script: !unsafe {json.dumps(h['start_script'])}"]
    (adir / "inventory.yml").write_text("\n".join(lines) + "\n")
    (adir / "site.yml").write_text(PLAYBOOK)
    ssh_args = (f"-C -o ControlMaster=auto -o ControlPersist=60s -o StrictHostKeyChecking=yes "
                f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null "
                "-o IdentitiesOnly=yes -o BatchMode=yes")
    (adir / "ansible.cfg").write_text(
        "[defaults]\n"
        f"forks = {len(inputs)}\nhost_key_checking = True\ninventory = {adir / 'inventory.yml'}\n"
        f"remote_user = root\nprivate_key_file = {key}\ninterpreter_python = /usr/bin/python3\n"
        f"gathering = explicit\nretry_files_enabled = False\nlocal_tmp = {adir / 'tmp'}\n"
        "[ssh_connection]\n"
        f"pipelining = True\nssh_args = {ssh_args}\ncontrol_path_dir = {adir / 'cp'}\n")
    env = dict(base_env, ANSIBLE_CONFIG=str(adir / "ansible.cfg"), ANSIBLE_HOME=str(adir / "home"),
               ANSIBLE_NOCOLOR="1")
    seconds, _ = lib.timed([str(lib.BIN / "ansible-playbook"), str(adir / "site.yml")], env=env, cwd=adir,
                           log=log)
    return seconds


def pyinfra(pdir: Path, inputs: list[dict[str, str]], version: str, key: str, known_hosts: str,
            base_env: dict[str, str], log: Path) -> float:
    """pyinfra: put + shell + shell + python.call GET, one in parallel per host; seconds."""
    pdir.mkdir(exist_ok=True)
    hosts = [(h["name"], {"ssh_hostname": h["ip"], "ssh_user": "root", "ssh_key": key,
                          "ssh_allow_agent": False, "ssh_look_for_keys": False,
                          "ssh_known_hosts_file": known_hosts, "ssh_strict_host_key_checking": "yes",
                          "release_tarball": h["tarball"], "incoming": h["incoming"], "want_version": version,
                          "deploy_script": h["deploy_script"], "start_script": h["start_script"]})
             for h in inputs]
    (pdir / "inventory.py").write_text(f"hosts = {hosts!r}\n")
    (pdir / "deploy.py").write_text(PYINFRA_DEPLOY)
    seconds, _ = lib.timed([str(lib.BIN / "pyinfra"), "-y", "--parallel", str(len(inputs)),
                            "inventory.py", "deploy.py"], env=dict(base_env, HOME=str(pdir)), cwd=pdir,
                           log=log)
    return seconds
