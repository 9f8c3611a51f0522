"""The golden image: a patched Debian rootfs from Debian packages plus booted's guest layer, cached by inputs.

Two cached parts make one image, so that editing the boot script does not re-run the bootstrap:
- rootfs-<key>-<built>: `mmdebstrap` (or `debootstrap`) `--variant=minbase` with the packages below from
  bookworm, bookworm-updates and bookworm-security, upgraded, stripped (slow, ~30 s);
- layer-<key>: booted's guest files (/usr/lib/booted/*, plus /etc/inittab and the busybox-init link
  /usr/lib/booted/init that qemu hosts boot with), copied from booted/guest (instant).
Providers stack them: netns as overlay lowerdirs (layer over rootfs), qemu packs both into one disk.
The rootfs is rebuilt as a new generation when its suites move on (asked at most daily; generations.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from booted.config import Settings
from booted.errors import ImageError
from booted.images import generations as gen
from booted.images.rootfs import PACKAGES as PACKAGES
from booted.images.rootfs import RECIPE, build_rootfs
from booted.images.suites import SUITE, Fetch, Mirrors, built_state, http_get, mirror_state, native_arch
from booted.images.suites import default_mirror as default_mirror
from booted.rules import DEBIAN_PACKAGE
from booted.state.locks import hold

GUEST_DIR = Path(__file__).resolve().parent.parent / "guest"
# Units a systemd image never starts: the package's sshd (all addresses, no host key; booted.service runs
# sshd on the lab IP), e2scrub (needs LVM), gettys (no udev in the image: they would wait 90 s for the tty),
# Debian's haproxy (the lb service runs its own HAProxy, supervised by booted, with its own config).
MASKED_UNITS = ("ssh.service", "ssh.socket", "e2scrub_reap.service", "serial-getty@.service", "getty@.service",
                "haproxy.service")
LAYER_RECIPE = "layer-v2"  # bump when _build_layer changes, to re-key the cache


@dataclass(frozen=True)
class GoldenImage:
    """A built golden image: `lowerdirs` top-first, as overlayfs wants them."""

    key: str
    rootfs: Path
    layer: Path

    @property
    def lowerdirs(self) -> list[Path]:
        return [self.layer, self.rootfs]


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def rootfs_key(mirrors: Mirrors, extra: tuple[str, ...] = ()) -> str:
    """What one golden image is made of (its generations share it): suites, mirrors, packages, recipe."""
    return _digest(SUITE, mirrors.main, mirrors.security, " ".join(PACKAGES), " ".join(sorted(set(extra))), RECIPE)


def layer_key() -> str:
    files = sorted(p for p in GUEST_DIR.rglob("*") if p.is_file())
    return _digest(LAYER_RECIPE, " ".join(MASKED_UNITS),
                   *(f"{p.relative_to(GUEST_DIR)}:{p.read_bytes().hex()}" for p in files))


def _rootfs(cache_dir: Path, record: gen.Record | None) -> Path | None:
    """The record's current generation, if it is complete."""
    rootfs = cache_dir / record.current if record else None
    return rootfs if rootfs and (rootfs / ".booted-complete").exists() else None


def _image(cache_dir: Path, rootfs: Path, progress: Callable[[str], None], locked: bool = False) -> GoldenImage:
    """`rootfs` with today's layer (built when missing, one builder at a time)."""
    layer = cache_dir / f"layer-{layer_key()}"
    if not (layer / ".booted-complete").exists():
        if locked:
            _build_layer(layer)
        else:
            with hold(cache_dir / "build.lock", "building the golden image's layer", 3600, progress):
                if not (layer / ".booted-complete").exists():
                    _build_layer(layer)
    return GoldenImage(f"{rootfs.name[7:]}-{layer.name[6:]}", rootfs, layer)


def _packages(extra: tuple[str, ...]) -> tuple[str, ...]:
    extra = tuple(sorted(set(extra)))
    bad = [p for p in extra if not DEBIAN_PACKAGE.match(p)]
    if bad:
        raise ImageError(f"package name(s) {', '.join(map(repr, bad))}: Debian package names are lowercase "
                         "letters, digits and + . -")
    return extra


