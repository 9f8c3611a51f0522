"""The VirtualBox provider: VMs through VBoxManage (booted/providers/vboxmanage.py).

The bootable golden disk (images/bootdisk.py, as VDI) is registered once, attached to a base VM with a
`base` snapshot; each host is a linked clone of that snapshot (a differencing disk: nothing copied) with
its own MAC, its NIC on the lab's host-only network (whose host address is the lab gateway, where booted's
nginx listens), its serial console logged to a file, and its identity on a seed disk (hosts/seed.py,
converted with `VBoxManage convertfromraw`). Hosts start headless, in parallel. Stop: ACPI power button,
then a hard power-off. Destroy: unregister and delete. State comes from `list runningvms`.

VirtualBox is not packaged for Debian 12, so this provider is tested against recorded VBoxManage output
(tests/data/vboxmanage/, tests/fake_vboxmanage.py); `vbox.sh` issues the same commands for one host."""

from __future__ import annotations

import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

from booted.config import CHILD_ENV, Settings
from booted.errors import ProviderError, ToolMissing
from booted.hosts.identity import Identity
from booted.hosts.seed import write_seed
from booted.images.bootdisk import ensure_bootdisk
from booted.images.golden import ensure_golden
from booted.images.isoboot import LDLINUX, PXELINUX, pxe_tree
from booted.images.vm_assets import ensure_assets
from booted.netcheck import ssh_banner
from booted.providers.base import InstallMedia, Lab, Progress, Provider, Started
from booted.providers.vboxmanage import VBoxError, VBoxManage
from booted.state.locks import hold

INIT = "init=/usr/lib/booted/init"
CONTROLLER = "SATA"
ACPI_SECONDS = 10.0
DVD = "IDE"
INSTALL_DISK_MB = 20480  # a RHEL 9 minimal install needs about 2 GB; the VDI grows as written
INSTALL_MEMORY_MB = 2048  # Anaconda needs about 1.5 GB
HEADLESS = "VBoxHeadless"


def vm_name(lab: Lab, host: str) -> str:
    return f"booted-{lab.lab_id}-{host}"


def net_name(lab: Lab) -> str:
    return f"booted-{lab.lab_id}"


def lab_nic(index: int, net: str, vmnet: bool) -> list[str]:
    """modifyvm arguments that put NIC `index` on the lab's host-only network (or macOS's host-only net)."""
    if vmnet:
        return [f"--nic{index}", "hostonlynet", f"--host-only-net{index}", net]
    return [f"--nic{index}", "hostonly", f"--hostonlyadapter{index}", net]


def host_commands(vm: str, base: str, host: Identity, net: str, vmnet: bool, hdir: Path, seed: Path,
                  fresh: bool) -> list[list[str]]:
    """The VBoxManage commands that make (`fresh`) and configure one host before `startvm` (vbox.sh issues
    the same ones)."""
    cmds = []
    if fresh:
        cmds.append(["clonevm", base, "--snapshot", "base", "--options", "link", "--name", vm,
                     "--basefolder", str(hdir.parent), "--register"])
    nic = lab_nic(1, net, vmnet)
    cmds.append(["modifyvm", vm, "--memory", str(host.memory), "--cpus", str(host.cpus), *nic,
                 "--macaddress1", host.mac.replace(":", "").upper(), "--uart1", "0x3F8", "4",
                 "--uartmode1", "file", str(hdir / "console.log"), "--boot1", "disk"])
    cmds.append(["storageattach", vm, "--storagectl", CONTROLLER, "--port", "1", "--device", "0", "--type", "hdd",
                 "--medium", str(seed)])
    return cmds


