"""qemu provider without root or VMs: its command line, identity files, names, accel detection, initramfs;
and the VM base it shares with libvirt and virtualbox (names, host_of, launch then return, Boot), and the
parser of this machine's addresses."""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from booted.config import Settings
from booted.discovery.wait import boot_timeout
from booted.hosts.identity import Identity
from booted.images.initramfs import initramfs_bytes
from booted.images.vm_assets import Assets, Kernel
from booted.providers import links, provider_class, qemuctl
from booted.providers.base import Progress, Started
from booted.providers.bridge import address_owner
from booted.providers.lab import Lab
from booted.providers.libvirt import LibvirtProvider
from booted.providers.qemu import QemuProvider
from booted.providers.qemu_cmdline import IDENTITY_FILES, tap_name
from booted.providers.qemu_options import Boot, QemuOptions, boot_of
from booted.providers.virtualbox import VirtualBoxProvider
from booted.providers.vm import Launch, VmProvider, vm_name


def lab(tmp_path: Path, net: str = "10.213.60.0/24", boot: str = "kernel") -> Lab:
    return Lab("qt", "a1b2c3", ipaddress.ip_network(net), tmp_path / "labs" / "qt", options=QemuOptions(Boot(boot)))


def qemu(tmp_path: Path, mode: str = "tap") -> QemuProvider:
    settings = Settings.from_env({"BOOTED_STATE_DIR": str(tmp_path / "state"), "BOOTED_QEMU_NET": mode,
                                  "PATH": os.environ["PATH"]})
    return QemuProvider(settings)


def ident(tmp_path: Path, name: str = "web01", ip: str = "10.213.60.2", **kw: int) -> Identity:
    key = tmp_path / "keys" / name
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("PRIVATE\n")
    Path(f"{key}.pub").write_text("ssh-ed25519 AAAA host\n")
    return Identity(name=name, ip=ip, prefix=24, gateway="10.213.60.1", mac="52:54:0a:d5:3c:02",
                    boot_url="http://10.213.60.1:8470/booted", login_user="root", pw_hash=None, host_key=key,
                    authorized_key="ssh-ed25519 BBBB lab", **kw)


def assets(tmp_path: Path) -> Assets:
    return Assets(Kernel(tmp_path / "kernel", "6.1.0-56-cloud-amd64"), tmp_path / "initramfs.gz", tmp_path / "d.img")


def option(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == flag]


def test_registry_finds_the_qemu_provider() -> None:
    provider = provider_class("qemu")(Settings.from_env({}))
    assert isinstance(provider, QemuProvider) and provider.name == "qemu"


def test_command_line_of_a_host(tmp_path: Path) -> None:
    lb, host = lab(tmp_path), ident(tmp_path, memory=512, cpus=2)
    cmd = qemu(tmp_path).command(lb, host, assets(tmp_path), "tcg")
    hdir = lb.host_dir("web01")
    assert cmd[0] == "qemu-system-x86_64"
    assert option(cmd, "-name") == ["booted-a1b2c3-web01"]
    assert option(cmd, "-m") == ["512"] and option(cmd, "-smp") == ["2"]
    assert option(cmd, "-accel") == ["tcg"] and "-cpu" not in cmd
    assert option(cmd, "-M") == ["q35"]  # a constant PCI interrupt table: pc's _PRT is an AML loop (0.1 s a device)
    assert option(cmd, "-kernel") == [str(tmp_path / "kernel/boot/vmlinuz-6.1.0-56-cloud-amd64")]
    assert option(cmd, "-initrd") == [str(tmp_path / "initramfs.gz")]
    append = option(cmd, "-append")[0]
    assert "init=/usr/lib/booted/init" in append and "net.ifnames=0" in append and "console=ttyS0" in append
    # the clocksource watchdog stays on: a TSC calibrated wrong under load is replaced by hpet (README, qemu)
    assert not {"tsc=reliable", "tsc=nowatchdog"} & set(append.split())
    assert option(cmd, "-drive") == [f"file={hdir}/disk.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap"]
    assert "virtio-rng-pci" in option(cmd, "-device")
    assert option(cmd, "-netdev") == ["tap,id=n0,ifname=bqa1b2c32,script=no,downscript=no"]
    assert "virtio-net-pci,netdev=n0,mac=52:54:0a:d5:3c:02" in option(cmd, "-device")
    assert option(cmd, "-chardev") == [f"file,id=console,path={hdir}/console.log,append=on"]
    assert option(cmd, "-serial") == ["chardev:console"]
    assert option(cmd, "-qmp") == ["unix:qmp.sock,server=on,wait=off"]  # in the host folder, QEMU's cwd
    assert option(cmd, "-pidfile") == [str(hdir / "qemu.pid")]
    assert "-no-reboot" in cmd and "-nodefaults" in cmd


