"""The trial initramfs of bench/boottrace.py: booted's initramfs (as built), its /init with a console stamp at
each step, and this checkout's guest files (with stamps) that the trial /init copies over the root disk's
before it switches root. A variant changes one thing (VARIANTS) so that two can be compared in one run."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from booted.images import initramfs as ir
from booted.images.vm_assets import Assets

GUEST = Path(__file__).resolve().parent.parent / "booted" / "guest"
STAMP_FN = 'st() { read -r u _ </proc/uptime; echo "booted-trace: $1 @$u" >/dev/console; }\n'
# base: booted as it is; permod: a stamp per insmod; pc: the pc machine (booted's before q35); rdrand: a vCPU
# with RDRAND (the kernel trusts it: entropy at once) and no virtio-rng device or module; nosig: rdrand, and
# the modules without their signatures; microvm: QEMU's microvm machine (virtio-mmio devices found through its
# ACPI tables, virtio_mmio instead of virtio_pci, qboot firmware)
VARIANTS = ("base", "permod", "pc", "rdrand", "nosig", "dropbear", "microvm")


def qemu_argv(variant: str, argv: list[str]) -> list[str]:
    """The variant's QEMU command line from booted's."""
    if variant == "pc":
        at = argv.index("-M") + 1
        argv = [*argv[:at], "pc", *argv[at + 1:]]
    if variant == "microvm":
        argv = microvm_argv(argv)
    if variant in ("rdrand", "nosig"):
        at = argv.index("virtio-rng-pci")
        argv = [*argv[:at - 1], *argv[at + 1:]]
        at = argv.index("-accel") + 2
        argv = [*argv[:at], "-cpu", "qemu64,+rdrand", *argv[at:]]
    return argv


def microvm_argv(argv: list[str]) -> list[str]:
    """booted's command line on QEMU's microvm machine: each virtio PCI device as a virtio-mmio one."""
    out: list[str] = []
    drives = 0
    for i, arg in enumerate(argv):
        if i and argv[i - 1] == "-M":
            arg = "microvm"
        elif i and argv[i - 1] == "-drive" and "if=virtio" in arg:
            arg = arg.replace("if=virtio", f"if=none,id=vd{drives}")
            out += [arg, "-device", f"virtio-blk-device,drive=vd{drives}"]
            drives += 1
            continue
        elif i and argv[i - 1] == "-device" and arg.startswith("virtio-") and "-pci" in arg:
            arg = arg.replace("-pci", "-device", 1)
        out.append(arg)
    return out


def read_cpio(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """The entries of a newc cpio: (name, mode, data, rdev)."""
    out, at = [], 0
    while True:
        head = data[at:at + 110]
        fields = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        namesize, size = fields[11], fields[6]
        name = data[at + 110:at + 110 + namesize - 1].decode()
        at += 110 + namesize
        at += -at % 4
        body = data[at:at + size]
        at += size
        at += -at % 4
        if name == "TRAILER!!!":
            return out
        out.append((name, fields[1], body, (fields[9], fields[10])))


def unsigned(ko: bytes) -> bytes:
    """A module without its appended signature (the kernel then checks nothing and taints itself)."""
    marker = b"~Module signature appended~\n"
    if not ko.endswith(marker):
        return ko
    end = len(ko) - len(marker)
    sig_len = int.from_bytes(ko[end - 4:end], "big")
    return ko[:end - 12 - sig_len]


def stamped(text: str, after: str, name: str) -> str:
    """`text` with a stamp `name` after the first line that starts with `after` ("" = after the shebang)."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if (i == 0 and after == "") or (after and line.startswith(after)):
            return "".join(lines[:i + 1] + [f"st {name}\n"] + lines[i + 1:])
    raise ValueError(f"no line starting {after!r} to stamp {name}")


