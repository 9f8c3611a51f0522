"""booted's apt proxy for the lab network: its own apt-cacher-ng (Debian's), as booted runs its own nginx.

Config copied from the package's /etc/apt-cacher-ng with the Debian mirror the controller uses as the only
backend (the package's built-in mirror list is not reachable from here); the cache is shared by every lab
of this cache directory, so a package a host installed once comes from the cache for every other host. It
listens only on the lab gateways (no route out is needed: hosts' apt goes through it), starts with the
first lab and stops with the last.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from booted.config import CHILD_ENV, Settings
from booted.errors import ProviderError
from booted.images.golden import default_mirror
from booted.providers.procs import alive, cmdline, from_pidfile

SYSTEM_CONF = Path("/etc/apt-cacher-ng")


class AptProxy:
    """The apt-cacher-ng of one state directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.state_dir / "apt-cacher-ng"
        self.conf = self.run_dir / "conf"
        self.cache = settings.cache_dir / "apt-cacher-ng"
        self.pidfile = self.run_dir / "pid"

    def binary(self) -> str | None:
        return self.settings.which("apt-cacher-ng")

    def pid(self) -> int | None:
        """The running instance's PID, if it is ours (its argv names our config folder)."""
        return from_pidfile(self.pidfile, str(self.conf))

    def listening(self) -> list[str]:
        pid = self.pid()
        if pid is None:
            return []
        args = [a for a in cmdline(pid) if a.startswith("BindAddress=")]
        return args[0].split("=", 1)[1].split() if args else []

    def ensure(self, listen: list[str]) -> str:
        """Run on exactly these addresses (restarted when they change: apt-cacher-ng binds at start)."""
        binary = self.binary()
        if binary is None:
            return "not installed (apt-get install apt-cacher-ng, or run setup.sh): lab hosts cannot install packages"
        if self.pid() and sorted(self.listening()) == sorted(listen):
            return "running"
        self.stop()
        self._configure()
        args = [binary, "-c", str(self.conf), f"CacheDir={self.cache}", f"LogDir={self.run_dir / 'log'}",
                f"SocketPath={self.run_dir / 'socket'}", f"PidFile={self.pidfile}", f"Port={self.settings.apt_port}",
                f"BindAddress={' '.join(sorted(listen))}", "ForeGround=0", "ExThreshold=4"]
        proc = subprocess.run(args, capture_output=True, text=True, check=False, env=CHILD_ENV, timeout=30)
        for _ in range(100):
            if self.pid():
                return "started"
            time.sleep(0.02)
        raise ProviderError(f"apt-cacher-ng did not start: {(proc.stderr or proc.stdout).strip()[-400:]} "
                            f"(see {self.run_dir / 'log'})")

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not alive(pid):
                break
            time.sleep(0.05)
        return True

    def _configure(self) -> None:
        for sub in (self.conf, self.run_dir / "log", self.cache):
            sub.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        if SYSTEM_CONF.is_dir():
            for f in SYSTEM_CONF.iterdir():
                if f.is_file():
                    shutil.copyfile(f, self.conf / f.name)
        mirror = (self.settings.mirror or default_mirror()).rstrip("/") + "/"
        (self.conf / "backends_debian").write_text(mirror + "\n")
