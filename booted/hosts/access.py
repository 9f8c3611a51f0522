"""The lab open to the tools people already use: an OpenSSH client config, and inventories for Ansible,
pyinfra and scripts. Every entry uses the lab key, the lab's pinned known_hosts and strict host key
checking: no tool ever trusts a host on first use."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

GROUP_RE = re.compile(r"[^a-z0-9_]")


@dataclass(frozen=True)
class Entry:
    """How to reach one lab host, and what it is."""

    name: str
    addr: str  # where SSH answers: the lab IP, or 127.0.0.1 for a user-mode VM
    port: int
    ip: str  # its lab IP
    env: str
    role: str
    service: str | None
    networks: dict[str, str] = field(default_factory=dict)  # network -> its address there (`ip`: the first's)


@dataclass(frozen=True)
class Credentials:
    user: str
    key: Path
    known_hosts: Path

    def ssh_options(self) -> list[str]:
        return [f"UserKnownHostsFile={self.known_hosts}", "GlobalKnownHostsFile=/dev/null",
                "StrictHostKeyChecking=yes", "IdentitiesOnly=yes", "BatchMode=yes"]


def ssh_config(entries: list[Entry], cred: Credentials) -> str:
    """An OpenSSH client config: `ssh -F FILE web01`, `scp -F FILE ...`, testinfra's --ssh-config."""
    out = [f"# booted lab hosts: ssh -F THIS_FILE NAME (key {cred.key}, pinned keys {cred.known_hosts})"]
    for e in entries:
        out += [f"Host {e.name}", f"  HostName {e.addr}", f"  Port {e.port}", f"  User {cred.user}",
                f'  IdentityFile "{cred.key}"', f'  UserKnownHostsFile "{cred.known_hosts}"',
                "  GlobalKnownHostsFile /dev/null", "  StrictHostKeyChecking yes", "  IdentitiesOnly yes", ""]
    return "\n".join(out)


def group(kind: str, value: str) -> str:
    return f"{kind}_{GROUP_RE.sub('_', value.lower())}"


def groups(entries: list[Entry]) -> dict[str, list[str]]:
    """env_<env>, role_<role>, service_<service> -> host names."""
    out: dict[str, list[str]] = {}
    for e in entries:
        for name in (group("env", e.env), group("role", e.role), *([group("service", e.service)] if e.service
                                                                   else [])):
            out.setdefault(name, []).append(e.name)
    return dict(sorted(out.items()))


def ansible(entries: list[Entry], cred: Credentials) -> str:
    """An Ansible YAML inventory (save it as inventory.yml): `ansible -i inventory.yml all -m ping`."""
    q = json.dumps
    args = " ".join(f"-o {o}" for o in cred.ssh_options())
    lines = ["# booted lab hosts for Ansible: ansible -i inventory.yml all -m ping", "all:", "  vars:",
             f"    ansible_user: {q(cred.user)}", f"    ansible_ssh_private_key_file: {q(str(cred.key))}",
             f"    ansible_ssh_common_args: {q(args)}", "    ansible_python_interpreter: /usr/bin/python3",
             "  hosts:"]
    lines += [f"    {e.name}: {{ansible_host: {q(e.addr)}, ansible_port: {e.port}, booted_networks: {q(e.networks)}}}"
              for e in entries]
    lines.append("  children:")
    for name, hosts in groups(entries).items():
        lines += [f"    {name}:", "      hosts:"] + [f"        {h}: {{}}" for h in hosts]
    return "\n".join(lines) + "\n"


def pyinfra(entries: list[Entry], cred: Credentials) -> str:
    """A pyinfra inventory (save it as inventory.py): `pyinfra inventory.py exec -- hostname`."""
    data = {e.name: {"ssh_hostname": e.addr, "ssh_port": e.port, "ssh_user": cred.user, "ssh_key": str(cred.key),
                     "ssh_known_hosts_file": str(cred.known_hosts), "ssh_strict_host_key_checking": "yes",
                     "ssh_allow_agent": False, "ssh_look_for_keys": False} for e in entries}
    lines = ["# booted lab hosts for pyinfra: pyinfra inventory.py exec -- hostname"]
    for name, hosts in groups(entries).items():
        lines.append(f"{name} = {[(h, data[h]) for h in hosts]!r}")
    return "\n".join(lines) + "\n"


def as_json(entries: list[Entry], cred: Credentials) -> str:
    return json.dumps({"user": cred.user, "key": str(cred.key), "known_hosts": str(cred.known_hosts),
                       "hosts": [asdict(e) for e in entries], "groups": groups(entries)}, indent=2) + "\n"


FORMATS = {"ansible": ansible, "pyinfra": pyinfra, "json": as_json}