def test_the_boot_floor_boots_booteds_own_machine(tmp_path: Path) -> None:
    """bench/_bootfloor's command line is host_command's for its throwaway host, with the floor's initramfs
    and rdinit= and no control socket; nothing else differs (qemu-img makes its overlay: a real process)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    try:
        import _bootfloor
    finally:
        sys.path.pop(0)
    from booted.providers.qemu_cmdline import host_command

    got = assets(tmp_path)
    got.initramfs.write_bytes(gzip.compress(b"booted's cpio"))
    got.disk.write_bytes(b"\0" * 65536)
    argv, console = _bootfloor.command(got, "tcg", tmp_path / "floor")
    lb = Lab("floor", "f1f1f1", ipaddress.ip_network("10.0.2.0/24"), tmp_path / "floor" / "lab")
    host = Identity(name="floor", ip="10.0.2.15", prefix=24, gateway="10.0.2.2", mac="52:54:00:12:34:56",
                    boot_url="", login_user="root", pw_hash=None, host_key=Path("unused"), authorized_key="")
    booted = host_command(lb, host, got, "tcg", "user,id=n0,restrict=on")
    at = booted.index("-qmp")
    floor_initrd = tmp_path / "floor" / "floor.gz"
    expected = [floor_initrd.as_posix() if a == str(got.initramfs) else
                f"{a} rdinit=/floor-init" if booted[i - 1] == "-append" else a
                for i, a in enumerate(booted)]
    assert argv == expected[:at] + expected[at + 2:]
    assert console == lb.host_dir("floor") / "console.log" and option(argv, "-chardev")[0].endswith(
        f"path={console},append=on")
    assert floor_initrd.read_bytes().startswith(got.initramfs.read_bytes())  # booted's, then /floor-init
    assert b"floor-init" in gzip.decompress(floor_initrd.read_bytes()[len(got.initramfs.read_bytes()):])
    assert (lb.host_dir("floor") / "disk.qcow2").exists()


def test_user_mode_networking_command_line(tmp_path: Path) -> None:
    """No root: slirp with the guest's own lab IP, restricted; SSH and the service port forwarded on
    loopback; the boot URL's gateway:port relayed to nginx on 127.0.0.1; no tap."""
    from booted.providers.qemu_usernet import RELAY, read_forwards, relay_python, write_forwards

    lb, host, provider = lab(tmp_path), ident(tmp_path), qemu(tmp_path, "user")
    host = Identity(**{**host.__dict__, "ports": (8000,)})
    hdir = lb.host_dir("web01")
    hdir.mkdir(parents=True)
    write_forwards(hdir, {22: 40022, 8000: 40080})
    assert read_forwards(hdir) == {22: 40022, 8000: 40080}
    assert provider.endpoints(lb, "web01") == {22: ("127.0.0.1", 40022), 8000: ("127.0.0.1", 40080)}
    netdev = option(provider.command(lb, host, assets(tmp_path), "tcg"), "-netdev")[0]
    assert netdev.split(",")[:5] == ["user", "id=n0", "restrict=on", "net=10.213.60.0/24", "host=10.213.60.254"]
    assert "dns=10.213.60.253" in netdev
    assert "hostfwd=tcp:127.0.0.1:40022-10.213.60.2:22" in netdev
    assert "hostfwd=tcp:127.0.0.1:40080-10.213.60.2:8000" in netdev
    assert netdev.endswith(f"guestfwd=tcp:10.213.60.1:8470-cmd:{relay_python()} {RELAY} 127.0.0.1 8470")
    assert "tap" not in netdev
    assert provider.listen_addresses(lb) == []  # nginx on loopback only once the lab is prepared
    provider.prepare_network(lb)
    assert provider.listen_addresses(lb) == ["127.0.0.1"]


def test_kvm_uses_the_host_cpu_and_commas_in_paths_are_escaped(tmp_path: Path) -> None:
    odd = tmp_path / "a,b"
    cmd = qemu(tmp_path).command(lab(odd), ident(tmp_path), assets(tmp_path), "kvm")
    assert option(cmd, "-accel") == ["kvm"] and option(cmd, "-cpu") == ["host"]
    assert option(cmd, "-drive")[0].startswith(f"file={tmp_path}/a,,b/labs/")
    assert all(",,b" in v for v in option(cmd, "-fw_cfg"))


