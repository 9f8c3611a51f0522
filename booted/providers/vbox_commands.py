"""The VBoxManage commands that make a VirtualBox host (vbox.sh issues the same ones for one host) and a
host's install VM: pure lists of arguments, tested against what they must be."""

from __future__ import annotations

from pathlib import Path

from booted.hosts.identity import Identity

CONTROLLER = "SATA"
DVD = "IDE"
INSTALL_DISK_MB = 20480  # a RHEL 9 minimal install needs about 2 GB; the VDI grows as written
INSTALL_MEMORY_MB = 2048  # Anaconda needs about 1.5 GB


def vbox_mac(mac: str) -> str:
    """A MAC as VirtualBox takes it: 12 hex digits, upper case."""
    return mac.replace(":", "").upper()


def lab_nic(index: int, net: str, vmnet: bool) -> list[str]:
    """modifyvm arguments that put NIC `index` on the lab's host-only network (or macOS's host-only net)."""
    if vmnet:
        return [f"--nic{index}", "hostonlynet", f"--host-only-net{index}", net]
    return [f"--nic{index}", "hostonly", f"--hostonlyadapter{index}", net]


def host_commands(vm: str, golden_vm: str, host: Identity, net: str, vmnet: bool, hdir: Path, seed: Path,
                  fresh: bool) -> list[list[str]]:
    """The VBoxManage commands that make (`fresh`: a linked clone of `golden_vm`'s `base` snapshot) and
    configure one host before `startvm`."""
    cmds = []
    if fresh:
        cmds.append(["clonevm", golden_vm, "--snapshot", "base", "--options", "link", "--name", vm,
                     "--basefolder", str(hdir.parent), "--register"])
    cmds.append(["modifyvm", vm, "--memory", str(host.memory), "--cpus", str(host.cpus), *lab_nic(1, net, vmnet),
                 "--macaddress1", vbox_mac(host.mac), "--uart1", "0x3F8", "4",
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
                 "--macaddress2", vbox_mac(host.mac), "--uart1", "0x3F8", "4", "--uartmode1", "file",
                 str(hdir / "console.log"), "--boot1", "net", "--boot2", "disk"])
    return cmds


def installed_commands(vm: str, host: Identity, net: str, vmnet: bool, iso: Path | None) -> list[list[str]]:
    """After its installer powered it off, the install VM becomes the host's: DVD out, NIC 1 on the lab
    network with the host's MAC, NIC 2 gone, boot from disk."""
    cmds = [["storageattach", vm, "--storagectl", DVD, "--port", "0", "--device", "0", "--medium", "none"]] \
        if iso is not None else []
    cmds.append(["modifyvm", vm, *lab_nic(1, net, vmnet), "--macaddress1", vbox_mac(host.mac), "--nic2", "none",
                 "--boot1", "disk", "--boot2", "none"])
    return cmds
