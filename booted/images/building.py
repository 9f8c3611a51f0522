"""What the VM image builds share: the tools they run (found on the caller's PATH), the cache key of their
inputs, and the progress callback they report through."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable

from booted.errors import ToolMissing

Progress = Callable[[str], None]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # callers pass Settings.path (the user's PATH, then sbin)


def digest(*parts: str | bytes) -> str:
    """A cache key of a build's inputs (12 hex digits of their SHA-256)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:12]


def tool_path(name: str, path: str) -> str:
    """The full path of a tool (modprobe and mkfs.ext4 live in sbin, which a user's PATH often lacks)."""
    return shutil.which(name, path=path) or name


def need_tools(path: str, *tools: str) -> None:
    """Raise ToolMissing naming the Debian packages unless every tool is on `path`."""
    missing = [t for t in tools if shutil.which(t, path=path) is None]
    if missing:
        raise ToolMissing(f"{', '.join(missing)} not found: apt-get install apt dpkg kmod e2fsprogs "
                          "(or run setup.sh)")
