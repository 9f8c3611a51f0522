"""Keys and identities: the per-lab SSH key, per-host host keys, known_hosts, the identity file.

The controller makes every key. A host is handed its private host key at boot; the public half is
pinned in the lab's known_hosts before the host exists, so connections never trust on first use.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from booted.errors import BootedError, ToolMissing


def _keygen(path: Path, comment: str, search: str) -> None:
    keygen = shutil.which("ssh-keygen", path=search)
    if keygen is None:
        raise ToolMissing("ssh-keygen not found: apt-get install openssh-client (or run setup.sh)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # made under a unique name and renamed: a run killed (or a disk that fills) half-way leaves no half key
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    proc = subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(tmp)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.pub").unlink(missing_ok=True)
        said = proc.stderr.strip()
        for sign, code in (("No space left", errno.ENOSPC), ("Read-only", errno.EROFS), ("quota", errno.EDQUOT)):
            if sign in said:  # a full or read-only state dir: a message (errors.storage_error), not a bug
                raise OSError(code, os.strerror(code), str(path))
        raise BootedError(f"ssh-keygen could not make {path}: {said[-300:] or f'exit {proc.returncode}'}")
    os.replace(f"{tmp}.pub", f"{path}.pub")
    os.replace(tmp, path)


@dataclass(frozen=True)
class Keys:
    """Where the keys of one state directory live (`search`: where ssh-keygen is looked up, Settings.path)."""

    root: Path
    search: str = "/usr/bin:/bin"

    @property
    def lab_key(self) -> Path:
        return self.root / "lab_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    def host_key(self, name: str) -> Path:
        return self.root / "hosts" / name / "ssh_host_ed25519_key"

    def ensure_lab_key(self) -> str:
        """The lab's login key (made once); returns the public key line."""
        if not self.lab_key.exists():
            _keygen(self.lab_key, "booted-lab", self.search)
        return self.lab_key.with_suffix(".pub").read_text().strip()

    def ensure_host_key(self, name: str) -> str:
        """A host's SSH host key (made once per host image); returns the public key line."""
        key = self.host_key(name)
        if not key.exists():
            _keygen(key, f"booted-host-{name}", self.search)
        return Path(f"{key}.pub").read_text().strip()

    def drop_host_key(self, name: str) -> None:
        shutil.rmtree(self.host_key(name).parent, ignore_errors=True)

    def write_known_hosts(self, pins: list[tuple[str, str]]) -> None:
        """Rewrite known_hosts from (ip, public key line) pairs, atomically."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = "".join(f"{ip} {' '.join(pub.split()[:2])}\n" for ip, pub in sorted(pins))
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".known_hosts.")  # unique: runs write it at once
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.known_hosts)


def fingerprint(pub: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line (what a host reports in its boot URL)."""
    blob = base64.b64decode(pub.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def hash_password(password: str, search: str = "/usr/bin:/bin") -> str:
    """SHA-512 crypt of BOOTED_PW, so no clear-text secret reaches a host, a kickstart or a log."""
    openssl = shutil.which("openssl", path=search)
    if openssl is None:
        raise ToolMissing("openssl not found: apt-get install openssl (needed to hash BOOTED_PW)")
    proc = subprocess.run([openssl, "passwd", "-6", "-stdin"], input=password + "\n", capture_output=True,
                          text=True, check=True)
    return proc.stdout.strip()


@dataclass(frozen=True)
class Nic:
    """A host's NIC on one of its lab's networks (eth0: the first network's, the Identity's ip and mac)."""

    network: str
    iface: str
    ip: str
    prefix: int
    mac: str


@dataclass(frozen=True)
class Identity:
    """What a host is told at boot: the same fields for every provider."""

    name: str
    ip: str
    prefix: int
    gateway: str
    mac: str
    boot_url: str
    login_user: str
    pw_hash: str | None
    host_key: Path
    authorized_key: str
    memory: int = 256  # MB; VM providers size the machine from these, namespaces ignore them
    cpus: int = 1
    ports: tuple[int, ...] = ()  # TCP ports its service listens on (forwarded for user-mode VMs)
    boot_token: str = ""  # a secret of this boot, sent with the phone-home: only this host has it
    apt_proxy: str = ""  # booted's apt proxy on the gateway, for the host's apt
    serve: str = ""  # serve.sh: fetch, unpack and start the host's service at first boot (booted's deploy.sh)
    release: str = ""  # the release serve.sh starts, announced in the boot-log line once it serves
    hypervisor: str = ""  # libvirt: the hypervisor it runs on (placement; not told to the host)
    network: str = ""  # the name of the first network (eth0's)
    extra: tuple[Nic, ...] = ()  # its NICs on the lab's other networks: eth1, eth2...

    @property
    def nics(self) -> tuple[Nic, ...]:
        """Every NIC of the host, eth0 first."""
        return (Nic(self.network, "eth0", self.ip, self.prefix, self.mac), *self.extra)

    def hostkey_fingerprint(self) -> str:
        """The host key's fingerprint, handed in so the guest need not compute it ('' without the key file:
        the guest computes it then)."""
        try:
            return fingerprint(Path(f"{self.host_key}.pub").read_text())
        except (OSError, IndexError, ValueError):
            return ""

    def env_text(self) -> str:
        """The /run/booted/identity file: shell KEY='value' lines, every value quoted."""
        values = {
            "BOOTED_HOSTNAME": self.name, "BOOTED_IP": self.ip, "BOOTED_PREFIX": str(self.prefix),
            "BOOTED_GATEWAY": self.gateway, "BOOTED_MAC": self.mac, "BOOTED_BOOT_URL": self.boot_url,
            "BOOTED_IFACE": "eth0", "BOOTED_LOGIN_USER": self.login_user, "BOOTED_PW_HASH": self.pw_hash or "",
            "BOOTED_BOOT_TOKEN": self.boot_token, "BOOTED_APT_PROXY": self.apt_proxy,
            "BOOTED_RELEASE": self.release, "BOOTED_HOSTKEY": self.hostkey_fingerprint(),
            "BOOTED_NICS": " ".join(f"{n.iface}={n.ip}/{n.prefix}" for n in self.extra),
        }
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())

    def write_dir(self, target: Path) -> None:
        """Write the identity files a host's boot script reads (/run/booted/ inside the host)."""
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(target / "identity", self.env_text())
        shutil.copyfile(self.host_key, target / "ssh_host_ed25519_key")
        (target / "ssh_host_ed25519_key").chmod(0o600)
        shutil.copyfile(f"{self.host_key}.pub", target / "ssh_host_ed25519_key.pub")
        (target / "authorized_keys").write_text(self.authorized_key + "\n")
        serve = target / "serve.sh"
        if self.serve:
            serve.write_text(self.serve)  # no secret in it: readable by the login user who runs it
            serve.chmod(0o644)
        else:
            serve.unlink(missing_ok=True)


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, from the first byte (no window at 0644)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
