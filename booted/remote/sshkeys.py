"""The lab's SSH credentials as a Fleet uses them: the pinned host keys and the lab key, each read once.

Given `key_filename` and `load_host_keys(known_hosts)`, paramiko reads and parses both files again for every
connection, and its parse checks each line against those before it: with N hosts pinned, one connection's parse
grows as N * N (50 hosts: 1.5-2 ms of CPU per connection; 500 hosts: 30 ms, and hello_deploy's fab CPU at 500
hosts 43 s, 9.4-11.2 s with the parse once). Here known_hosts is parsed once
(again only when the file changes: hosts pinned meanwhile are seen) and each connection gets its own host's
keys only; unknown hosts are refused as before (RejectPolicy), a changed key still fails the connection.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import paramiko


class Credentials:
    """The lab key and the pinned host keys of one state directory, parsed on first use, shared by threads."""

    def __init__(self, key: Path, known_hosts: Path) -> None:
        self.key, self.known_hosts = key, known_hosts
        self._lock = threading.Lock()
        self._pinned: tuple[tuple[int, int, int] | None, paramiko.HostKeys] = (None, paramiko.HostKeys())
        self._pkey: paramiko.PKey | None = None

    def connect_kwargs(self) -> dict[str, Any]:
        """paramiko's authentication arguments: the lab key loaded once (`pkey`), else its file as before (a
        key that cannot be read fails the connection with paramiko's own reason)."""
        with self._lock:
            if self._pkey is None:
                try:
                    self._pkey = paramiko.PKey.from_path(self.key)
                except (OSError, paramiko.SSHException, ValueError):
                    return {"key_filename": str(self.key)}
            return {"pkey": self._pkey}

    def pin(self, client: paramiko.SSHClient, addr: str, port: int) -> None:
        """Give `client` the pinned keys of the host at addr:port (known_hosts names it `addr`, or `[addr]:port`
        off port 22, as paramiko looks it up) and nothing else; with RejectPolicy any other host is refused."""
        name = addr if port == 22 else f"[{addr}]:{port}"
        keys = client.get_host_keys()
        for kind, key in (self._hostkeys().lookup(name) or {}).items():
            keys.add(name, kind, key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())

    def _hostkeys(self) -> paramiko.HostKeys:
        try:
            st = os.stat(self.known_hosts)
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None  # nothing pinned: every host is refused
        with self._lock:
            if stamp != self._pinned[0]:
                parsed = paramiko.HostKeys(str(self.known_hosts)) if stamp is not None else paramiko.HostKeys()
                self._pinned = (stamp, parsed)
            return self._pinned[1]
