"""The VirtualBox provider against a fake VBoxManage that replays VirtualBox's recorded output
(tests/fake_vboxmanage.py, tests/data/vboxmanage/): VirtualBox is not packaged for Debian 12, so nothing
here runs a real VM. One process boundary is faked and only that: VBoxManage itself; the golden disk is a
placeholder file (its real build and boot are tested under QEMU in tests/integration/test_qemu_lab.py).
What is checked: the command sequence of the golden VM, network, start (parallel launches that do not wait
for the boot: discovery does), stop, clone and destroy; parsing of VirtualBox's formats; lock races retried;
VirtualBox 6.x host-only interfaces; a clear message without VBoxManage; vbox.sh issues the same commands."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from booted.config import Settings
from booted.errors import ConfigError, ToolMissing
from booted.hosts.identity import Identity
from booted.images.isoboot import LAYOUTS, PXELINUX, boot_files
from booted.providers.base import InstallMedia, Progress
from booted.providers.lab import Lab
from booted.providers.vbox_commands import host_commands
from booted.providers.vbox_network import hostonly_name
from booted.providers.vboxmanage import VBoxError, blocks, machine_readable
from booted.providers.virtualbox import VirtualBoxProvider
from booted.providers.vm import vm_name
from tests.conftest import REPO

FAKE = Path(__file__).resolve().parent / "fake_vboxmanage.py"
DATA = Path(__file__).resolve().parent / "data" / "vboxmanage"


class Fake:
    """A `VBoxManage` on PATH that is tests/fake_vboxmanage.py with its own state file."""

    def __init__(self, tmp: Path, version: str = "7.0.20r163906") -> None:
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.state = tmp / "vbox-state.json"
        self.state.write_text(json.dumps({"version": version, "networks_conf": True}))
        exe = self.bin / "VBoxManage"
        exe.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} {self.state} \"$@\"\n")
        exe.chmod(0o755)

    def calls(self) -> list[list[str]]:
        log = self.state.with_suffix(".log")
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def world(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.state.read_text())  # type: ignore[no-any-return]

    def set(self, **values: object) -> None:
        self.state.write_text(json.dumps({**self.world(), **values}))


class Provider(VirtualBoxProvider):
    """The real provider; only the golden disk (a placeholder VDI) is a stand-in."""

    def __init__(self, settings: Settings, vdi: Path) -> None:
        super().__init__(settings)
        self.vdi = vdi

    def golden_vdi(self, progress: Progress, packages: tuple[str, ...]) -> Path:
        return self.vdi


def identity(tmp: Path, name: str, ip: str) -> Identity:
    key = tmp / f"{name}_key"
    key.write_text("PRIVATE\n")
    Path(f"{key}.pub").write_text("ssh-ed25519 AAAA test\n")
    return Identity(name=name, ip=ip, prefix=24, gateway="10.213.90.1", mac=f"52:54:0a:d5:5a:{ip.split('.')[-1]:0>2}",
                    boot_url="http://10.213.90.1:8470/booted", login_user="root", pw_hash=None, host_key=key,
                    authorized_key="ssh-ed25519 AAAA lab", boot_token="0" * 32)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Fake, Provider, Lab]:
    fake = Fake(tmp_path)
    settings = Settings.from_env({"BOOTED_STATE_DIR": str(tmp_path / "state"), "PATH": f"{fake.bin}:/usr/bin:/bin",
                                  "BOOTED_CACHE_DIR": str(tmp_path / "cache")}, REPO)
    (tmp_path / "cache").mkdir()
    vdi = tmp_path / "cache" / "bootdisk-0123456789ab.vdi"
    vdi.write_bytes(b"placeholder for the bootable golden disk\n")
    lab = Lab("vb", settings.lab_id("vb"), ipaddress.IPv4Network("10.213.90.0/24"), tmp_path / "state" / "labs" / "vb")
    return fake, Provider(settings, vdi), lab


def test_formats_recorded_from_virtualbox_parse() -> None:
    real = machine_readable((DATA / "showvminfo-poweroff-7.0.txt").read_text())  # a real VirtualBox 7.0 dump
    assert real["VMState"] == "poweroff" and real["macaddress1"] == "08002744D7F6"
    assert real["description"] == "name1=value1\nname2=value2" and real["GuestMemoryBalloon"] == "0"
    assert "Encryption:     disabled" not in str(real) and real["BIOS NVRAM File"].endswith(".nvram")
    info = machine_readable((DATA / "showvminfo.txt").read_text().replace("{state}", "running"))
    assert info["VMState"] == "running" and info["memory"] == "256"
    ifs = blocks((DATA / "list-hostonlyifs.txt").read_text().replace("{name}", "vboxnet0").replace("{ip}", "10.0.0.1"))
    assert ifs[0]["Name"] == "vboxnet0" and ifs[0]["IPAddress"] == "10.0.0.1"
    nets = blocks((DATA / "list-hostonlynets.txt").read_text().replace("{name}", "n1"))
    assert nets[0]["Name"] == "n1"


def test_start_stop_clone_destroy_in_virtualbox_terms(setup: tuple[Fake, Provider, Lab], tmp_path: Path) -> None:
    fake, provider, lab = setup
    hosts = [identity(tmp_path, "web01", "10.213.90.3"), identity(tmp_path, "web02", "10.213.90.4")]
    provider.prepare_network(lab)  # the lab handle's call, before every start
    started, errors = provider.start(lab, hosts, lambda line: None)
    assert errors == {} and sorted(s.name for s in started) == ["web01", "web02"]
    calls = fake.calls()
    golden = "booted-base-0123456789ab"
    # the golden disk registered once, under a golden VM with a `base` snapshot
    assert [c for c in calls if c[0] in ("createvm", "storagectl", "snapshot")] == [
        ["createvm", "--name", golden, "--ostype", "Debian_64", "--basefolder",
         str(provider.settings.cache_dir / "vbox"), "--register"],
        ["storagectl", golden, "--name", "SATA", "--add", "sata", "--portcount", "2"],
        ["snapshot", golden, "take", "base"]]
    # the lab's host-only interface with the gateway address, then a linked clone per host with its MAC
    assert ["hostonlyif", "create"] in calls
    assert ["hostonlyif", "ipconfig", "vboxnet0", "--ip", "10.213.90.1", "--netmask", "255.255.255.0"] in calls
    vm = vm_name(lab, "web01")
    assert ["clonevm", golden, "--snapshot", "base", "--options", "link", "--name", vm, "--basefolder",
            str(lab.dir / "hosts"), "--register"] in calls
    modify = next(c for c in calls if c[:2] == ["modifyvm", vm])
    assert "--macaddress1" in modify and modify[modify.index("--macaddress1") + 1] == "52540AD55A03"
    assert modify[modify.index("--hostonlyadapter1") + 1] == "vboxnet0"
    assert ["startvm", vm, "--type", "headless"] in calls
    seed = lab.host_dir("web01") / "seed.vdi"
    assert seed.exists() and ["storageattach", vm, "--storagectl", "SATA", "--port", "1", "--device", "0", "--type",
                              "hdd", "--medium", str(seed)] in calls
    assert sorted(provider.running(lab)) == ["web01", "web02"]  # from `list runningvms`

    # a second start of a running host does nothing (it is listed as started, as every VM provider lists the
    # hosts asked for that run); a stopped one is started again with a fresh seed
    assert provider.stop(lab, ["web02"]) == {}
    assert ["controlvm", vm_name(lab, "web02"), "acpipowerbutton"] in fake.calls()
    assert sorted(provider.running(lab)) == ["web01"]
    before = len(fake.calls())
    started, errors = provider.start(lab, hosts, lambda line: None)
    again = fake.calls()[before:]
    assert sorted(s.name for s in started) == ["web01", "web02"] and not any(c[0] == "clonevm" for c in again)
    assert [c[1] for c in again if c[0] == "startvm"] == [vm_name(lab, "web02")]
    assert ["closemedium", "disk", str(lab.host_dir("web02") / "seed.vdi"), "--delete"] in again

    # clone a stopped host from its current disk; destroy unregisters and deletes
    provider.stop(lab, ["web01", "web02"])
    provider.clone(lab, "web01", "web03")
    assert ["snapshot", vm, "take", "clone-web03"] in fake.calls()
    provider.destroy(lab, "web02")
    assert ["unregistervm", vm_name(lab, "web02"), "--delete"] in fake.calls()
    assert vm_name(lab, "web02") not in fake.world()["vms"]
    provider.teardown(lab)
    assert fake.world()["nets"] == {}


def test_lock_races_are_retried_and_other_errors_shown(setup: tuple[Fake, Provider, Lab], tmp_path: Path) -> None:
    fake, provider, lab = setup
    fake.set(locked={"startvm": 2})  # VirtualBox's "already locked for a session" twice, then it works
    provider.prepare_network(lab)
    started, errors = provider.start(lab, [identity(tmp_path, "web01", "10.213.90.3")], lambda line: None)
    assert errors == {} and [s.name for s in started] == ["web01"]
    assert sum(1 for c in fake.calls() if c[0] == "startvm") == 3
    with pytest.raises(VBoxError, match="Could not find a registered machine named 'nope'"):
        provider.vbox().run("showvminfo", "nope", "--machinereadable")


def test_start_launches_and_a_vm_that_stops_is_its_own_row(setup: tuple[Fake, Provider, Lab], tmp_path: Path
                                                            ) -> None:
    """start returns once VirtualBox runs the VMs (their boot is discovery's to wait for): a VM that powers
    off right after startvm is its host's error, the other starts; why_not_booted says which is which."""
    fake, provider, lab = setup
    provider.prepare_network(lab)
    fake.set(crash=[vm_name(lab, "web02")])
    said: list[str] = []
    hosts = [identity(tmp_path, "web01", "10.213.90.3"), identity(tmp_path, "web02", "10.213.90.4")]
    started, errors = provider.start(lab, hosts, said.append)
    assert [s.name for s in started] == ["web01"]
    assert errors == {"web02": "the VM stopped while booting (see its console.log)"}
    assert said[-3] == "starting 2 VirtualBox VM(s) in parallel (headless)"
    assert sorted(line.split("] ", 1)[1].rsplit(" (", 1)[0] for line in said[-2:]) == [
        "web01: launched", "web02: the VM stopped while booting (see its console.log)"]
    assert provider.why_not_booted(lab, "web01") == ""
    assert provider.why_not_booted(lab, "web02") == "the VM stopped while booting (see its console.log)"


def test_virtualbox_6_and_a_refused_lab_network(tmp_path: Path) -> None:
    fake = Fake(tmp_path, "6.1.50r161033")
    settings = Settings.from_env({"BOOTED_STATE_DIR": str(tmp_path / "state"), "PATH": f"{fake.bin}:/usr/bin:/bin",
                                  "BOOTED_CACHE_DIR": str(tmp_path / "cache")}, REPO)
    (tmp_path / "cache").mkdir()
    vdi = tmp_path / "cache" / "bootdisk-0123456789ab.vdi"
    vdi.write_bytes(b"x")
    lab = Lab("vb", settings.lab_id("vb"), ipaddress.IPv4Network("10.213.91.0/24"), tmp_path / "state" / "labs" / "vb")
    provider = Provider(settings, vdi)
    fake.set(networks_conf=False)  # VirtualBox 6.1.28+ without /etc/vbox/networks.conf: 192.168.56.0/21 only
    with pytest.raises(VBoxError, match=r"Access denied .*/etc/vbox/networks.conf"):
        provider.prepare_network(lab)
    fake.set(networks_conf=True)
    provider.prepare_network(lab)
    _, errors = provider.start(lab, [identity(tmp_path, "web01", "10.213.91.3")], lambda line: None)
    assert errors == {}
    calls = fake.calls()
    assert ["hostonlyif", "remove", "vboxnet0"] in calls  # the refused interface was not left behind
    assert ["hostonlyif", "ipconfig", "vboxnet0", "--ip", "10.213.91.1", "--netmask", "255.255.255.0"] in calls
    modify = next(c for c in calls if c[0] == "modifyvm")
    assert modify[modify.index("--hostonlyadapter1") + 1] == "vboxnet0"


def test_without_vboxmanage_the_message_says_what_to_do(tmp_path: Path) -> None:
    settings = Settings.from_env({"BOOTED_STATE_DIR": str(tmp_path / "state"), "PATH": str(tmp_path)}, REPO)
    with pytest.raises(ToolMissing, match="VirtualBox is not packaged for Debian 12"):
        VirtualBoxProvider(settings).check()


def test_vbox_sh_issues_the_provider_commands(setup: tuple[Fake, Provider, Lab], tmp_path: Path) -> None:
    fake, provider, lab = setup
    host = identity(tmp_path, "web01", "10.213.90.3")
    hdir = lab.host_dir("web01")
    seed = tmp_path / "seed.vdi"
    seed.write_bytes(b"seed")
    golden = provider.golden_vm(lambda line: None, ())
    provider.prepare_network(lab)
    net = hostonly_name(False, lab)
    expected = [*host_commands("vm-by-hand", golden, host, net, False, hdir, seed, fresh=True),
                ["startvm", "vm-by-hand", "--type", "headless"]]
    before = len(fake.calls())
    env = {"PATH": f"{fake.bin}:/usr/bin:/bin"}
    subprocess.run(["sh", str(REPO / "vbox.sh"), "vm-by-hand", golden, host.mac, net, str(hdir), str(seed),
                    str(host.memory), str(host.cpus)], env=env, check=True, capture_output=True, text=True)
    assert [c for c in fake.calls()[before:] if c[0] != "--version"] == expected
    printed = subprocess.run(["sh", str(REPO / "vbox.sh"), "-n", "vm2", golden, host.mac, net, str(hdir), str(seed)],
                             env=env, check=True, capture_output=True, text=True).stdout
    assert printed.splitlines()[0].startswith("VBoxManage clonevm " + golden)


def make_iso(tmp: Path, layout: tuple[str, str]) -> Path:
    """A small ISO 9660 image (xorriso) with an installer's kernel and initrd where `layout` says."""
    tree = tmp / "iso-tree"
    for name, content in zip(layout, (b"KERNEL from the ISO\n", b"INITRD from the ISO\n")):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(content)
    iso = tmp / "installer.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "FAKE9", "-o", str(iso), str(tree)],
                   check=True, capture_output=True)
    return iso


