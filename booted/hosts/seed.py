"""A host's seed disk: its identity files (the same ones QEMU hands in as fw_cfg files) on a small ext2
file system labelled BOOTEDSEED, attached as a second disk. A host booted from the bootable disk
(images/bootdisk.py) copies them to /run/booted at boot (guest-init), like cloud-init's NoCloud seed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from booted.errors import ImageError, ToolMissing

LABEL = "BOOTEDSEED"
SIZE_KB = 1024


def write_seed(identity_dir: Path, out: Path, path: str) -> Path:
    """Pack `identity_dir` (Identity.write_dir) into the seed image `out` (root-only, like the files)."""
    mke2fs = shutil.which("mke2fs", path=path)
    if mke2fs is None:
        raise ToolMissing("mke2fs not found: apt-get install e2fsprogs (or run setup.sh)")
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    proc = subprocess.run([mke2fs, "-q", "-F", "-t", "ext2", "-L", LABEL, "-d", str(identity_dir), str(tmp),
                           f"{SIZE_KB}k"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ImageError(f"mke2fs -d {identity_dir} failed: {proc.stderr.strip()[-300:]}")
    tmp.replace(out)
    return out
