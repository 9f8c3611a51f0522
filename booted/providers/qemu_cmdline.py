"""The QEMU command lines of the qemu provider: a lab host's VM, and an installer's VM.

A host boots Debian's cloud kernel directly (qboot, no firmware menus) with booted's initramfs and its
identity as fw_cfg files (Boot.KERNEL), or its own disk's boot loader under SeaBIOS with the identity on a
seed disk (Boot.DISK, Boot.INSTALLED). Every path inside an option value has its commas doubled (opt)."""

from __future__ import annotations

from pathlib import Path

from booted.hosts.identity import Identity
from booted.images.vm_assets import Assets
from booted.providers.lab import Lab
from booted.providers.qemu_options import Boot, boot_of
from booted.providers.qemuctl import QBOOT, QEMU, opt
from booted.providers.vm import INITS, vm_name

# no tsc=reliable: under TCG on a busy machine the guest can calibrate its TSC wrong (its vCPU not running
# while it counts), and its clock then runs several times too fast; the clocksource watchdog (hpet) notices
# and switches to hpet. nowatchdog is the lockup detector, not that one.
KERNEL_ARGS = ("console=ttyS0 quiet panic=1 mitigations=off cryptomgr.notests i8042.noaux i8042.nokbd "
               "i8042.nopnp no_timer_check 8250.nr_uarts=1 nowatchdog net.ifnames=0 root=/dev/vda")
QMP_SOCKET = "qmp.sock"  # relative to the host's folder, QEMU's working directory: AF_UNIX paths end at 107 bytes
IDENTITY_FILES = ("identity", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "authorized_keys")


def tap_name(lab: Lab, ip: str) -> str:
    """A host's tap on the lab bridge."""
    return lab.link("q", ip)


def disk_name(lab: Lab) -> str:
    """The host's disk: its overlay on the golden image, or (Boot.INSTALLED) its installed disk."""
    return "installed.qcow2" if boot_of(lab) is Boot.INSTALLED else "disk.qcow2"


def tap_netdev(lab: Lab, host: Identity) -> str:
    return f"tap,id=n0,ifname={tap_name(lab, host.ip)},script=no,downscript=no"


def extra_nics(lab: Lab, host: Identity) -> list[str]:
    """A tap and a virtio NIC per network after the first (eth1, eth2...: the guest's boot script configures
    them from BOOTED_NICS)."""
    out: list[str] = []
    for k, nic in enumerate(host.extra, 1):
        out += ["-netdev", f"tap,id=n{k},ifname={tap_name(lab, nic.ip)},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n{k},mac={nic.mac}"]
    return out


def console_options(console: Path) -> list[str]:
    # `-serial file:` truncates on every start; append keeps the separator line written before
    return ["-chardev", f"file,id=console,path={opt(console)},append=on", "-serial", "chardev:console"]


# q35, not pc: pc's ACPI table builds the PCI interrupt routing (_PRT) in an AML loop of 128 rounds, which the
# kernel runs again for each PCI device it enables: ~0.1 s of emulated CPU per virtio device under TCG (0.3 s
# of a boot); q35's is a constant table (its virtio probes: ~0.02 s for all three).
MACHINE = "q35"


def host_command(lab: Lab, host: Identity, assets: Assets, accel: str, netdev: str) -> list[str]:
    """The QEMU command line of one host, its network `netdev` (a tap, or user-mode networking)."""
    hdir = lab.host_dir(host.name)
    if boot_of(lab) is Boot.KERNEL:
        boot = ["-bios", QBOOT, "-kernel", str(assets.kernel.vmlinuz), "-initrd", str(assets.initramfs),
                "-append", f"{KERNEL_ARGS} {INITS[lab.init]}"]
        for f in IDENTITY_FILES + (("serve.sh",) if host.serve else ()):
            boot += ["-fw_cfg", f"name=opt/booted/{f},file={opt(hdir / 'identity' / f)}"]
    else:  # SeaBIOS boots the disk's boot loader; the identity is on the seed disk
        boot = ["-drive", f"file={opt(hdir / 'seed.img')},if=virtio,format=raw,readonly=on"]
    return [QEMU, "-name", vm_name(lab, host.name), "-M", MACHINE, "-accel", accel,
            *(["-cpu", "host"] if accel == "kvm" else []), "-m", str(host.memory), "-smp", str(host.cpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-drive", f"file={opt(hdir / disk_name(lab))},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
            *boot,
            "-device", "virtio-rng-pci",
            "-netdev", netdev,
            "-device", f"virtio-net-pci,netdev=n0,mac={host.mac}",
            *(extra_nics(lab, host) if netdev.startswith("tap,") else []),
            *console_options(hdir / "console.log"),
            "-qmp", f"unix:{QMP_SOCKET},server=on,wait=off",  # in QEMU's folder (its cwd): a path's length
            "-pidfile", str(hdir / "qemu.pid")]


def installer_command(lab: Lab, host: Identity, accel: str, kernel: Path, initrd: Path, append: str, disk: Path,
                      iso: Path | None) -> list[str]:
    """An installer's VM: its kernel, initrd and command line, onto `disk`, its ISO as a CD, on the host's tap."""
    hdir = lab.host_dir(host.name)
    return [QEMU, "-name", vm_name(lab, host.name), "-M", "pc", "-accel", accel, "-m", "1024", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
            "-drive", f"file={opt(disk)},if=virtio,format=qcow2,cache=unsafe",
            *(["-drive", f"file={opt(iso)},media=cdrom,readonly=on"] if iso else []),
            "-netdev", tap_netdev(lab, host),
            "-device", f"virtio-net-pci,netdev=n0,mac={host.mac}",
            *console_options(hdir / "console.log"),
            "-pidfile", str(hdir / "qemu.pid")]