def test_fw_cfg_hands_in_every_identity_file(tmp_path: Path) -> None:
    lb, host = lab(tmp_path), ident(tmp_path)
    host.write_dir(lb.host_dir("web01") / "identity")
    cmd = qemu(tmp_path).command(lb, host, assets(tmp_path), "tcg")
    entries = dict(v.split(",file=") for v in option(cmd, "-fw_cfg"))
    assert sorted(entries) == sorted(f"name=opt/booted/{f}" for f in IDENTITY_FILES)
    assert all(len(k) - len("name=") <= 55 for k in entries)  # fw_cfg file names are at most 55 bytes
    files = {k.rsplit("/", 1)[1]: Path(v) for k, v in entries.items()}
    assert "BOOTED_HOSTNAME=web01\n" in files["identity"].read_text()
    assert "BOOTED_IP=10.213.60.2\n" in files["identity"].read_text()
    assert files["ssh_host_ed25519_key"].read_text() == "PRIVATE\n"
    assert stat.S_IMODE(files["ssh_host_ed25519_key"].stat().st_mode) == 0o600
    assert files["authorized_keys"].read_text() == "ssh-ed25519 BBBB lab\n"
    guest_init = (Path(__file__).parent.parent / "booted/guest/guest-init").read_text()
    assert all(f in guest_init for f in IDENTITY_FILES) and "opt/booted" in guest_init


def test_identity_defaults_to_a_small_vm(tmp_path: Path) -> None:
    host = ident(tmp_path)
    assert (host.memory, host.cpus) == (256, 1)


# environments allow /16../29 networks
@pytest.mark.parametrize("net", ["10.213.60.0/24", "10.0.0.0/16", "10.9.9.8/29"])
def test_interface_names_fit_in_15_characters(tmp_path: Path, net: str) -> None:
    lb = lab(tmp_path, net)
    last = str(lb.network.broadcast_address - 1)
    assert len(tap_name(lb, last)) <= 15 and len(lb.bridge) <= 15
    assert tap_name(lb, str(lb.network.network_address + 2)) == "bqa1b2c32"


def test_boot_timeout_scales_beyond_two_vms_per_core() -> None:
    assert boot_timeout(60, 4, cores=2) == 60
    assert boot_timeout(60, 8, cores=2) == 120
    assert boot_timeout(60, 1, cores=2) == 60


def test_boot_is_qemus_own_option_an_enum(tmp_path: Path) -> None:
    assert boot_of(lab(tmp_path, boot="disk")) is Boot.DISK and Boot.DISK == "disk"
    assert boot_of(lab(tmp_path)) is Boot.KERNEL and boot_of(lab(tmp_path, boot=Boot.INSTALLED)) is Boot.INSTALLED
    assert boot_of(Lab("qt", "a1b2c3", ipaddress.ip_network("10.213.60.0/24"), tmp_path)) is Boot.KERNEL  # not qemu's
    with pytest.raises(ValueError, match="floppy"):
        lab(tmp_path, boot="floppy")


def test_a_disk_boot_has_no_kernel_and_its_identity_on_a_seed_disk(tmp_path: Path) -> None:
    provider, host = qemu(tmp_path), ident(tmp_path)
    for boot, disk in (("disk", "disk.qcow2"), ("installed", "installed.qcow2")):
        lb = lab(tmp_path, boot=boot)
        hdir = lb.host_dir("web01")
        cmd = provider.command(lb, host, assets(tmp_path), "tcg")
        assert not {"-kernel", "-initrd", "-append", "-bios", "-fw_cfg"} & set(cmd)
        assert option(cmd, "-drive") == [f"file={hdir}/{disk},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
                                         f"file={hdir}/seed.img,if=virtio,format=raw,readonly=on"]