needs_iso_tools = pytest.mark.skipif(not Path("/usr/bin/xorriso").exists() or not PXELINUX.exists(),
                                     reason="needs xorriso and pxelinux (setup.sh installs them)")


@needs_iso_tools
def test_a_kickstart_install_pxe_boots_the_isos_installer_over_virtualbox_nat_tftp(
        setup: tuple[Fake, Provider, Lab], tmp_path: Path) -> None:
    """The ISO's kernel and initrd are really taken out (xorriso) and really put in a pxelinux TFTP tree;
    VirtualBox (faked) PXE-boots from it, "installs" for two looks at runningvms and powers off."""
    fake, provider, lab = setup
    iso = make_iso(tmp_path, LAYOUTS["kickstart"])
    kernel, initrd = boot_files(iso, "kickstart", tmp_path / "x", "/usr/bin:/bin")
    assert kernel.read_bytes() == b"KERNEL from the ISO\n" and initrd.name == "initrd.img"
    host = identity(tmp_path, "web01", "10.213.90.2")
    append = "inst.ks=http://10.213.90.1:8470/kickstart/web01.ks inst.repo=cdrom ifname=lab:52:54:0a:d5:5a:02"
    provider.prepare_network(lab)  # the lab handle's call, before every install
    ok, detail = provider.install(lab, host, InstallMedia(kernel, initrd, append, iso), 60, lambda line: None)
    assert ok, detail
    vm, hdir = vm_name(lab, "web01"), lab.host_dir("web01")
    calls = fake.calls()
    tftp, disk = hdir / "tftp", hdir / "installed.vdi"
    assert ["createmedium", "disk", "--filename", str(disk), "--size", "20480", "--format", "VDI"] in calls
    assert ["storageattach", vm, "--storagectl", "IDE", "--port", "0", "--device", "0", "--type", "dvddrive",
            "--medium", str(iso)] in calls
    modify = next(c for c in calls if c[:2] == ["modifyvm", vm])
    assert modify[modify.index("--nic1") + 1:modify.index("--nic1") + 6] == [
        "nat", "--nattftpprefix1", str(tftp), "--nattftpfile1", "pxelinux.0"]
    assert modify[modify.index("--hostonlyadapter2") + 1] == "vboxnet0" and "52540AD55A02" in modify
    assert modify[modify.index("--boot1") + 1] == "net"
    config = (tftp / "pxelinux.cfg" / "default").read_text()
    assert "KERNEL vmlinuz" in config and "INITRD initrd.img" in config and f"APPEND {append}\n" in config
    assert (tftp / "pxelinux.0").read_bytes() == PXELINUX.read_bytes() and (tftp / "ldlinux.c32").exists()
    # after the installer powered off: DVD out, NIC 1 on the lab network with the host's MAC, boot from disk
    world = fake.world()["vms"][vm]
    assert world["installed"] and "IDE:0" not in world["disks"] and world["disks"]["0"] == str(disk)
    assert (world["nic1"], world["net"], world["mac"], world["nic2"], world["boot1"]) == (
        "hostonly", "vboxnet0", "52540AD55A02", "none", "disk")
    # the installed VM is the host's: a start attaches its seed disk and boots it, no clone
    before = len(fake.calls())
    started, errors = provider.start(lab, [host], lambda line: None)
    assert errors == {} and [s.name for s in started] == ["web01"]
    assert not any(c[0] == "clonevm" and vm in c for c in fake.calls()[before:])
    assert provider.stop(lab, ["web01"]) == {}
    provider.discard(lab, "web01")  # env_stop keeps an installed VM (image_del removes it)
    assert vm in fake.world()["vms"] and disk.exists()
    provider.destroy(lab, "web01")
    assert vm not in fake.world()["vms"] and not disk.exists()