def ensure_golden(settings: Settings, progress: Callable[[str], None], extra: tuple[str, ...] = (),
                  refresh: bool = False, fetch: Fetch = http_get) -> GoldenImage:
    """The golden image with `extra` packages, built on first use (30 s to a minute, more with packages), then
    reused from the cache by every environment that asks for the same package set. At most daily it asks the
    mirrors whether its suites moved on, and builds a new generation if they did (unreachable mirrors: the
    cached image, with a warning); `refresh` builds a new generation now."""
    extra, mirrors, cache = _packages(extra), Mirrors.of(settings), settings.cache_dir
    path = gen.Record.path(cache, rootfs_key(mirrors, extra))
    record, now = gen.Record.load(path), time.time()
    rootfs = _rootfs(cache, record)
    if settings.is_root:
        cache.mkdir(parents=True, exist_ok=True)
        gen.register_user(cache, settings.state_dir)
    if rootfs and record and not refresh:
        if not gen.check_due(record, now):
            return _image(cache, rootfs, progress)
        built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(record.built))
        try:
            moved = gen.moved_on(record.suites, mirror_state(mirrors, native_arch(), fetch))
        except OSError as exc:
            progress(f"warning: could not ask the mirrors whether {SUITE}'s updates moved on ({exc}): "
                     f"using the golden image built {built}")
            return _image(cache, rootfs, progress)
        if not moved or not settings.is_root:
            if moved:
                progress(f"warning: {', '.join(moved)} moved on since the golden image was built ({built}); "
                         "rebuilding it needs root: run 'fab image_golden' as root")
            _checked(settings, path, record.current, now, progress)
            return _image(cache, rootfs, progress)
        progress(f"{', '.join(moved)} moved on since the golden image was built ({built}): building a new one")
    seen = record.current if record else None
    with hold(cache / "build.lock", "building the golden image", 3600, progress):
        latest = gen.Record.load(path)
        rootfs = _rootfs(cache, latest)
        if rootfs and latest and latest.current != seen:
            return _image(cache, rootfs, progress, locked=True)  # another run built one while this one waited
        return _build_generation(settings, progress, mirrors, extra)


def _checked(settings: Settings, path: Path, current: str, now: float, progress: Callable[[str], None]) -> None:
    """Record that the mirrors were asked (unless another run changed the record meanwhile), then prune."""
    if not settings.is_root:
        return
    with hold(path.with_suffix(".lock"), "recording the golden image", 60, progress):
        record = gen.Record.load(path)
        if record is not None and record.current == current:
            record.checked = now
            record.save(path)
        _prune(settings, progress)


def _prune(settings: Settings, progress: Callable[[str], None]) -> None:
    refs = gen.process_refs() + gen.disk_refs(gen.live_users(settings.cache_dir))
    for line in gen.prune(settings.cache_dir, time.time(), refs):
        progress(line)


def _build_generation(settings: Settings, progress: Callable[[str], None], mirrors: Mirrors,
                      extra: tuple[str, ...]) -> GoldenImage:
    """Build a new generation of the rootfs beside the others (caller holds the build lock), make it current,
    remove the older ones nothing uses."""
    cache_dir, key, now = settings.cache_dir, rootfs_key(mirrors, extra), time.time()
    rootfs = cache_dir / gen.generation_name(key, now)
    build_rootfs(settings, rootfs, mirrors, progress, extra)
    image = _image(cache_dir, rootfs, progress, locked=True)
    path = gen.Record.path(cache_dir, key)
    suites = built_state(rootfs, native_arch())
    with hold(path.with_suffix(".lock"), "recording the golden image", 60, progress):
        latest = gen.Record.load(path)
        new = latest.replaced_by(rootfs.name, suites, now) if latest else gen.Record(rootfs.name, suites, now, now)
        new.save(path)
        _prune(settings, progress)
    return image


def describe(settings: Settings, image: GoldenImage) -> list[str]:
    """What `fab image_golden` says about an image: sources, build and check times, older generations."""
    record = gen.Record.load(gen.Record.path(settings.cache_dir, image.rootfs.name[7:].rsplit("-", 1)[0]))
    sources = (image.rootfs / "etc/apt/sources.list").read_text(errors="replace").splitlines()
    lines = [f"golden image {image.key}", f"  rootfs {image.rootfs}", f"  layer  {image.layer}",
             *(f"  apt    {line}" for line in sources if line.startswith("deb"))]
    if record is not None:
        utc = "%Y-%m-%d %H:%M UTC"
        lines += [f"  built  {time.strftime(utc, time.gmtime(record.built))}; mirrors last checked "
                  f"{time.strftime(utc, time.gmtime(record.checked))} (again after a day; --refresh: now)"]
        lines += [f"  older  {name} (kept until no host uses it)" for name in sorted(record.superseded)]
    return lines


def _build_layer(layer: Path) -> None:
    tmp = layer.with_name(layer.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    target = tmp / "usr/lib/booted"
    target.mkdir(parents=True)
    for src in sorted(GUEST_DIR.iterdir()):
        shutil.copy2(src, target / src.name)
        os.chmod(target / src.name, 0o755)
    # qemu boots busybox init (init=/usr/lib/booted/init) with booted's inittab; netns never runs init
    (tmp / "etc").mkdir()
    shutil.copy2(GUEST_DIR / "inittab", tmp / "etc" / "inittab")
    os.chmod(tmp / "etc" / "inittab", 0o644)
    (target / "init").symlink_to("/bin/busybox")
    # systemd images run the boot script as a unit; the package's own sshd (all addresses, no host key) never
    units = tmp / "etc/systemd/system"
    (units / "multi-user.target.wants").mkdir(parents=True)
    shutil.copy2(GUEST_DIR / "booted.service", units / "booted.service")
    os.chmod(units / "booted.service", 0o644)
    (units / "multi-user.target.wants" / "booted.service").symlink_to("/etc/systemd/system/booted.service")
    for unit in MASKED_UNITS:
        (units / unit).symlink_to("/dev/null")
    (tmp / ".booted-complete").write_text("ok\n")
    shutil.rmtree(layer, ignore_errors=True)
    tmp.rename(layer)