def test_vm_providers_find_their_hosts_vms_by_name(tmp_path: Path) -> None:
    lb, settings = lab(tmp_path), Settings.from_env({})
    vm = vm_name(lb, "web01")
    assert vm == "booted-a1b2c3-web01"
    assert QemuProvider(settings).host_of(lb, ["/usr/bin/qemu-system-x86_64", "-name", vm, "-m", "256"]) == "web01"
    libvirt_argv = ["/usr/bin/qemu-system-x86_64", "-name", f"guest={vm},debug-threads=on", "-S"]
    assert LibvirtProvider(settings).host_of(lb, libvirt_argv) == "web01"
    vbox_argv = ["/usr/lib/virtualbox/VBoxHeadless", "--comment", vm, "--startvm", "6b1c2f4e"]
    assert VirtualBoxProvider(settings).host_of(lb, vbox_argv) == "web01"
    other = lab(tmp_path / "other")
    other = Lab(other.env, "ffffff", other.network, other.dir)
    assert QemuProvider(settings).host_of(other, ["qemu-system-x86_64", "-name", vm]) is None  # another lab's
    assert QemuProvider(settings).host_of(lb, ["/bin/sleep", "-name", vm]) is None
    assert VirtualBoxProvider(settings).host_of(lb, ["VBoxHeadless", "--comment"]) is None


class Launching(VmProvider):
    """A VM provider whose launches are scripted: what the VM base does around them is the real thing."""

    name = "launching"
    process = "nothing"
    name_option = "-name"

    def __init__(self, running: dict[str, int], refused: dict[str, str],
                 launches: dict[str, tuple[int | None, str | None]]) -> None:
        super().__init__(Settings.from_env({"BOOTED_BOOT_PARALLEL": "2"}))
        self.now, self.refused, self.launches = running, refused, launches
        self.launched: list[str] = []

    def running(self, lab: Lab) -> dict[str, int]:
        return dict(self.now)

    def launcher(self, lab: Lab, hosts: list[Identity], progress: Progress) -> tuple[Launch, dict[str, str]]:
        def launch(host: Identity) -> tuple[int | None, str | None]:
            self.launched.append(host.name)
            return self.launches[host.name]
        return launch, {h.name: self.refused[h.name] for h in hosts if h.name in self.refused}

    def stop(self, lab: Lab, names: list[str]) -> dict[str, str]:
        raise AssertionError("not used")

    def clone(self, lab: Lab, src: str, new: str) -> None:
        raise AssertionError("not used")

    def teardown(self, lab: Lab) -> None:
        raise AssertionError("not used")


def test_start_launches_each_host_that_does_not_run_and_returns(tmp_path: Path) -> None:
    """Running hosts are listed as started, not launched again; hosts the launcher refuses, whose launch
    fails or returns no process are their own rows; one progress line per launch."""
    provider = Launching({"web01": 11, "other": 12}, {"web03": "no installed disk"},
                         {"web02": (22, None), "web04": (None, None), "web05": (None, "qemu exited with 1")})
    hosts = [ident(tmp_path, name, f"10.213.60.{n}") for n, name in enumerate(
        ("web01", "web02", "web03", "web04", "web05"), 2)]
    said: list[str] = []
    started, errors = provider.start(lab(tmp_path), hosts, said.append)
    assert sorted(started, key=lambda s: s.name) == [Started("web01", 11), Started("web02", 22)]
    assert errors == {"web03": "no installed disk", "web04": "did not start", "web05": "qemu exited with 1"}
    assert sorted(provider.launched) == ["web02", "web04", "web05"]
    rows = [line.split("] ", 1)[1].rsplit(" (", 1) for line in said]  # "[  0.0s] web02: launched (1/3)"
    assert sorted(row for row, _ in rows) == ["web02: launched", "web04: did not start", "web05: qemu exited with 1"]
    assert sorted(count for _, count in rows) == ["1/3)", "2/3)", "3/3)"]
    provider.launched.clear()
    assert provider.start(lab(tmp_path), hosts[:1], said.append) == ([Started("web01", 11)], {})
    assert provider.launched == []


FAKE_QEMU = textwrap.dedent("""\
    import json, socket, sys
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(sys.argv[1])
    sock.listen(1)
    while True:
        conn, _ = sock.accept()
        f = conn.makefile("rwb")
        f.write(json.dumps({"QMP": {}}).encode() + b"\\n")
        f.flush()
        for _line in f:
            f.write(json.dumps({"return": {}}).encode() + b"\\n")
            f.flush()
        conn.close()
    """)