def install_commands(vm: str, host: Identity, net: str, vmnet: bool, hdir: Path, disk: Path, iso: Path | None,
                     tftp: Path, boot_file: str) -> list[list[str]]:
    """The VBoxManage commands that make a host's install VM: its own empty disk on the SATA port hosts boot
    from, the installer ISO as a DVD, NIC 1 on VirtualBox's NAT network whose built-in TFTP server PXE-boots
    the installer (pxelinux from `tftp`), NIC 2 (the host's MAC) on the lab's host-only network, where the
    kickstart and the gateway are; network boot first."""
    cmds = [["createvm", "--name", vm, "--ostype", "RedHat_64", "--basefolder", str(hdir.parent), "--register"],
            ["createmedium", "disk", "--filename", str(disk), "--size", str(INSTALL_DISK_MB), "--format", "VDI"],
            ["storagectl", vm, "--name", CONTROLLER, "--add", "sata", "--portcount", "2"],
            ["storageattach", vm, "--storagectl", CONTROLLER, "--port", "0", "--device", "0", "--type", "hdd",
             "--medium", str(disk)]]
    if iso is not None:
        cmds += [["storagectl", vm, "--name", DVD, "--add", "ide"],
                 ["storageattach", vm, "--storagectl", DVD, "--port", "0", "--device", "0", "--type", "dvddrive",
                  "--medium", str(iso)]]
    cmds.append(["modifyvm", vm, "--memory", str(max(host.memory, INSTALL_MEMORY_MB)), "--cpus", str(host.cpus),
                 "--nic1", "nat", "--nattftpprefix1", str(tftp), "--nattftpfile1", boot_file, *lab_nic(2, net, vmnet),
                 "--macaddress2", host.mac.replace(":", "").upper(), "--uart1", "0x3F8", "4", "--uartmode1", "file",
                 str(hdir / "console.log"), "--boot1", "net", "--boot2", "disk"])
    return cmds


