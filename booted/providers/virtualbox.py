"""The VirtualBox provider: VMs through VBoxManage (booted/providers/vboxmanage.py).

The bootable golden disk (images/bootdisk.py, as VDI) is registered once, attached to a golden VM with a
`base` snapshot; each host is a linked clone of that snapshot (a differencing disk: nothing copied) with
its own MAC, its NIC on the lab's host-only network (providers/vbox_network.py), its serial console logged
to a file, and its identity on a seed disk (hosts/seed.py, converted with `VBoxManage convertfromraw`).
Hosts start headless, in parallel (providers/vbox_commands.py has the commands). Stop: ACPI power button,
then a hard power-off. Destroy: unregister and delete. State comes from `list runningvms`.

VirtualBox is not packaged for Debian 12, so this provider is tested against recorded VBoxManage output
(tests/data/vboxmanage/, tests/fake_vboxmanage.py); `vbox.sh` issues the same commands for one host."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import ClassVar

from booted.config import CHILD_ENV, Settings
from booted.errors import ProviderError, ToolMissing
from booted.hosts.identity import Identity
from booted.hosts.seed import write_seed
from booted.images.isoboot import LDLINUX, PXELINUX
from booted.providers import vbox_install
from booted.providers import vbox_snapshot as snap
from booted.providers.base import InstallMedia, Progress
from booted.providers.lab import Lab
from booted.providers.links import ipv4_addresses
from booted.providers.vbox_commands import CONTROLLER, host_commands
from booted.providers.vbox_network import ensure_hostonly, hostonly_name, remove_hostonly
from booted.providers.vboxmanage import VBoxError, VBoxManage
from booted.providers.vm import INITS, Launch, VmProvider, host_of_vm, vm_name
from booted.state.locks import hold

ACPI_SECONDS = 10.0
HEADLESS = "VBoxHeadless"


class VirtualBoxProvider(VmProvider):
    name = "virtualbox"
    tools: ClassVar[dict[str, str]] = {}  # VBoxManage is checked by check(): it is not a Debian package
    process = HEADLESS  # `VBoxHeadless --comment booted-<lab id>-<host> --startvm <uuid>`
    name_option = "--comment"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._vbox: VBoxManage | None = None
        self._major: int | None = None

    # VBoxManage ------------------------------------------------------------------------------------
    def vbox(self) -> VBoxManage:
        if self._vbox is None:
            binary = self.settings.which("VBoxManage")
            if binary is None:
                raise ToolMissing("the virtualbox provider needs VBoxManage, which is not on PATH: VirtualBox is "
                                  "not packaged for Debian 12; install it from virtualbox.org (or use provider "
                                  "qemu, whose \"boot\": \"disk\" boots the same disk)")
            self._vbox = VBoxManage(binary, {**CHILD_ENV, "LANG": "C", "LC_ALL": "C"})
        return self._vbox

    def check(self, lab: Lab | None = None) -> None:
        self.vbox()

    def major(self) -> int:
        """VirtualBox's major version (asked once per provider instance)."""
        if self._major is None:
            self._major = self.vbox().version()[0]
        return self._major

    def vmnet(self) -> bool:
        """Host-only *networks* (`hostonlynet`): VirtualBox 7 on macOS only; elsewhere host-only
        interfaces (`hostonlyif`, vboxnetN), on VirtualBox 7 as on 6.x."""
        return sys.platform == "darwin" and self.major() >= 7

    # observing and the network -----------------------------------------------------------------------
    def running(self, lab: Lab) -> dict[str, int]:
        """From `list runningvms`; the PID is the VM's VBoxHeadless process where it is visible (0 if not)."""
        pids = {name: pid for name, (pid, _) in self.processes(lab).items()}
        hosts = filter(None, (host_of_vm(lab, vm) for vm in self.vbox().vms(running=True)))
        return {host: pids.get(host, 0) for host in hosts}

    def listen_addresses(self, lab: Lab) -> list[str]:
        addresses = {a for on_link in ipv4_addresses().values() for a in on_link}
        return [lab.gateway] if lab.gateway in addresses else []

    def prepare_network(self, lab: Lab) -> None:
        """The lab's host-only network, the host side at the gateway address."""
        ensure_hostonly(self.vbox(), self.vmnet(), lab)

    def teardown(self, lab: Lab) -> None:
        if not self.running(lab):
            remove_hostonly(self.vbox(), self.vmnet(), lab)

    # the golden disk ---------------------------------------------------------------------------------
    def golden_vdi(self, progress: Progress, packages: tuple[str, ...]) -> Path:
        """The bootable golden disk as VDI (built once; images/bootdisk.py)."""
        return self.bootable_disk(self.golden_assets(packages, progress), INITS["busybox"], progress, "vdi")

    def golden_vm(self, progress: Progress, packages: tuple[str, ...]) -> str:
        """The registered VM of the current golden disk (VDI), with its `base` snapshot hosts are cloned from."""
        cache = self.settings.cache_dir
        vdi = self.golden_vdi(progress, packages)
        golden_vm = f"booted-base-{vdi.stem.removeprefix('bootdisk-')}"
        vbox = self.vbox()
        with hold(cache / "vbox-base.lock", "registering the VirtualBox base VM", 600, progress):
            if golden_vm in vbox.vms():
                return golden_vm
            progress(f"registering {vdi.name} in VirtualBox as {golden_vm}")
            vbox.run("createvm", "--name", golden_vm, "--ostype", "Debian_64", "--basefolder", str(cache / "vbox"),
                     "--register")
            vbox.run("storagectl", golden_vm, "--name", CONTROLLER, "--add", "sata", "--portcount", "2")
            vbox.run("storageattach", golden_vm, "--storagectl", CONTROLLER, "--port", "0", "--device", "0",
                     "--type", "hdd", "--medium", str(vdi))
            vbox.run("snapshot", golden_vm, "take", "base")
        return golden_vm

    # launching ---------------------------------------------------------------------------------------
    def launcher(self, lab: Lab, hosts: list[Identity], progress: Progress) -> tuple[Launch, dict[str, str]]:
        golden_vm = self.golden_vm(progress, lab.packages)
        vmnet = self.vmnet()
        net = hostonly_name(vmnet, lab)
        registered = self.vbox().vms()
        progress(f"starting {len(hosts)} VirtualBox VM(s) in parallel (headless)")
        return (lambda host: self._launch(lab, host, golden_vm, net, vmnet, vm_name(lab, host.name) in registered)), {}

    def _launch(self, lab: Lab, host: Identity, golden_vm: str, net: str, vmnet: bool, registered: bool
                ) -> tuple[int | None, str | None]:
        """The host's linked clone (made once), configured with a new seed disk, and started headless."""
        vbox, vm, hdir = self.vbox(), vm_name(lab, host.name), lab.host_dir(host.name)
        try:
            hdir.mkdir(parents=True, exist_ok=True)
            host.write_dir(hdir / "identity")
            seed = self.seed_disk(lab, host, registered)
            for cmd in host_commands(vm, golden_vm, host, net, vmnet, hdir, seed, not registered):
                vbox.run(*cmd)
            try:
                vbox.run("startvm", vm, "--type", "headless")
            except VBoxError:  # startvm can fail (exit 1) although the VM started: ask VirtualBox
                if vm not in vbox.vms(running=True):
                    raise
        except (VBoxError, OSError) as exc:
            return None, str(exc)
        running = self.running(lab)
        if host.name not in running:
            return None, "the VM stopped while booting (see its console.log)"
        return running[host.name], None

    def seed_disk(self, lab: Lab, host: Identity, registered: bool) -> Path:
        """The host's seed disk as a VDI (a new one per start: the identity has a new boot token)."""
        vbox, hdir = self.vbox(), lab.host_dir(host.name)
        raw, vdi = hdir / "seed.img", hdir / "seed.vdi"
        if registered:  # the previous boot's seed: detach and forget it
            vbox.run("storageattach", vm_name(lab, host.name), "--storagectl", CONTROLLER, "--port", "1",
                     "--device", "0", "--medium", "none")
        if vdi.exists():
            vbox.run("closemedium", "disk", str(vdi), "--delete")
        write_seed(hdir / "identity", raw, self.settings.path)
        vbox.run("convertfromraw", str(raw), str(vdi), "--format", "VDI")
        raw.unlink(missing_ok=True)
        return vdi

    # the rest of the contract ------------------------------------------------------------------------
    def stop(self, lab: Lab, names: list[str]) -> dict[str, str]:
        vbox, errors = self.vbox(), {}
        running = self.running(lab)
        for name in names:
            if name not in running:
                continue
            vm = vm_name(lab, name)
            try:
                vbox.run("controlvm", vm, "acpipowerbutton")
                deadline = time.monotonic() + ACPI_SECONDS
                while time.monotonic() < deadline and vm in vbox.vms(running=True):
                    time.sleep(0.5)
                if vm in vbox.vms(running=True):
                    vbox.run("controlvm", vm, "poweroff")
            except VBoxError as exc:
                errors[name] = str(exc)
        return errors

    def discard(self, lab: Lab, name: str) -> None:
        """An installed VM (its own disk from an installer) stays registered; clones go (one that snapshots
        live in is set aside: vbox_snapshot.py)."""
        if not (lab.host_dir(name) / "installed.vdi").exists():
            if name in self.running(lab):
                raise ProviderError(f"host {name} is running: stop it first (fab image_stop {name})")
            snap.set_aside(self.vbox(), lab, name)
            self._remove(lab, name)

    def destroy(self, lab: Lab, name: str) -> None:
        if name in self.running(lab):
            raise ProviderError(f"host {name} is running: stop it first (fab image_stop {name})")
        self._remove(lab, name)
        snap.forget_host(self.vbox(), lab, name)

    def _remove(self, lab: Lab, name: str) -> None:
        vm = vm_name(lab, name)
        if vm in self.vbox().vms():
            self.vbox().run("unregistervm", vm, "--delete")
        shutil.rmtree(lab.host_dir(name), ignore_errors=True)

    # snapshots (vbox_snapshot.py) --------------------------------------------------------------------
    snapshot_keeps = "VirtualBox's own snapshot of each host's VM (taken paused); a restore boots it"
    can_pause = True

    def pause(self, lab: Lab, names: list[str]) -> dict[str, str]:
        return snap.pause(self.vbox(), lab, names)

    def resume(self, lab: Lab, names: list[str]) -> dict[str, str]:
        return snap.pause(self.vbox(), lab, names, resume=True)

    def resume_command(self, lab: Lab, names: list[str]) -> list[str] | None:
        return snap.resume_command(self.vbox().binary, lab, names)

    def save(self, lab: Lab, name: str, folder: Path) -> list[str]:
        snap.save(self.vbox(), lab, name, folder)
        return []  # the VM's linked clone keeps its golden disk registered in VirtualBox

    def restore(self, lab: Lab, name: str, folder: Path) -> None:
        snap.restore(self.vbox(), lab, name, folder)

    def forget(self, lab: Lab, name: str, folder: Path) -> None:
        snap.forget(self.vbox(), lab, name, folder)

    def clone(self, lab: Lab, src: str, new: str) -> None:
        vbox = self.vbox()
        source, target = vm_name(lab, src), vm_name(lab, new)
        if target in vbox.vms():
            raise ProviderError(f"host {new} already has a VirtualBox VM ({target})")
        snap = f"clone-{new}"
        vbox.run("snapshot", source, "take", snap)
        vbox.run("clonevm", source, "--snapshot", snap, "--options", "link", "--name", target,
                 "--basefolder", str(lab.host_dir(new).parent), "--register")

    def check_install(self) -> None:
        self.vbox()
        if not PXELINUX.exists() or not LDLINUX.exists():
            raise ToolMissing(f"an install on VirtualBox PXE-boots the installer: {PXELINUX} and {LDLINUX} are "
                              "needed (apt-get install pxelinux syslinux-common, or run setup.sh)")

    def install(self, lab: Lab, host: Identity, media: InstallMedia, timeout: float, progress: Progress
                ) -> tuple[bool, str]:
        """PXE-boot the installer onto the host's own disk until it powers off (providers/vbox_install.py); the
        lab's host-only network is the handle's prepare_network."""
        self.check_install()
        vbox, vmnet = self.vbox(), self.vmnet()
        vm = vm_name(lab, host.name)
        if vm in vbox.vms(running=True):
            raise ProviderError(f"host {host.name} is running: stop it first (fab image_stop {host.name})")
        if vm in vbox.vms():  # an earlier install, or a clone: replaced
            vbox.run("unregistervm", vm, "--delete")
        return vbox_install.install(vbox, hostonly_name(vmnet, lab), vmnet, lab, host, media, timeout, progress)