class ScriptedQemu(QemuProvider):
    """The real qemu provider launching a stand-in for QEMU (`argv`)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.argv: list[str] = []

    def command(self, lab: Lab, host: Identity, assets: Assets, accel: str) -> list[str]:
        return self.argv


def test_a_qemu_launch_ends_when_qemu_answers_qmp_and_fails_when_qemu_exits(tmp_path: Path) -> None:
    lb, host = lab(tmp_path), ident(tmp_path)
    hdir = lb.host_dir("web01")
    hdir.mkdir(parents=True)
    provider = ScriptedQemu(qemu(tmp_path, "user").settings)
    script = tmp_path / "fake_qemu.py"
    script.write_text(FAKE_QEMU)
    provider.argv = [sys.executable, str(script), str(hdir / "qmp.sock")]
    pid, error = provider._launch(lb, host, assets(tmp_path), "tcg")
    try:
        assert error is None and pid is not None and qemuctl.qmp_ok(hdir / "qmp.sock", "query-status")
        assert (hdir / "console.log").read_text().startswith("--- booted: starting web01 at ")
    finally:
        if pid:
            os.kill(pid, 9)
    provider.argv = ["sh", "-c", "echo 'qemu-system-x86_64: -netdev user: could not set up host forwarding' >&2; "
                                 "exit 1"]
    (hdir / "forwards.json").write_text("{}")
    pid, error = provider._launch(lb, host, assets(tmp_path), "tcg")
    assert pid is None and error is not None
    assert error.startswith("qemu exited with 1: qemu-system-x86_64: -netdev user: could not set up host forwarding")
    assert not (hdir / "forwards.json").exists()  # a failed host's forwarded ports are given up
    assert (hdir / "console.log.1").exists()  # the previous boot's console is kept
    assert provider.why_not_booted(lb, "web01").startswith("the VM stopped while booting: qemu-system-x86_64: ")


def test_this_machines_addresses_are_read_once_for_every_use(monkeypatch: pytest.MonkeyPatch) -> None:
    out = json.dumps([{"ifname": "lo", "addr_info": [{"local": "127.0.0.1", "prefixlen": 8}]},
                      {"ifname": "bta1b2c3", "addr_info": [{"local": "10.213.60.1"}, {"family": "inet"}]},
                      {"ifname": "eth0", "addr_info": []}])
    answers = iter([out, out, "not json", "[1]"])
    monkeypatch.setattr(links.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=next(answers), stderr=""))
    assert links.ipv4_addresses() == {"lo": ["127.0.0.1"], "bta1b2c3": ["10.213.60.1"], "eth0": []}
    assert address_owner("10.213.60.1") == "bta1b2c3"
    assert links.ipv4_addresses() == {} and links.ipv4_addresses() == {}  # an answer that cannot be read


# accel detection: a fake qemu-system-x86_64 at the process boundary -------------------------------
def fake_qemu(tmp_path: Path, behaviour: str) -> str:
    """A stand-in QEMU: --version answers; a probe run prints a kernel banner, fails, or hangs."""
    script = tmp_path / "fake-qemu"
    calls = tmp_path / "calls"
    probe = {"boots": 'echo "Linux version 6.1.0-56-cloud-amd64 (debian)"; exec sleep 5',
             "msr": 'echo "qemu-system-x86_64: failed to set MSR 0x10a to 0x0" >&2; exit 1',
             "hangs": "exec sleep 5"}[behaviour]
    script.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then echo "QEMU emulator version 7.2.22"; exit 0; fi\n'
                      f'echo probe >> {calls}\n{probe}\n')
    script.chmod(0o755)
    return str(script)


def calls(tmp_path: Path) -> int:
    path = tmp_path / "calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(qemuctl, "PROBE_SECONDS", 0.5)
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"kernel")
    (tmp_path / "kvm").write_text("")
    return path


def test_kvm_is_used_when_a_real_kernel_boots_and_the_verdict_is_cached(tmp_path: Path, kernel: Path) -> None:
    cache = tmp_path / "cache"
    assert qemuctl.detect_accel(cache, kernel, "auto", fake_qemu(tmp_path, "boots"), str(tmp_path / "kvm"))[0] == "kvm"
    assert calls(tmp_path) == 1
    fake_qemu(tmp_path, "msr")  # the verdict is cached per qemu version + kernel: no second probe
    accel, why = qemuctl.detect_accel(cache, kernel, "auto", str(tmp_path / "fake-qemu"), str(tmp_path / "kvm"))
    assert (accel, calls(tmp_path)) == ("kvm", 1) and why.startswith("cached")


def test_kvm_that_fails_on_a_real_kernel_falls_back_to_tcg(tmp_path: Path, kernel: Path) -> None:
    accel, why = qemuctl.detect_accel(tmp_path / "c", kernel, "auto", fake_qemu(tmp_path, "msr"), str(tmp_path / "kvm"))
    assert accel == "tcg" and "MSR 0x10a" in why


def test_kvm_that_hangs_falls_back_to_tcg(tmp_path: Path, kernel: Path) -> None:
    accel, why = qemuctl.detect_accel(tmp_path / "c", kernel, "auto", fake_qemu(tmp_path, "hangs"),
                                      str(tmp_path / "kvm"))
    assert accel == "tcg" and "no kernel output" in why


def test_no_kvm_device_means_tcg_without_probing(tmp_path: Path, kernel: Path) -> None:
    qemu = fake_qemu(tmp_path, "boots")
    assert qemuctl.detect_accel(tmp_path / "c", kernel, "auto", qemu, str(tmp_path / "no-kvm"))[0] == "tcg"
    assert calls(tmp_path) == 0


def test_booted_accel_overrides(tmp_path: Path, kernel: Path) -> None:
    fake = fake_qemu(tmp_path, "boots")
    assert qemuctl.detect_accel(tmp_path / "c", kernel, "tcg", fake, str(tmp_path / "kvm"))[0] == "tcg"
    assert calls(tmp_path) == 0


# initramfs --------------------------------------------------------------------------------------
def parse_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, contents) of a newc cpio, checking magic, alignment and the trailer."""
    entries: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        assert data[pos + 110 + namesize - 1] == 0
        pos = (pos + 110 + namesize + 3) & ~3
        body = data[pos:pos + size]
        pos = (pos + size + 3) & ~3
        if name == "TRAILER!!!":
            assert len(data) % 512 == 0 and not data[pos:].strip(b"\0")
            return entries
        entries[name] = (mode, body)


