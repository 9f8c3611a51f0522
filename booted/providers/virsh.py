"""Talking to one libvirt daemon through virsh, libvirt's own client (LANG=C, quiet, no prompts).

virsh is what people already run against libvirt, reaches every URI libvirt does (qemu:///system,
qemu+ssh://, qemu+tcp://) and needs nothing compiled into booted's virtualenv. A command fails when it
exits non-zero; its `error:` lines are the message. A daemon that cannot be reached raises HypervisorDown.
Every call has a timeout; stdin is closed (an ssh URI must not wait for a password)."""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from booted.config import CHILD_ENV
from booted.errors import ProviderError

DOWN = ("failed to connect to the hypervisor", "unable to connect to server", "Cannot recv data",
        "End of file while reading data", "no connection driver available")
ERROR_RE = re.compile(r"^error: ")
# what libvirt says of something that is not there (any more): no error for a removal
MISSING = ("not found", "failed to get", "no storage vol", "no network with matching name", "is not running",
           "not active")


class VirshError(ProviderError):
    """A virsh command failed."""


class HypervisorDown(VirshError):
    """The libvirt daemon could not be reached."""


@dataclass
class Virsh:
    """virsh against one URI; `calls` logs every command (argv after the URI)."""

    uri: str
    binary: str = "virsh"
    timeout: float = 120.0
    env: dict[str, str] = field(default_factory=lambda: {**CHILD_ENV, "LANG": "C", "LC_ALL": "C"})

    def __post_init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, *args: str, timeout: float | None = None, ok: tuple[str, ...] = ()) -> str:
        """`virsh -q -c URI args...`: its stdout. A failure whose message contains one of `ok` returns ""."""
        self.calls.append(list(args))
        try:
            proc = subprocess.run([self.binary, "-q", "-c", self.uri, *args], capture_output=True, text=True,
                                  env=self.env, timeout=timeout or self.timeout, stdin=subprocess.DEVNULL,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise VirshError(f"virsh {args[0]} on {self.uri} did not finish within {timeout or self.timeout:g}s") \
                from None
        except OSError as exc:
            raise VirshError(f"cannot run {self.binary}: {exc.strerror or exc}") from None
        if proc.returncode == 0:
            return proc.stdout
        lines = [ERROR_RE.sub("", line).strip() for line in proc.stderr.splitlines() if line.strip()]
        message = " / ".join(lines) or f"exit {proc.returncode}"
        if ok and any(o in message for o in ok):
            return ""
        if any(d in message for d in DOWN):
            raise HypervisorDown(message[:400])
        raise VirshError(f"virsh {' '.join(args[:2])} failed on {self.uri}: {message}"[:500])

    def names(self, every: bool = False) -> list[str]:
        """Running domains (or every defined one), by name: libvirt's own listing, one call."""
        out = self.run("list", "--name", *(["--all"] if every else []))
        return [n.strip() for n in out.splitlines() if n.strip()]

    def define(self, command: str, text: str, path: Path) -> None:
        """`virsh <command> FILE` (define, net-define, pool-define), FILE a temporary file beside `path`
        holding `text` (libvirt keeps its own copy)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        try:
            self.run(command, str(tmp))
        finally:
            tmp.unlink(missing_ok=True)

    def xml(self, *args: str) -> ET.Element:
        return ET.fromstring(self.run(*args))

    def info(self, *args: str) -> dict[str, str]:
        """`Key:   value` output (nodeinfo, vol-info, dominfo) as a dict."""
        out: dict[str, str] = {}
        for line in self.run(*args).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out
