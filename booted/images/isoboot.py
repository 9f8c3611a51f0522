"""Booting a user's installer ISO: its kernel and initrd taken out with xorriso, and a PXE tree
(Debian's pxelinux) that boots them with booted's command line, for hypervisors that cannot boot a kernel
directly (VirtualBox boots it over its NAT network's built-in TFTP server).

Known layouts: RHEL 9 family (Rocky, Alma, RHEL: images/pxeboot/vmlinuz + initrd.img) and Debian
(install.amd/vmlinuz + initrd.gz)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from booted.errors import ConfigError, ToolMissing

LAYOUTS = {"kickstart": ("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img"),
           "preseed": ("install.amd/vmlinuz", "install.amd/initrd.gz")}
PXELINUX = Path("/usr/lib/PXELINUX/pxelinux.0")  # Debian's pxelinux package
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")  # syslinux-common


def boot_files(iso: Path, kind: str, out: Path, path: str) -> tuple[Path, Path]:
    """The installer kernel and initrd of `iso` (a `kind` installer), extracted into `out`."""
    xorriso = shutil.which("xorriso", path=path)
    if xorriso is None:
        raise ToolMissing("xorriso not found: apt-get install xorriso (or run setup.sh)")
    if not iso.is_file():
        raise ConfigError(f"--iso {iso}: no such file (the installer ISO, e.g. Rocky-9-x86_64-dvd.iso)")
    out.mkdir(parents=True, exist_ok=True)
    kernel, initrd = LAYOUTS[kind]
    targets = (out / "vmlinuz", out / Path(initrd).name)
    for target in targets:
        target.unlink(missing_ok=True)
    proc = subprocess.run([xorriso, "-osirrox", "on", "-indev", str(iso), "-extract", f"/{kernel}", str(targets[0]),
                           "-extract", f"/{initrd}", str(targets[1])], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not all(t.is_file() for t in targets):
        what = "a RHEL 9 family (Rocky, Alma)" if kind == "kickstart" else "a Debian 12"
        raise ConfigError(f"--iso {iso}: not {what} installer ISO: it has no /{kernel} and /{initrd} "
                          f"({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'xorriso failed'})")
    for target in targets:
        target.chmod(0o644)
    return targets


def pxe_tree(out: Path, kernel: Path, initrd: Path, append: str) -> str:
    """A TFTP folder that PXE-boots kernel + initrd with `append`: pxelinux.0 (returned: the boot file),
    ldlinux.c32, the two files and pxelinux.cfg/default."""
    if not PXELINUX.exists() or not LDLINUX.exists():
        raise ToolMissing(f"{PXELINUX} or {LDLINUX} missing: apt-get install pxelinux syslinux-common (or run "
                          "setup.sh)")
    if any(c in append for c in "\n\r"):
        raise ConfigError("the installer command line has a line break")
    out.mkdir(parents=True, exist_ok=True)
    for src in (PXELINUX, LDLINUX, kernel, initrd):
        if src.resolve() != (out / src.name).resolve():
            shutil.copyfile(src, out / src.name)
    (out / "pxelinux.cfg").mkdir(exist_ok=True)
    (out / "pxelinux.cfg" / "default").write_text(
        f"DEFAULT install\nPROMPT 0\nTIMEOUT 1\nLABEL install\n  KERNEL {kernel.name}\n  INITRD {initrd.name}\n"
        f"  APPEND {append}\n")
    return PXELINUX.name