@needs_iso_tools
def test_an_install_that_does_not_finish_leaves_no_vm(setup: tuple[Fake, Provider, Lab], tmp_path: Path) -> None:
    fake, provider, lab = setup
    iso = make_iso(tmp_path, LAYOUTS["kickstart"])
    kernel, initrd = boot_files(iso, "kickstart", tmp_path / "x", "/usr/bin:/bin")
    fake.set(install_polls=10 ** 6)
    provider.prepare_network(lab)
    ok, detail = provider.install(lab, identity(tmp_path, "web01", "10.213.90.2"),
                                  InstallMedia(kernel, initrd, "inst.ks=x", iso), 2, lambda line: None)
    assert not ok and "did not finish within 2s" in detail
    vm = vm_name(lab, "web01")
    assert ["controlvm", vm, "poweroff"] in fake.calls() and vm not in fake.world()["vms"]
    assert not (lab.host_dir("web01") / "installed.vdi").exists()
    with pytest.raises(ConfigError, match=r"installer\.iso: not a Debian 12 installer ISO: it has no "
                                          r"/install\.amd/vmlinuz"):
        boot_files(iso, "preseed", tmp_path / "y", "/usr/bin:/bin")
    with pytest.raises(ConfigError, match="no such file"):
        boot_files(tmp_path / "missing.iso", "kickstart", tmp_path / "y", "/usr/bin:/bin")
