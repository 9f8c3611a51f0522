"""booted's own nginx: render the template, start, reload, restart with a fresh boot log, stop."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from booted.config import CHILD_ENV, Settings
from booted.discovery.bootlog import tally_of
from booted.errors import ProviderError, ToolMissing
from booted.providers.links import ipv4_addresses
from booted.providers.procs import alive, from_pidfile, processes

TEMPLATE = "nginx.conf.j2"


def nginx_binary(settings: Settings) -> str:
    found = settings.which("nginx")
    if found and os.access(found, os.X_OK):
        return found
    raise ToolMissing("nginx not found: apt-get install nginx (or run setup.sh); booted runs its own "
                      "instance and never touches the system's")


def local_addresses() -> set[str]:
    """IPv4 addresses configured on this machine (to listen only on lab gateways that exist)."""
    return {address for on_link in ipv4_addresses().values() for address in on_link}


class Nginx:
    """The nginx of one state directory. Listens on the lab gateways given to `ensure()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.state_dir / "nginx"
        self.conf = self.run_dir / "nginx.conf"
        self.pidfile = self.run_dir / "nginx.pid"

    def render(self, listen: list[str]) -> str:
        import jinja2  # only needed when nginx is (re)configured: keeps every other task's start-up short

        env = jinja2.Environment(loader=jinja2.FileSystemLoader(self.settings.project_root / "nginx"),
                                 autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        return env.get_template(TEMPLATE).render(
            run_dir=self.run_dir, boot_log=self.settings.boot_log, tally=tally_of(self.settings.boot_log),
            served_dir=self.settings.served_dir, port=self.settings.http_port,
            kickstart_dir=self.settings.served_dir / "kickstart", releases_dir=self.settings.releases_dir,
            listen=listen or ["127.0.0.1"],
            user="nobody nogroup" if self.settings.is_root else "")

    def pid(self) -> int | None:
        """The master's PID if it runs and really is our nginx (checked in /proc)."""
        return from_pidfile(self.pidfile, "nginx", str(self.conf))

    def ensure(self, listen: list[str]) -> str:
        """Start nginx, or reload it if its config changed. Returns what was done."""
        binary = nginx_binary(self.settings)
        for sub in ("tmp", "tmp/body"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)  # the boot log carries boot tokens: for root (booted) only
        log = self.settings.boot_log
        log.parent.mkdir(parents=True, exist_ok=True)
        for path in (log, tally_of(log)):
            if not path.exists():
                path.touch(mode=0o600)
        log.chmod(0o600)  # it carries boot tokens (also where BOOTED_LOG puts it outside the state directory)
        limit = file_limit(log, self.settings.boot_log_max)
        text = self.render(sorted(listen))
        changed = not self.conf.exists() or self.conf.read_text() != text
        if changed:
            fd, name = tempfile.mkstemp(dir=self.run_dir, prefix=".nginx.conf.")
            tmp = Path(name)
            try:
                os.write(fd, text.encode())
                os.close(fd)
                os.chmod(tmp, 0o644)
                self._check(binary, tmp)
                tmp.replace(self.conf)
            finally:
                tmp.unlink(missing_ok=True)
        pid = self.pid()
        if pid and fsize_limit(pid) != limit:  # BOOTED_BOOT_LOG_MAX changed, or an nginx of an older booted
            self.stop()
            pid = None
        if pid and not changed:
            return "running"
        if pid:
            os.kill(pid, signal.SIGHUP)
            return "reloaded"
        self._reap_orphans()
        # the kernel caps every file nginx writes at `limit`; nginx must ignore SIGXFSZ to see a failed
        # write instead of dying: Python ignores it and restore_signals=False keeps it ignored through exec
        self._run(["prlimit", f"--fsize={limit}:{limit}", "--", binary, "-c", str(self.conf), "-p", str(self.run_dir)],
                  restore_signals=False)
        self._wait_pid()
        return "started"

    def _reap_orphans(self) -> None:
        """End the workers a killed master (-9) left behind: they still hold its listening sockets (a new
        master could not bind) and our log files open, which is how they are told from other nginx."""
        ours = (f"{self.run_dir}/", str(self.settings.boot_log))
        orphans = []
        for pid, argv in processes():
            if not argv[0].startswith("nginx: ") or "master" in argv[0]:
                continue
            try:
                fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            except OSError:
                continue
            if any(f.startswith(ours) for f in fds):
                orphans.append(pid)
                os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not any(alive(pid) for pid in orphans):
                return
            time.sleep(0.02)

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGQUIT)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.05)
        return True

    def rotate_log(self) -> Path | None:
        """Move the boot log aside (kept, timestamped) so the next start begins a new one (and a new tally)."""
        log = self.settings.boot_log
        tally_of(log).unlink(missing_ok=True)
        if not log.exists():
            return None
        kept = log.with_name(f"{log.name}.{time.strftime('%Y%m%d-%H%M%S')}")
        log.rename(kept)
        return kept

    def _check(self, binary: str, conf: Path) -> None:
        self._run([binary, "-t", "-q", "-c", str(conf), "-p", str(self.run_dir)])

    def _run(self, cmd: list[str], restore_signals: bool = True) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=CHILD_ENV,
                              restore_signals=restore_signals)
        if proc.returncode != 0:
            raise ProviderError(f"nginx failed ({' '.join(cmd[1:2])}): {proc.stderr.strip()[-600:]}")

    def _wait_pid(self) -> None:
        for _ in range(100):
            if self.pid():
                return
            time.sleep(0.02)
        raise ProviderError(f"nginx did not start; see {self.run_dir / 'error.log'}")


def file_limit(log: Path, total: int) -> int:
    """The file-size limit nginx runs with, so that the boot log, its tally and its kept copies
    (restart_nginx) take at most `total` bytes together: the kept copies at most half (the oldest are
    deleted), the live log and the tally at most half of the rest each."""
    kept = sorted(log.parent.glob(f"{glob.escape(log.name)}.[0-9]*"))  # boot.log.YYYYmmdd-HHMMSS
    sizes = {path: path.stat().st_size for path in kept}
    while kept and sum(sizes.values()) > total // 2:
        oldest = kept.pop(0)
        oldest.unlink(missing_ok=True)
        del sizes[oldest]
    return (total - sum(sizes.values())) // 2


def fsize_limit(pid: int) -> int | None:
    """A process's soft file-size limit in bytes (None: unlimited or unknown)."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max file size"):
                value = line.split()[3]
                return int(value) if value.isdigit() else None
    except OSError:
        pass
    return None


def serve(settings: Settings, addresses: set[str], keep: bool = False) -> str:
    """Run booted's nginx where the labs that are up call it (`addresses`: their gateways; loopback for
    user-mode VMs), keeping only addresses this machine has. With none left it stops (nothing is left
    running after env_stop), unless `keep`: then it listens on loopback only. Returns what was done."""
    listen = addresses & (local_addresses() | {"127.0.0.1"})
    nginx = Nginx(settings)
    if not listen and not keep:
        return "stopped" if nginx.stop() else "not running"
    return nginx.ensure(sorted(listen))
