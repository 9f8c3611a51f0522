"""Snapshots of qemu hosts with QEMU's own mechanisms: disk and memory, so a restored VM continues from the
instruction it was paused at (no boot, no service restart).

Taking one: QMP `stop` on every VM of the lab at once (pause), then per VM a migration of its whole state
into a file QEMU writes itself (`fd:`, the file's descriptor handed over QMP with `getfd`: QEMU 7.2 has no
`file:` migration, and `exec:cat > FILE` adds a pipe and a process), with the migration's bandwidth limit
lifted (QEMU's default, 128 MiB/s, made the pause about 0.8 s; without it 0.1-0.2 s for three 256 MB VMs);
zero pages are one flag each, so the stream is about the guest's used memory and is not compressed. Then its
qcow2 overlay is copied beside it (the migration has flushed and inactivated the disk; `cont` takes it back),
with the VM's command line and identity files; then `cont` on every VM (resume).
An internal qcow2 snapshot (savevm) would live in the overlay, which env_stop discards.

Restoring one: the stopped host gets its overlay and identity files back (restore), and is started later with
the same command line plus `-incoming fd:N` (the stream opened for it: QEMU reads it as it starts), then
`cont` once loaded (start_saved). The guest's clock stood still while it was paused or saved:
booted/snapshots/clock.py sets it over SSH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from booted.config import CHILD_ENV
from booted.errors import ProviderError
from booted.providers import qemu_migrate
from booted.providers.base import Started
from booted.providers.each import each
from booted.providers.lab import Lab
from booted.providers.procs import cmdline
from booted.providers.qemu_migrate import MOVING, as_started, command, incoming, loaded, migrate_to
from booted.providers.qemuctl import is_vm
from booted.providers.vm import vm_name

MEMORY = "memory.migration"  # in a snapshot's host folder: the VM's migration stream
DISK = "disk.qcow2"
ARGV = "argv.json"  # the VM's command line when it was saved
KEPT = ("identity", "tap", "forwards.json", "seed.img")  # a host folder's files its command line refers to
RESUME = "resume-from"  # in a restored host's folder: the snapshot folder its VM continues from
QUIT_SECONDS = 3.0
# a watchdog's resume for each socket, with nothing of booted imported (its run may be gone): as resume()
# (each socket reached through its folder's descriptor: AF_UNIX paths end at 107 bytes, state dirs may be deeper)
CONT = ("import json,os,socket,sys,time\n"
        f"M={MOVING!r}\n"
        "def c(f,x):\n"
        "  f.write(json.dumps({'execute':x}).encode()+b'\\n');f.flush()\n"
        "  while True:\n"
        "    r=json.loads(f.readline())\n"
        "    if 'return' in r or 'error' in r: return r.get('return')\n"
        "for p in sys.argv[1:]:\n"
        "  try:\n"
        "    d=os.open(os.path.dirname(p),os.O_PATH);s=socket.socket(socket.AF_UNIX);s.settimeout(3)\n"
        "    s.connect('/proc/self/fd/%d/%s'%(d,os.path.basename(p)));f=s.makefile('rwb');f.readline()\n"
        "    c(f,'qmp_capabilities');c(f,'migrate_cancel');t=time.monotonic()+30\n"
        "    while (c(f,'query-migrate') or {}).get('status') in M and time.monotonic()<t: time.sleep(0.05)\n"
        "    c(f,'cont')\n"
        "  except (OSError,ValueError):\n"
        "    pass\n")


def pause(lab: Lab, names: list[str]) -> dict[str, str]:
    return each(names, lambda n: command(lab.host_dir(n) / "qmp.sock", "stop"), most=32)


def resume(lab: Lab, names: list[str]) -> dict[str, str]:
    """`cont` (a running VM ignores it), after cancelling a migration still under way (a `cont` during one
    would run the VM until it completes, then leave it stopped). The caller corrects the guests' clocks
    (booted/snapshots/clock.py)."""
    return each(names, lambda n: qemu_migrate.resume(lab.host_dir(n) / "qmp.sock"), most=32)


def resume_command(lab: Lab, names: list[str]) -> list[str]:
    return [sys.executable, "-c", CONT, *(str(lab.host_dir(n) / "qmp.sock") for n in names)]


def drop(lab: Lab, pids: dict[str, int]) -> None:
    """QMP `quit` on running VMs whose state a restore replaces (no power button: nothing of theirs is kept),
    waiting a few seconds for them to exit; the stop that follows ends any left."""
    each(list(pids), lambda n: command(lab.host_dir(n) / "qmp.sock", "quit"), most=32)
    deadline = time.monotonic() + QUIT_SECONDS
    while time.monotonic() < deadline and any(is_vm(pid, vm_name(lab, n)) for n, pid in pids.items()):
        time.sleep(0.02)


def save(lab: Lab, name: str, pid: int | None, folder: Path) -> list[str]:
    """A paused VM's memory (its migration stream) and disk, its command line and identity files, into
    `folder`; a stopped host (pid None): its disk only (it boots on a restore). Returns the image files its
    disk and command line depend on."""
    hdir = lab.host_dir(name)
    argv: list[str] = []
    if pid is not None:
        argv = as_started(cmdline(pid))
        if not argv:
            raise ProviderError(f"{name}: its QEMU (PID {pid}) is gone")
        (folder / ARGV).write_text(json.dumps(argv) + "\n")
        for kept in KEPT:
            src = hdir / kept
            if src.is_dir():
                shutil.copytree(src, folder / kept)
            elif src.exists():
                shutil.copy2(src, folder / kept)
        error = migrate_to(hdir / "qmp.sock", folder / MEMORY)
        if error:
            raise ProviderError(f"{name}: could not save its memory: {error}")
    if (hdir / DISK).exists():
        subprocess.run(["cp", "--reflink=auto", "--sparse=always", str(hdir / DISK), str(folder / DISK)],
                       check=True, capture_output=True, timeout=600)
    return _depends(folder / DISK, argv)


def _depends(disk: Path, argv: list[str]) -> list[str]:
    refs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-kernel", "-initrd")]
    if disk.exists():
        proc = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(disk)], capture_output=True,
                              text=True, check=False, timeout=30)
        try:
            backing = json.loads(proc.stdout).get("full-backing-filename")
        except ValueError:
            backing = None
        if backing:
            refs.append(str(backing))
    return refs


def restore(lab: Lab, name: str, folder: Path) -> None:
    """A stopped host's disk back from `folder`; when its memory was saved too, its identity files and the
    mark that makes start_saved continue it. A re-run after a crash redoes it."""
    hdir = lab.host_dir(name)
    hdir.mkdir(parents=True, exist_ok=True)
    (hdir / RESUME).unlink(missing_ok=True)
    if (folder / DISK).exists():
        fresh = hdir / f".{DISK}.restoring"
        subprocess.run(["cp", "--reflink=auto", "--sparse=always", str(folder / DISK), str(fresh)],
                       check=True, capture_output=True, timeout=600)
        os.replace(fresh, hdir / DISK)
    else:
        (hdir / DISK).unlink(missing_ok=True)
    if not (folder / MEMORY).exists():
        return
    for kept in KEPT:
        dest = hdir / kept
        shutil.rmtree(dest, ignore_errors=True) if dest.is_dir() else dest.unlink(missing_ok=True)
        if (folder / kept).is_dir():
            shutil.copytree(folder / kept, dest)
        elif (folder / kept).exists():
            shutil.copy2(folder / kept, dest)
    (hdir / RESUME).write_text(str(folder) + "\n")


def saved(lab: Lab, name: str) -> Path | None:
    """The snapshot folder a restored host continues from (None: it boots)."""
    try:
        folder = Path((lab.host_dir(name) / RESUME).read_text().strip())
    except OSError:
        return None
    return folder if (folder / MEMORY).exists() and (folder / ARGV).exists() else None


def start_saved(lab: Lab, name: str) -> tuple[Started | None, str]:
    """Start a restored host's VM from its saved memory: the same command line plus `-incoming fd:N`, N the
    migration stream's file opened for it (QEMU reads it as it starts: no `cat`, no QMP round trip first),
    then `cont` once it is loaded (it loads paused, as it was saved). (Started, "") or (None, why not)."""
    folder = saved(lab, name)
    if folder is None:
        return None, f"{name} has no saved memory to continue from"
    hdir = lab.host_dir(name)
    argv = json.loads((folder / ARGV).read_text())
    sock = hdir / "qmp.sock"
    sock.unlink(missing_ok=True)
    with open(hdir / "console.log", "a") as console:
        console.write(f"\n--- booted: {name} continues from a snapshot at {time.strftime('%F %T')}\n")
    try:
        stream = os.open(folder / MEMORY, os.O_RDONLY)
    except OSError as exc:
        return None, f"cannot read {folder / MEMORY}: {exc.strerror}"
    with open(hdir / "qemu.log", "wb") as log:
        try:
            proc = subprocess.Popen(incoming(argv, stream), stdin=subprocess.DEVNULL, env=CHILD_ENV,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=hdir,
                                    pass_fds=(stream,))
        except OSError as exc:
            return None, f"could not start QEMU: {exc}"
        finally:
            os.close(stream)
    error = loaded(proc, sock) or command(sock, "cont")
    if error:
        _kill(proc)
        return None, f"could not continue {name} from its snapshot: {error}"
    (hdir / RESUME).unlink(missing_ok=True)
    return Started(name, proc.pid), ""


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=10)