class VirtualBoxProvider(Provider):
    name = "virtualbox"
    tools: ClassVar[dict[str, str]] = {}  # VBoxManage is checked by check(): it is not a Debian package

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

    # observing ---------------------------------------------------------------------------------------
    def host_of(self, lab: Lab, argv: list[str]) -> str | None:
        """`VBoxHeadless --comment booted-<lab id>-<host> --startvm <uuid>` (the VM's process)."""
        if not argv or not argv[0].endswith(HEADLESS) or "--comment" not in argv[:-1]:
            return None
        value, prefix = argv[argv.index("--comment") + 1], f"booted-{lab.lab_id}-"
        return value[len(prefix):] if value.startswith(prefix) else None

    def running(self, lab: Lab) -> dict[str, int]:
        """From `list runningvms`; the PID is the VM's VBoxHeadless process where it is visible (0 if not)."""
        prefix = f"booted-{lab.lab_id}-"
        pids = {name: pid for name, (pid, _) in self.processes(lab).items()}
        return {vm[len(prefix):]: pids.get(vm[len(prefix):], 0)
                for vm in self.vbox().vms(running=True) if vm.startswith(prefix)}

    def listen_addresses(self, lab: Lab) -> list[str]:
        from booted.discovery.nginx import local_addresses

        return [lab.gateway] if lab.gateway in local_addresses() else []

    # the network -------------------------------------------------------------------------------------
    def prepare_network(self, lab: Lab) -> None:
        """The lab's host-only network, the host side at the gateway address: a vboxnetN interface
        (`hostonlyif`, whose name is kept in the lab folder), or on macOS with VirtualBox 7 a host-only
        network whose lower address (the host's) is the gateway."""
        vbox, vmnet = self.vbox(), self.vmnet()
        mask = str(lab.network.netmask)
        hosts = list(lab.network.hosts())
        if vmnet:
            if any(n.get("Name") == net_name(lab) for n in vbox.hostonly(vmnet)):
                return
            vbox.run("hostonlynet", "add", "--name", net_name(lab), "--netmask", mask, "--lower-ip", lab.gateway,
                     "--upper-ip", str(hosts[-1]), "--enable")
            return
        marker = lab.dir / "vbox-hostonlyif"
        known = {n.get("Name"): n for n in vbox.hostonly(vmnet)}
        if marker.exists() and marker.read_text().strip() in known:
            return
        out = vbox.run("hostonlyif", "create")
        name = next((w.strip("'") for w in out.split() if w.strip("'").startswith("vboxnet")), "")
        if not name:
            raise VBoxError(f"hostonlyif create did not name the interface: {out.strip()[:200]}")
        try:
            vbox.run("hostonlyif", "ipconfig", name, "--ip", lab.gateway, "--netmask", mask)
        except VBoxError:
            vbox.run("hostonlyif", "remove", name)  # not left behind half made
            raise
        lab.dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(name + "\n")

    def network(self, lab: Lab, vmnet: bool) -> str:
        if vmnet:
            return net_name(lab)
        marker = lab.dir / "vbox-hostonlyif"
        if not marker.exists():
            raise ProviderError(f"lab {lab.env}: no host-only interface recorded in {marker}")
        return marker.read_text().strip()

    def teardown(self, lab: Lab) -> None:
        if self.running(lab):
            return
        vbox, vmnet = self.vbox(), self.vmnet()
        if vmnet:
            if any(n.get("Name") == net_name(lab) for n in vbox.hostonly(vmnet)):
                vbox.run("hostonlynet", "remove", "--name", net_name(lab))
            return
        marker = lab.dir / "vbox-hostonlyif"
        if marker.exists():
            vbox.run("hostonlyif", "remove", marker.read_text().strip())
            marker.unlink()

    # the golden disk -----------------------------------------------------------------------------------
    def golden_vdi(self, progress: Progress, packages: tuple[str, ...]) -> Path:
        """The bootable golden disk as VDI (built once; images/bootdisk.py)."""
        golden = ensure_golden(self.settings, progress, packages)
        cache = self.settings.cache_dir
        assets = ensure_assets(cache, golden, progress, self.settings.path)
        return ensure_bootdisk(cache, assets, INIT, progress, self.settings.path, "vdi")

    def answers(self, host: Identity) -> bool:
        """Whether the host's sshd greets at its lab IP."""
        return ssh_banner(host.ip, 1.0)

    def base_vm(self, progress: Progress, packages: tuple[str, ...]) -> str:
        """The registered base VM of the current golden disk (VDI), with its `base` snapshot."""
        cache = self.settings.cache_dir
        vdi = self.golden_vdi(progress, packages)
        base = f"booted-base-{vdi.stem.removeprefix('bootdisk-')}"
        vbox = self.vbox()
        with hold(cache / "vbox-base.lock", "registering the VirtualBox base VM", 600, progress):
            if base in vbox.vms():
                return base
            progress(f"registering {vdi.name} in VirtualBox as {base}")
            vbox.run("createvm", "--name", base, "--ostype", "Debian_64", "--basefolder", str(cache / "vbox"),
                     "--register")
            vbox.run("storagectl", base, "--name", CONTROLLER, "--add", "sata", "--portcount", "2")
            vbox.run("storageattach", base, "--storagectl", CONTROLLER, "--port", "0", "--device", "0", "--type",
                     "hdd", "--medium", str(vdi))
            vbox.run("snapshot", base, "take", "base")
        return base

    # lifecycle ---------------------------------------------------------------------------------------
    def start(self, lab: Lab, hosts: list[Identity], progress: Progress) -> tuple[list[Started], dict[str, str]]:
        base = self.base_vm(progress, lab.packages)
        self.prepare_network(lab)
        vmnet = self.vmnet()
        net = self.network(lab, vmnet)
        vbox = self.vbox()
        registered, running = vbox.vms(), self.running(lab)
        todo = [h for h in hosts if h.name not in running]
        errors: dict[str, str] = {}

        def one(host: Identity) -> tuple[str, int | None, str | None]:
            vm, hdir = vm_name(lab, host.name), lab.host_dir(host.name)
            try:
                hdir.mkdir(parents=True, exist_ok=True)
                host.write_dir(hdir / "identity")
                seed = self.seed(lab, host, vm in registered)
                for cmd in host_commands(vm, base, host, net, vmnet, hdir, seed, vm not in registered):
                    vbox.run(*cmd)
                try:
                    vbox.run("startvm", vm, "--type", "headless")
                except VBoxError:  # startvm can fail (exit 1) although the VM started: ask VirtualBox
                    if vm not in vbox.vms(running=True):
                        raise
            except (VBoxError, OSError) as exc:
                return host.name, None, str(exc)
            return (host.name, *self._wait(lab, host))

        if todo:
            progress(f"starting {len(todo)} VirtualBox VM(s) in parallel (headless)")
        started: list[Started] = []
        with ThreadPoolExecutor(max_workers=max(1, min(self.settings.boot_parallel, len(todo)))) as pool:
            for name, pid, error in pool.map(one, todo):
                if error is None and pid is not None:
                    started.append(Started(name, pid))
                else:
                    errors[name] = error or "did not start"
        return started, errors

    def seed(self, lab: Lab, host: Identity, registered: bool) -> Path:
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

    def _wait(self, lab: Lab, host: Identity) -> tuple[int | None, str | None]:
        deadline = time.monotonic() + self.settings.boot_timeout
        running = self.running(lab)
        while time.monotonic() < deadline:
            if host.name not in running:
                return None, "the VM stopped while booting (see its console.log)"
            if self.answers(host):
                return running[host.name], None
            time.sleep(0.5)
            running = self.running(lab)
        return running.get(host.name, 0), f"no SSH banner within {self.settings.boot_timeout}s (still running)"

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
        """An installed VM (its own disk from an installer) stays registered; clones go."""
        if not (lab.host_dir(name) / "installed.vdi").exists():
            self.destroy(lab, name)

    def destroy(self, lab: Lab, name: str) -> None:
        if name in self.running(lab):
            raise ProviderError(f"host {name} is running: stop it first (fab image_stop {name})")
        vm = vm_name(lab, name)
        if vm in self.vbox().vms():
            self.vbox().run("unregistervm", vm, "--delete")
        shutil.rmtree(lab.host_dir(name), ignore_errors=True)

    def clone(self, lab: Lab, src: str, new: str) -> None:
        vbox = self.vbox()
        source, target = vm_name(lab, src), vm_name(lab, new)
        if target in vbox.vms():
            raise ProviderError(f"host {new} already has a VirtualBox VM ({target})")
        snap = f"clone-{new}"
        vbox.run("snapshot", source, "take", snap)
        vbox.run("clonevm", source, "--snapshot", snap, "--options", "link", "--name", target,
                 "--basefolder", str(lab.host_dir(new).parent), "--register")

    # installers ---------------------------------------------------------------------------------------
    def check_install(self) -> None:
        self.vbox()
        if not PXELINUX.exists() or not LDLINUX.exists():
            raise ToolMissing(f"an install on VirtualBox PXE-boots the installer: {PXELINUX} and {LDLINUX} are "
                              "needed (apt-get install pxelinux syslinux-common, or run setup.sh)")

    def install(self, lab: Lab, host: Identity, media: InstallMedia, timeout: float, progress: Progress
                ) -> tuple[bool, str]:
        """VirtualBox cannot boot a kernel directly: the install VM PXE-boots the installer's kernel and
        initrd with booted's command line over its NAT network's TFTP server, the ISO as its DVD, onto its
        own disk. Done when the installer powers it off (kickstart `poweroff`); the VM then becomes the host's
        (NIC 1 on the lab network with the host's MAC, DVD out, boot from disk), and `image_start` boots it
        with its seed disk. A timeout, an error or Ctrl-C removes the half-installed VM."""
        self.check_install()
        vbox, vmnet = self.vbox(), self.vmnet()
        vm, hdir = vm_name(lab, host.name), lab.host_dir(host.name)
        if vm in vbox.vms(running=True):
            raise ProviderError(f"host {host.name} is running: stop it first (fab image_stop {host.name})")
        if vm in vbox.vms():  # an earlier install, or a clone: replaced
            vbox.run("unregistervm", vm, "--delete")
        self.prepare_network(lab)
        net = self.network(lab, vmnet)
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
                if time.monotonic() - shown > 30:
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
        nic = lab_nic(1, net, vmnet)
        if media.iso is not None:
            vbox.run("storageattach", vm, "--storagectl", DVD, "--port", "0", "--device", "0", "--medium", "none")
        vbox.run("modifyvm", vm, *nic, "--macaddress1", host.mac.replace(":", "").upper(), "--nic2", "none",
                 "--boot1", "disk", "--boot2", "none")
        return True, (f"installed in {time.monotonic() - start:.0f}s onto {disk}; fab image_start {host.name} "
                      "boots it with its seed disk")

