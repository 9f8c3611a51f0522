"""What a VM host boots from: a Debian cloud kernel (images/kernel.py), a tiny initramfs
(images/initramfs.py) and the golden image as a disk, packed here.

All three are cached in the cache dir, keyed by their inputs; the disk is disk-<golden key>.img, the golden
image (layer over rootfs) packed by `mkfs.ext4 -d` (no loop mount). Every build writes a .tmp and renames
it, so a crashed build is redone, never used.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from booted.errors import ImageError
from booted.images.building import SYSTEM_PATH, Progress, need_tools, tool_path
from booted.images.golden import GoldenImage
from booted.images.initramfs import build_initramfs
from booted.images.kernel import Kernel, fetch_kernel
from booted.state.locks import hold


@dataclass(frozen=True)
class Assets:
    kernel: Kernel
    initramfs: Path
    disk: Path


def ensure_assets(cache_dir: Path, golden: GoldenImage, progress: Progress, path: str = SYSTEM_PATH) -> Assets:
    """Kernel, initramfs and golden disk for `golden`, each built only when missing (one builder at a time)."""
    with hold(cache_dir / "build.lock", "building the VM disk assets", 3600, progress):
        kernel = fetch_kernel(cache_dir, progress, path)
        busybox = golden.rootfs / "usr" / "bin" / "busybox"
        if not busybox.exists():
            busybox = golden.rootfs / "bin" / "busybox"
        initramfs = build_initramfs(cache_dir, kernel, busybox, path)
        return Assets(kernel, initramfs, golden_disk(cache_dir, golden, progress, path))


def _size_for(rootfs: Path) -> int:
    """Apparent size of the tree, doubled plus 512 MiB of room, at least 1 GiB (the file is sparse)."""
    proc = subprocess.run(["du", "-sb", str(rootfs)], capture_output=True, text=True, check=False)
    used = int(proc.stdout.split()[0]) if proc.returncode == 0 and proc.stdout else 512 << 20
    return max(1 << 30, (2 * used + (512 << 20) + (1 << 20) - 1) // (1 << 20) * (1 << 20))


def golden_disk(cache_dir: Path, golden: GoldenImage, progress: Progress | None = None,
                path: str = SYSTEM_PATH) -> Path:
    """disk-<golden key>.img: the golden image's layer over its rootfs as one ext4 raw disk, built once.

    The rootfs is hard-linked into a staging dir (same filesystem as the cache: instant, nothing copied),
    the layer copied over it with --remove-destination (replaces links, never the rootfs' files), then
    `mkfs.ext4 -d` packs the staging dir.
    """
    say = progress or (lambda line: None)
    out = cache_dir / f"disk-{golden.key}.img"
    if out.exists():
        return out
    need_tools(path, "mkfs.ext4", "cp")
    start = time.monotonic()
    say(f"packing the golden image into a disk: {out.name}")
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    stage = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".stage-"))
    try:
        link = subprocess.run(["cp", "-al", f"{golden.rootfs}/.", str(stage)], capture_output=True, text=True,
                              check=False)
        if link.returncode != 0:  # another filesystem: a real copy
            shutil.rmtree(stage)
            stage.mkdir()
            subprocess.run(["cp", "-a", f"{golden.rootfs}/.", str(stage)], check=True)
        subprocess.run(["cp", "-a", "--remove-destination", f"{golden.layer}/.", str(stage)], check=True)
        (stage / ".booted-complete").unlink(missing_ok=True)
        size = _size_for(golden.rootfs)
        mkfs = subprocess.run([tool_path("mkfs.ext4", path), "-q", "-F", "-L", "root",
                               "-E", "lazy_itable_init=0,lazy_journal_init=0",
                               "-d", str(stage), str(tmp), str(size // 1024) + "k"],
                              capture_output=True, text=True, check=False)
        if mkfs.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise ImageError(f"mkfs.ext4 -d {stage} failed: {mkfs.stderr.strip()[-400:]}")
        tmp.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    say(f"[{time.monotonic() - start:5.1f}s] disk image ready ({size >> 20} MiB, sparse)")
    return out