def before(text: str, at: str, add: str) -> str:
    """`text` with `add` inserted before the first line that starts with `at`."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(at):
            return "".join(lines[:i] + [add] + lines[i:])
    raise ValueError(f"no line starting {at!r}")


def trial_init(variant: str) -> str:
    text = ir.INITRAMFS_INIT
    text = text.replace("export PATH=/bin\n", "export PATH=/bin\n" + STAMP_FN, 1)
    text = stamped(text, "mount -t devtmpfs", "init")
    if variant != "base":
        text = text.replace('insmod "/lib/modules/$m" ||', 'insmod "/lib/modules/$m" && st "$m" ||')
    text = stamped(text, "while read -r m", "modules")
    text = before(text, "mkdir -p /newroot", "st root\n")
    text = before(text, "umount /proc /sys", "cp -a /trace/guest/. /newroot/usr/lib/booted/\n"
                  "[ -d /trace/root ] && cp -a /trace/root/. /newroot/\n"
                  "cp /trace/inittab /newroot/etc/inittab\nst switch\n")
    return text


def trial_guest(variant: str) -> dict[str, str]:
    """The guest files with stamps: guest-init (start, end), boot (start, sshd's exec)."""
    gi = (GUEST / "guest-init").read_text()
    gi = re.sub(r"\A(#![^\n]*\n)", lambda m: m.group(1) + STAMP_FN + "st guest-init\n", gi)
    gi = before(gi, "exit 0", "st guest-init-end\n")
    boot = (GUEST / "boot").read_text()
    boot = re.sub(r"\A(#![^\n]*\n)", lambda m: m.group(1) + STAMP_FN + "st boot\n", boot)
    boot = before(boot, "exec /usr/sbin/sshd", "st sshd-exec\n")
    if variant == "dropbear":
        boot = boot.replace('exec /usr/sbin/sshd -D -e "${rexec[@]}" -f "$ID/sshd_config"',
                            'exec /usr/sbin/dropbear -F -E -s -p "$BOOTED_IP:22" -r /etc/dropbear/host.dropbear')
    return {"guest-init": gi, "boot": boot, "inittab": (GUEST / "inittab").read_text()}


def build(assets: Assets, variant: str, out: Path, root: dict[str, tuple[bytes, int]] | None = None) -> str:
    """Write the variant's initramfs to `out`; the kernel arguments it adds."""
    entries = read_cpio(gzip.decompress(assets.initramfs.read_bytes()))
    cpio = ir.Cpio()
    for name, mode, body, rdev in entries:
        rdrand = variant in ("rdrand", "nosig")
        if rdrand and name.startswith("lib/modules/virtio-rng"):
            continue
        if variant == "nosig" and name.endswith(".ko"):
            body = unsigned(body)
        if name == "lib/modules/load.order" and rdrand:
            body = body.replace(b"virtio-rng.ko\n", b"")
        if name == "lib/modules/load.order" and variant == "microvm":
            body = body.replace(b"virtio.ko\n", b"virtio.ko\nvirtio_mmio.ko\n", 1)
        if name == "init":
            body = trial_init(variant).encode()
        cpio._entry(name, mode, body, nlink=2 if mode & 0o040000 else 1, rdev=rdev)
    if variant == "microvm":
        mmio = next(assets.kernel.modules.rglob("virtio_mmio.ko"))
        cpio.file("lib/modules/virtio_mmio.ko", mmio.read_bytes(), 0o644)
    cpio.symlink("bin/cp", "busybox")
    for d in ("trace", "trace/guest"):
        cpio.dir(d)
    files = trial_guest(variant)
    cpio.file("trace/inittab", files.pop("inittab").encode(), 0o644)
    for name, text in files.items():
        cpio.file(f"trace/guest/{name}", text.encode(), 0o755)
    made = {"trace/root"}
    if root:
        cpio.dir("trace/root")
    for path, (data, mode) in (root or {}).items():
        parts = path.split("/")
        for k in range(1, len(parts)):
            d = "trace/root/" + "/".join(parts[:k])
            if d not in made:
                cpio.dir(d)
                made.add(d)
        cpio.file(f"trace/root/{path}", data, mode)
    out.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
    return ""


def uptimes(console: bytes) -> dict[str, float]:
    """The guest's uptime at each stamp: up:<name>."""
    found = {}
    for m in re.finditer(rb"booted-trace: (\S+) @([0-9.]+)", console):
        found.setdefault(f"up:{m.group(1).decode()}", float(m.group(2)))
    return found
