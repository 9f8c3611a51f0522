"""Talking to VirtualBox through VBoxManage, its command line (LANG=C, so messages are parseable).

A command fails when it exits non-zero or prints `VBoxManage: error:` on stderr; the error lines are the
message. VirtualBox takes a lock on a machine for every session, and a command that arrives while another
one (or the VM process starting or stopping) holds it fails with "... is already locked ..."; those races
are retried a few times with a short pause, anything else fails at once."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass

from booted.errors import ProviderError

# the lock texts VirtualBox prints (modifyvm/storagectl: "already locked for a session (or being unlocked)";
# startvm: "already locked by a session (or being locked or unlocked)"; unregistervm right after a power-off:
# "Cannot unregister the machine ... while it is locked"; a medium still in use: "is locked for reading")
LOCK_RACES = ("is already locked", "while it is locked", "is locked for reading")
ERROR_RE = re.compile(r"^VBoxManage[.a-z]*: error: ")
HINTS = {"E_ACCESSDENIED": "VirtualBox (6.1.28+) allows host-only addresses only in 192.168.56.0/21 unless "
                           "/etc/vbox/networks.conf lists the lab network, e.g. a line `* 10.0.0.0/8`"}
LIST_RE = re.compile(r'^"(?P<name>.*)" \{(?P<uuid>[0-9a-fA-F-]{36})\}$')
VBOX_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")
ENV = {"LANG": "C", "LC_ALL": "C", "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}


class VBoxError(ProviderError):
    """A VBoxManage command failed (the message has its `VBoxManage: error:` lines)."""


@dataclass
class VBoxManage:
    """One VBoxManage binary; every call is logged in `calls` (argv without the binary)."""

    binary: str
    env: dict[str, str]
    retries: int = 5
    pause: float = 0.5
    timeout: float = 120.0

    def __post_init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, *args: str, retry: bool = True) -> str:
        """Run `VBoxManage args...`; its stdout. Lock races are retried; other failures raise VBoxError."""
        for attempt in range(self.retries if retry else 1):
            self.calls.append(list(args))
            try:
                proc = subprocess.run([self.binary, *args], capture_output=True, text=True, env=self.env,
                                      timeout=self.timeout, check=False)
            except subprocess.TimeoutExpired:
                raise VBoxError(f"VBoxManage {args[0]} did not finish within {self.timeout:g}s") from None
            except OSError as exc:
                raise VBoxError(f"cannot run {self.binary}: {exc.strerror or exc}") from None
            errors = [ERROR_RE.sub("", line).strip() for line in proc.stderr.splitlines() if ERROR_RE.match(line)]
            if proc.returncode == 0 and not errors:  # an error can come with exit 0: stderr decides too
                return proc.stdout
            message = " / ".join(e for e in errors if not e.startswith(("Details:", "Context:"))) \
                or " / ".join(errors) or proc.stderr.strip() or f"exit {proc.returncode}"
            message += "".join(f" ({hint})" for code, hint in HINTS.items() if code in proc.stderr)
            if retry and attempt + 1 < self.retries and any(race in proc.stderr for race in LOCK_RACES):
                time.sleep(self.pause * (attempt + 1))
                continue
            raise VBoxError(f"VBoxManage {' '.join(args[:2])} failed: {message}"[:500])
        raise AssertionError("unreachable")

    def version(self) -> tuple[int, int, int]:
        out = self.run("--version", retry=False).strip()
        match = VBOX_VERSION.match(out)
        if not match:
            raise VBoxError(f"VBoxManage --version said {out!r}: not a VirtualBox version")
        return int(match.group(1)), int(match.group(2)), int(match.group(3))

    def vms(self, running: bool = False) -> dict[str, str]:
        """`list vms` (or `list runningvms`): name -> uuid."""
        out = self.run("list", "runningvms" if running else "vms")
        return {m.group("name"): m.group("uuid") for m in map(LIST_RE.match, out.splitlines()) if m}

    def info(self, vm: str) -> dict[str, str]:
        """`showvminfo VM --machinereadable`: key -> value (quotes removed)."""
        return machine_readable(self.run("showvminfo", vm, "--machinereadable"))

    def hostonly(self, vmnet: bool) -> list[dict[str, str]]:
        """`list hostonlynets` (VirtualBox 7 on macOS) or `list hostonlyifs`: one dict per network."""
        return blocks(self.run("list", "hostonlynets" if vmnet else "hostonlyifs"))


def machine_readable(text: str) -> dict[str, str]:
    """Parse `key="value"` / `key=value` / `"key"="value"` lines; a quoted value may span lines (a VM's
    description); lines without `=` (VirtualBox 7's `Encryption:     disabled`) are skipped."""
    out: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        while value.startswith('"') and (len(value) == 1 or not value.endswith('"')):
            more = next(lines, None)
            if more is None:
                break
            value += "\n" + more
        out[key.strip().strip('"')] = value.strip('"')
    return out


def blocks(text: str) -> list[dict[str, str]]:
    """Parse VBoxManage's `Key:   value` blocks separated by blank lines (list hostonlyifs, hostonlynets)."""
    found: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if current:
                found.append(current)
            current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip()] = value.strip()
    return found
