"""bench/_traceinit's pure parts: the cpio reader against booted's writer, signature stripping, the stamps.
No VM is booted (bench/boottrace.py does that)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import _traceinit

from booted.images.initramfs import Cpio


def test_read_cpio_reads_what_cpio_writes() -> None:
    cpio = Cpio()
    cpio.dir("bin")
    cpio.file("bin/x", b"12345", 0o755)
    cpio.symlink("bin/sh", "x")
    cpio.chardev("dev/null", 1, 3, 0o666)
    entries = _traceinit.read_cpio(cpio.finish())
    assert [(name, data) for name, _, data, _ in entries] == [("bin", b""), ("bin/x", b"12345"), ("bin/sh", b"x"),
                                                              ("dev/null", b"")]
    assert entries[1][1] & 0o777 == 0o755 and entries[3][3] == (1, 3)


def test_unsigned_drops_the_appended_signature_only() -> None:
    body, sig = b"\x7fELF module", b"S" * 7
    info = b"\0" * 8 + len(sig).to_bytes(4, "big")
    assert _traceinit.unsigned(body + sig + info + b"~Module signature appended~\n") == body
    assert _traceinit.unsigned(body) == body


def test_trial_init_stamps_each_step_and_copies_the_guest_files() -> None:
    text = _traceinit.trial_init("base")
    for step in ("init", "modules", "root", "switch"):
        assert f"st {step}\n" in text
    assert text.index("cp -a /trace/guest/.") < text.index("exec switch_root")
    guest = _traceinit.trial_guest("dropbear")
    assert "st sshd-exec\n" in guest["boot"] and "exec /usr/sbin/dropbear" in guest["boot"]
    assert "st guest-init-end\n" in guest["guest-init"]


def test_the_microvm_variant_makes_each_virtio_pci_device_a_virtio_mmio_one() -> None:
    argv = ["qemu", "-M", "q35", "-drive", "file=a.qcow2,if=virtio,format=qcow2", "-drive", "file=s.img,if=virtio",
            "-device", "virtio-rng-pci", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01"]
    assert _traceinit.qemu_argv("microvm", argv) == [
        "qemu", "-M", "microvm", "-drive", "file=a.qcow2,if=none,id=vd0,format=qcow2", "-device",
        "virtio-blk-device,drive=vd0", "-drive", "file=s.img,if=none,id=vd1", "-device", "virtio-blk-device,drive=vd1",
        "-device", "virtio-rng-device", "-device", "virtio-net-device,netdev=n0,mac=52:54:00:00:00:01"]
