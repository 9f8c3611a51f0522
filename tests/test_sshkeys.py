"""The Fleet's credentials: known_hosts parsed once, each connection pinned to its own host's keys only
(real keys made by ssh-keygen; no host is connected to: paramiko's host-key check reads what pin() gave it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import paramiko

from booted.remote.sshkeys import Credentials


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)], check=True)
    kind, blob, _ = path.with_suffix(".pub").read_text().split(" ", 2)
    return f"{kind} {blob}"


def test_a_connection_gets_its_own_hosts_keys_only(tmp_path: Path) -> None:
    one, two = keygen(tmp_path / "one"), keygen(tmp_path / "two")
    known = tmp_path / "known_hosts"
    known.write_text(f"10.213.9.2 {one}\n[127.0.0.1]:2222 {two}\n")
    creds = Credentials(tmp_path / "lab_key", known)
    client = paramiko.SSHClient()
    creds.pin(client, "10.213.9.2", 22)
    keys = client.get_host_keys()
    assert list(keys.keys()) == ["10.213.9.2"]
    assert keys.lookup("10.213.9.2")["ssh-ed25519"].get_base64() == one.split()[1]
    assert isinstance(client._policy, paramiko.RejectPolicy)  # an unknown host is refused, never added

    forwarded = paramiko.SSHClient()
    creds.pin(forwarded, "127.0.0.1", 2222)  # a forwarded port: known_hosts names it [addr]:port
    assert forwarded.get_host_keys().lookup("[127.0.0.1]:2222")["ssh-ed25519"].get_base64() == two.split()[1]

    unknown = paramiko.SSHClient()
    creds.pin(unknown, "10.213.9.3", 22)
    assert len(unknown.get_host_keys()) == 0


def test_known_hosts_is_read_again_when_it_changes(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    creds = Credentials(tmp_path / "lab_key", known)
    before = paramiko.SSHClient()
    creds.pin(before, "10.213.9.2", 22)  # no file yet: nothing pinned
    assert len(before.get_host_keys()) == 0
    key = keygen(tmp_path / "host")
    known.write_text(f"10.213.9.2 {key}\n")  # a host pinned while the run goes on
    after = paramiko.SSHClient()
    creds.pin(after, "10.213.9.2", 22)
    assert after.get_host_keys().lookup("10.213.9.2")["ssh-ed25519"].get_base64() == key.split()[1]
    other = keygen(tmp_path / "other")
    known.write_text(f"10.213.9.2 {other}\n")  # re-pinned (a new identity): the changed file wins
    os.utime(known, ns=(1, 1))
    again = paramiko.SSHClient()
    creds.pin(again, "10.213.9.2", 22)
    assert again.get_host_keys().lookup("10.213.9.2")["ssh-ed25519"].get_base64() == other.split()[1]


def test_the_lab_key_is_loaded_once(tmp_path: Path) -> None:
    missing = Credentials(tmp_path / "lab_key", tmp_path / "known_hosts")
    assert missing.connect_kwargs() == {"key_filename": str(tmp_path / "lab_key")}  # paramiko says why
    keygen(tmp_path / "lab_key")
    creds = Credentials(tmp_path / "lab_key", tmp_path / "known_hosts")
    first, second = creds.connect_kwargs(), creds.connect_kwargs()
    assert isinstance(first["pkey"], paramiko.Ed25519Key) and first["pkey"] is second["pkey"]
    assert first["pkey"].get_base64() == (tmp_path / "lab_key.pub").read_text().split()[1]