def test_initramfs_is_a_well_formed_newc_archive() -> None:
    data = initramfs_bytes(b"\x7fELF-busybox", [("virtio_blk.ko", b"ko1"), ("qemu_fw_cfg.ko", b"ko22")])
    entries = parse_newc(data)
    assert stat.S_ISREG(entries["init"][0]) and entries["init"][0] & 0o111
    assert entries["init"][1].startswith(b"#!/bin/sh") and b"switch_root" in entries["init"][1]
    assert entries["bin/busybox"][1] == b"\x7fELF-busybox"
    assert stat.S_ISLNK(entries["bin/switch_root"][0]) and entries["bin/switch_root"][1] == b"busybox"
    assert stat.S_ISCHR(entries["dev/console"][0])
    assert entries["lib/modules/load.order"][1] == b"virtio_blk.ko\nqemu_fw_cfg.ko\n"
    assert entries["lib/modules/qemu_fw_cfg.ko"][1] == b"ko22"


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio not installed")
def test_initramfs_lists_with_gnu_cpio(tmp_path: Path) -> None:
    data = gzip.decompress(gzip.compress(initramfs_bytes(b"bb", [("a.ko", b"a")])))
    out = subprocess.run(["cpio", "-it", "--quiet"], input=data, capture_output=True, check=True).stdout.decode()
    assert {"init", "bin/busybox", "bin/sh", "lib/modules/a.ko", "dev/console"} <= set(out.split())


def test_layer_holds_inittab_and_the_init_link(tmp_path: Path) -> None:
    from booted.images.golden import _build_layer

    _build_layer(tmp_path / "layer")
    layer = tmp_path / "layer"
    assert "::sysinit:/usr/lib/booted/guest-init" in (layer / "etc/inittab").read_text()
    assert "::once:/usr/lib/booted/boot" in (layer / "etc/inittab").read_text()
    assert os.readlink(layer / "usr/lib/booted/init") == "/bin/busybox"
    assert os.access(layer / "usr/lib/booted/guest-init", os.X_OK)


def test_a_control_socket_deeper_than_af_unix_allows_is_reached(tmp_path: Path) -> None:
    """QEMU makes its QMP socket in its own folder (a relative path); booted reaches it however deep the
    state directory is (AF_UNIX paths end at 107 bytes: pytest-xdist's folders went past it)."""
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6)
    deep.mkdir(parents=True)
    path = deep / "qmp.sock"
    assert len(str(path)) > 108
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        folder = os.open(deep, os.O_PATH)
        try:
            server.bind(f"/proc/self/fd/{folder}/qmp.sock")  # as QEMU does from its working directory
        finally:
            os.close(folder)
        server.listen(1)
        qemuctl.connect_unix(client, path)
        peer, _ = server.accept()
        peer.close()
