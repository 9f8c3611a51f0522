"""qemu provider without root or VMs: its command line, identity files, names, accel detection, initramfs."""

from __future__ import annotations

import gzip
import ipaddress
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from booted.config import Settings
from booted.hosts.identity import Identity
from booted.images.vm_assets import Assets, Kernel, initramfs_bytes
from booted.providers import get_provider, qemuctl
from booted.providers.base import Lab
from booted.providers.qemu import IDENTITY_FILES, QemuProvider, boot_timeout


def lab(tmp_path: Path, net: str = "10.213.60.0/24") -> Lab:
    return Lab("qt", "a1b2c3", ipaddress.ip_network(net), tmp_path / "labs" / "qt")


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
    provider = get_provider("qemu", Settings.from_env({}))
    assert isinstance(provider, QemuProvider) and provider.name == "qemu"


def test_command_line_of_a_host(tmp_path: Path) -> None:
    lb, host = lab(tmp_path), ident(tmp_path, memory=512, cpus=2)
    cmd = qemu(tmp_path).command(lb, host, assets(tmp_path), "tcg")
    hdir = lb.host_dir("web01")
    assert cmd[0] == "qemu-system-x86_64"
    assert option(cmd, "-name") == ["booted-a1b2c3-web01"]
    assert option(cmd, "-m") == ["512"] and option(cmd, "-smp") == ["2"]
    assert option(cmd, "-accel") == ["tcg"] and "-cpu" not in cmd
    assert option(cmd, "-kernel") == [str(tmp_path / "kernel/boot/vmlinuz-6.1.0-56-cloud-amd64")]
    assert option(cmd, "-initrd") == [str(tmp_path / "initramfs.gz")]
    append = option(cmd, "-append")[0]
    assert "init=/usr/lib/booted/init" in append and "net.ifnames=0" in append and "console=ttyS0" in append
    assert option(cmd, "-drive") == [f"file={hdir}/disk.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap"]
    assert "virtio-rng-pci" in option(cmd, "-device")
    assert option(cmd, "-netdev") == ["tap,id=n0,ifname=bqa1b2c32,script=no,downscript=no"]
    assert "virtio-net-pci,netdev=n0,mac=52:54:0a:d5:3c:02" in option(cmd, "-device")
    assert option(cmd, "-chardev") == [f"file,id=console,path={hdir}/console.log,append=on"]
    assert option(cmd, "-serial") == ["chardev:console"]
    assert option(cmd, "-qmp") == [f"unix:{hdir}/qmp.sock,server=on,wait=off"]
    assert option(cmd, "-pidfile") == [str(hdir / "qemu.pid")]
    assert "-no-reboot" in cmd and "-nodefaults" in cmd


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
    assert len(QemuProvider.tap(lb, last)) <= 15 and len(lb.bridge) <= 15
    assert QemuProvider.tap(lb, str(lb.network.network_address + 2)) == "bqa1b2c32"


def test_boot_timeout_scales_beyond_two_vms_per_core() -> None:
    assert boot_timeout(60, 4, cores=2) == 60
    assert boot_timeout(60, 8, cores=2) == 120
    assert boot_timeout(60, 1, cores=2) == 60


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
