"""An OS installer on a qemu VM: its kernel, initrd and command line (its ISO as a CD) onto the host's own
new disk, installed.qcow2, on the host's tap, until the installer powers the VM off (done) or the timeout
passes. Waiting here is for the installer's work, not for a boot; the VM never outlives the run."""

from __future__ import annotations

import subprocess
import time

from booted.config import CHILD_ENV, Settings
from booted.hosts.identity import Identity
from booted.providers.base import InstallMedia, Progress
from booted.providers.lab import Lab
from booted.providers.qemu_cmdline import installer_command
from booted.providers.qemu_tap import make_taps
from booted.providers.qemuctl import detect_accel, last_words

PROGRESS_SECONDS = 30  # a line about the install this often


def install(settings: Settings, lab: Lab, host: Identity, media: InstallMedia, timeout: float, progress: Progress
            ) -> tuple[bool, str]:
    """Run the installer until it powers the VM off: (ok, what happened). A timeout, Ctrl-C or an error ends
    the VM."""
    hdir = lab.host_dir(host.name)
    hdir.mkdir(parents=True, exist_ok=True)
    disk = hdir / "installed.qcow2"
    disk.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "4G"], check=True)
    errors = make_taps(lab, [host])
    if errors:
        return False, errors[host.name]
    accel, _ = detect_accel(settings.cache_dir, media.kernel, settings.accel)
    console = hdir / "console.log"
    console.write_text(f"--- booted: installing {host.name} at {time.strftime('%F %T')} (qemu, {accel})\n")
    cmd = installer_command(lab, host, accel, media.kernel, media.initrd, media.append, disk, media.iso)
    start = time.monotonic()
    with open(hdir / "qemu.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=CHILD_ENV,
                                start_new_session=True)
    shown = 0.0
    try:
        while proc.poll() is None and time.monotonic() - start < timeout:
            if time.monotonic() - shown > PROGRESS_SECONDS:
                shown = time.monotonic()
                progress(f"  [{shown - start:6.0f}s] installing {host.name}: {last_words(hdir)[-120:]}")
            time.sleep(1)
    finally:  # a timeout, Ctrl-C or an error: the installer VM does not outlive the run
        finished = proc.poll() is not None
        if not finished:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if not finished:
        return False, f"the install did not finish within {timeout:.0f}s: {last_words(hdir)}"
    took = time.monotonic() - start
    if proc.returncode != 0:
        return False, f"qemu exited with {proc.returncode}: {last_words(hdir)}"
    return True, f"installed in {took:.0f}s onto {disk}"
