"""An OS installer on VirtualBox, which cannot boot a kernel directly: the install VM PXE-boots the
installer's kernel and initrd with booted's command line over its NAT network's TFTP server, the ISO as its
DVD, onto its own disk. Done when the installer powers it off (kickstart `poweroff`); the VM then becomes the
host's (providers/vbox_commands.py: installed_commands), and `image_start` boots it with its seed disk. A
timeout, an error or Ctrl-C removes the half-installed VM. Waiting here is for the installer's work."""

from __future__ import annotations

import time

from booted.hosts.identity import Identity
from booted.images.isoboot import pxe_tree
from booted.providers.base import InstallMedia, Progress
from booted.providers.lab import Lab
from booted.providers.vbox_commands import install_commands, installed_commands
from booted.providers.vboxmanage import VBoxManage
from booted.providers.vm import vm_name

PROGRESS_SECONDS = 30  # a line about the install this often


def install(vbox: VBoxManage, net: str, vmnet: bool, lab: Lab, host: Identity, media: InstallMedia, timeout: float,
            progress: Progress) -> tuple[bool, str]:
    """Install onto the host's new disk (installed.vdi), its NIC on the lab's host-only network `net`:
    (ok, what happened)."""
    vm, hdir = vm_name(lab, host.name), lab.host_dir(host.name)
    hdir.mkdir(parents=True, exist_ok=True)
    tftp = hdir / "tftp"
    boot_file = pxe_tree(tftp, media.kernel, media.initrd, media.append)
    disk = hdir / "installed.vdi"
    disk.unlink(missing_ok=True)
    (hdir / "console.log").write_text(f"--- booted: installing {host.name} at {time.strftime('%F %T')} "
                                      "(virtualbox)\n")
    start, finished = time.monotonic(), False
    try:
        for cmd in install_commands(vm, host, net, vmnet, hdir, disk, media.iso, tftp, boot_file):
            vbox.run(*cmd)
        vbox.run("startvm", vm, "--type", "headless")
        shown = start
        while time.monotonic() - start < timeout:
            if vm not in vbox.vms(running=True):
                finished = True
                break
            if time.monotonic() - shown > PROGRESS_SECONDS:
                shown = time.monotonic()
                progress(f"  [{shown - start:6.0f}s] installing {host.name} (VirtualBox)")
            time.sleep(1)
    finally:
        if not finished:  # timeout, error or Ctrl-C: no half-installed VM is left
            if vm in vbox.vms(running=True):
                vbox.run("controlvm", vm, "poweroff")
            if vm in vbox.vms():
                vbox.run("unregistervm", vm, "--delete")
    if not finished:
        return False, f"the install did not finish within {timeout:.0f}s (see {hdir / 'console.log'})"
    for cmd in installed_commands(vm, host, net, vmnet, media.iso):
        vbox.run(*cmd)
    return True, (f"installed in {time.monotonic() - start:.0f}s onto {disk}; fab image_start {host.name} "
                  "boots it with its seed disk")
