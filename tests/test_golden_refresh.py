"""The golden image's sources and refresh decisions, without network or root.

The mirrors are faked at the process boundary: `fetch` (the HTTP GET of a suite's InRelease) is a function
serving recorded InRelease files (tests/data/inrelease/), whose package-list hash a test can change to make a
suite "move on", or that raises OSError (the mirror is unreachable). The build itself (mmdebstrap in a
chroot) is replaced by one that makes a rootfs holding those InRelease files in its apt lists, as a real build
leaves them; the clock is a variable.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from booted.config import Settings
from booted.errors import ConfigError
from booted.images import generations as gen
from booted.images import golden
from booted.images.rootfs import bootstrap_command
from booted.images.suites import (
    Mirrors,
    built_state,
    default_mirror,
    default_security_mirror,
    mirror_state,
    packages_hash,
)

DATA = Path(__file__).parent / "data" / "inrelease"
MAIN_SHA = "515e692f2c4121c6fcec444ef100cc18f79a991910615f3a88c8b7becfc94d2f"
SECURITY_SHA = "b85a70a2faeb81845da9ed4a22a2f413d3c69371625f1fbbda7615428a4c977b"
DEB822 = """Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


class FakeMirror:
    """The three suites' InRelease files as a mirror serves them (recorded), by URL."""

    def __init__(self) -> None:
        self.files = {p.stem: p.read_text() for p in DATA.glob("*.InRelease")}
        self.asked: list[str] = []
        self.down = False

    def fetch(self, url: str) -> bytes:
        self.asked.append(url)
        if self.down:
            raise OSError("Connection refused")
        suite = url.split("/dists/")[1].split("/")[0]
        return self.files[suite].encode()

    def publish(self, suite: str, old: str, new: str) -> None:
        """A new package list in `suite` (its hash changes)."""
        self.files[suite] = self.files[suite].replace(old, new)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Settings as root in a private cache, a fake mirror, a fake clock and a fake build."""
    settings = Settings.from_env({"BOOTED_STATE_DIR": str(tmp_path / "state"), "PATH": os.environ["PATH"],
                                  "BOOTED_MIRROR": "http://deb.debian.org/debian",
                                  "BOOTED_SECURITY_MIRROR": "http://deb.debian.org/debian-security"})
    settings = dataclasses.replace(settings, is_root=True)
    mirror, clock, builds = FakeMirror(), [1_800_000_000.0], []

    def build(settings: Settings, rootfs: Path, mirrors: Mirrors, progress: object, extra: tuple[str, ...]) -> None:
        lists = rootfs / "var/lib/apt/lists"
        lists.mkdir(parents=True)
        for suite, text in mirror.files.items():
            (lists / f"deb.debian.org_{suite}_InRelease").write_text(text)
        (rootfs / ".booted-complete").write_text("ok\n")
        builds.append(rootfs.name)

    monkeypatch.setattr(golden, "build_rootfs", build)
    monkeypatch.setattr(golden, "native_arch", lambda: "amd64")
    monkeypatch.setattr(golden.time, "time", lambda: clock[0])
    monkeypatch.setattr(gen, "process_refs", lambda: [])
    return {"settings": settings, "mirror": mirror, "clock": clock, "builds": builds}


def ensure(world: dict[str, object], said: list[str] | None = None, **kw: object) -> golden.GoldenImage:
    mirror = world["mirror"]
    assert isinstance(mirror, FakeMirror)
    return golden.ensure_golden(world["settings"], (said if said is not None else []).append,  # type: ignore[arg-type]
                                fetch=mirror.fetch, **kw)  # type: ignore[arg-type]


def test_mirrors_come_from_apt_sources_or_the_settings(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert default_mirror(tmp_path) == "http://mirror.example/debian"
    assert default_security_mirror(tmp_path) == "http://mirror.example/debian-security"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://m.example/debian/ bookworm main\n")
    assert default_mirror(tmp_path) == "http://m.example/debian"
    assert default_security_mirror(tmp_path) == "http://deb.debian.org/debian-security"  # Debian's own

    settings = Settings.from_env({"BOOTED_SECURITY_MIRROR": "http://sec.example/debian-security/",
                                  "PATH": "/usr/bin"})
    mirrors = Mirrors.of(settings, tmp_path)
    assert mirrors.sources_list().splitlines() == [
        "deb http://m.example/debian bookworm main", "deb http://m.example/debian bookworm-updates main",
        "deb http://sec.example/debian-security bookworm-security main"]
    assert mirrors.inrelease_urls()["bookworm-security"] == \
        "http://sec.example/debian-security/dists/bookworm-security/InRelease"
    for bad in ("ftp://x/debian", "http://x/debian\ndeb http://evil/ bookworm main", "http://x /debian"):
        with pytest.raises(ConfigError, match="BOOTED_SECURITY_MIRROR"):
            Settings.from_env({"BOOTED_SECURITY_MIRROR": bad, "PATH": "/usr/bin"})
    assert Settings.from_env({"BOOTED_SECURITY_MIRROR": "http://s/ds", "PATH": "/x"}).daemon_env()[
        "BOOTED_SECURITY_MIRROR"] == "http://s/ds"


def test_mmdebstrap_bootstraps_from_all_three_suites() -> None:
    mirrors = Mirrors("http://m/debian", "http://m/debian-security")
    cmd = bootstrap_command("mmdebstrap", Path("/t"), mirrors)
    assert cmd[-3:] == mirrors.source_lines() and "--variant=minbase" in cmd and "--skip=cleanup/apt/lists" in cmd
    unpatched = bootstrap_command("mmdebstrap", Path("/t"), mirrors, patched=False)
    assert unpatched[-1] == "deb http://m/debian bookworm main" and "bookworm-security" not in " ".join(unpatched)
    assert bootstrap_command("debootstrap", Path("/t"), mirrors)[-3:] == ["bookworm", "/t", "http://m/debian"]


def test_package_list_hash_from_recorded_inrelease(tmp_path: Path) -> None:
    main = (DATA / "bookworm.InRelease").read_text()
    assert packages_hash(main, "amd64") == MAIN_SHA  # the SHA256 section, not MD5Sum's line before it
    assert packages_hash((DATA / "bookworm-security.InRelease").read_text(), "amd64") == SECURITY_SHA
    assert packages_hash(main, "riscv64") is None
    mirror = FakeMirror()
    state = mirror_state(Mirrors("http://deb.debian.org/debian", "http://deb.debian.org/debian-security"), "amd64",
                         mirror.fetch)
    assert state["bookworm"] == MAIN_SHA and state["bookworm-security"] == SECURITY_SHA and len(state) == 3
    assert mirror.asked[2] == "http://deb.debian.org/debian-security/dists/bookworm-security/InRelease"
    portal = FakeMirror()
    portal.files["bookworm-updates"] = "<html>Please log in</html>"
    with pytest.raises(OSError, match="not bookworm-updates's InRelease"):
        mirror_state(Mirrors("http://a/debian", "http://a/debian-security"), "amd64", portal.fetch)
    lists = tmp_path / "var/lib/apt/lists"
    lists.mkdir(parents=True)
    (lists / "x_dists_bookworm-security_InRelease").write_text(mirror.files["bookworm-security"])
    assert built_state(tmp_path, "amd64") == {"bookworm-security": SECURITY_SHA}


def test_checked_at_most_daily_rebuilt_when_a_suite_moves_on(world: dict[str, object]) -> None:
    mirror, clock, builds = world["mirror"], world["clock"], world["builds"]
    assert isinstance(mirror, FakeMirror) and isinstance(clock, list) and isinstance(builds, list)
    first = ensure(world)
    assert builds == [first.rootfs.name] and first.rootfs.name.startswith("rootfs-")
    record = gen.Record.load(gen.Record.path(first.rootfs.parent, first.rootfs.name[7:].rsplit("-", 1)[0]))
    assert record is not None and record.current == first.rootfs.name
    assert record.suites["bookworm-security"] == SECURITY_SHA

    mirror.asked.clear()
    clock[0] += 86400 - 60  # within a day: the mirrors are not asked
    assert ensure(world) == first and mirror.asked == []
    clock[0] += 120  # a day since the build: asked, nothing moved, no build
    assert ensure(world) == first and len(mirror.asked) == 3 and len(builds) == 1
    clock[0] += 3600
    mirror.asked.clear()
    assert ensure(world) == first and mirror.asked == []  # the check counted: the next is a day later

    mirror.publish("bookworm-security", SECURITY_SHA, "0" * 64)  # a security update
    clock[0] += 86400
    said: list[str] = []
    second = ensure(world, said)
    assert second.rootfs != first.rootfs and len(builds) == 2
    assert any("bookworm-security moved on" in line for line in said), said
    assert first.rootfs.exists()  # replaced a moment ago: kept
    assert ensure(world) == second and len(builds) == 2


def test_offline_keeps_the_cached_image_with_a_warning(world: dict[str, object]) -> None:
    mirror, clock, builds = world["mirror"], world["clock"], world["builds"]
    assert isinstance(mirror, FakeMirror) and isinstance(clock, list) and isinstance(builds, list)
    first = ensure(world)
    mirror.down = True
    clock[0] += 2 * 86400
    said: list[str] = []
    assert ensure(world, said) == first and len(builds) == 1
    assert len(said) == 1 and said[0].startswith("warning: could not ask the mirrors"), said
    assert "Connection refused" in said[0]
    said.clear()
    assert ensure(world, said) == first and said  # still due: asked (and warned) again next time


def test_refresh_builds_now_and_a_non_root_run_never_builds(world: dict[str, object]) -> None:
    mirror, clock, builds = world["mirror"], world["clock"], world["builds"]
    assert isinstance(mirror, FakeMirror) and isinstance(clock, list) and isinstance(builds, list)
    first = ensure(world)
    clock[0] += 5
    second = ensure(world, refresh=True)
    assert second.rootfs != first.rootfs and len(builds) == 2
    mirror.publish("bookworm-updates", "80a1f6ee524222c49f230fc5700d00f946d0a47eb5258180106dd03df126e16a", "1" * 64)
    clock[0] += 86400
    settings = world["settings"]
    assert isinstance(settings, Settings)
    said: list[str] = []
    image = golden.ensure_golden(dataclasses.replace(settings, is_root=False), said.append, fetch=mirror.fetch)
    assert image == second and len(builds) == 2 and "rebuilding it needs root" in said[0]


def qcow2_over(path: Path, backing: str) -> None:
    """A qcow2 header naming `backing` (what qemu-img create -b writes; only the fields booted reads)."""
    name = backing.encode()
    head = b"QFI\xfb" + (3).to_bytes(4, "big") + (104).to_bytes(8, "big") + len(name).to_bytes(4, "big")
    path.write_bytes(head.ljust(104, b"\0") + name)


def test_prune_removes_only_what_nothing_uses(tmp_path: Path) -> None:
    cache, state = tmp_path / "cache", tmp_path / "state"
    names = [f"rootfs-abc-2026120{i}000000" for i in range(1, 5)]
    for name in names:
        (cache / name).mkdir(parents=True)
        (cache / f"disk-{name[7:]}-layer1.img").write_text("disk")
    record = gen.Record(names[3], {}, 1000.0, 1000.0, {names[0]: 100.0, names[1]: 100.0, names[2]: 950.0})
    record.save(cache / "golden-abc.json")
    host = state / "labs" / "lab" / "hosts" / "web01"
    host.mkdir(parents=True)
    qcow2_over(host / "disk.qcow2", str(cache / f"disk-{names[1][7:]}-layer1.img"))  # a stopped VM's disk
    refs = [("pid 42", f"{cache / 'layer-1'}:{cache / names[0]}")]  # a running netns host's overlay
    refs += gen.disk_refs([state])
    said = gen.prune(cache, 1000.0, refs)
    assert all((cache / n).exists() for n in names[:3])
    assert [line.split(" kept: ")[1] for line in said] == [
        f"pid 42 uses {cache / 'layer-1'}:{cache / names[0]}",
        f"disk {host / 'disk.qcow2'} uses {cache / f'disk-{names[1][7:]}-layer1.img'}", "replaced 0 min ago"]
    shutil.rmtree(state)
    said = gen.prune(cache, 2000.0, [])
    assert not any((cache / n).exists() or (cache / f"disk-{n[7:]}-layer1.img").exists() for n in names[:3])
    assert (cache / names[3]).exists() and (cache / f"disk-{names[3][7:]}-layer1.img").exists()
    assert len(said) == 3 and all("removed" in line for line in said)
    assert gen.Record.load(cache / "golden-abc.json") == dataclasses.replace(record, superseded={})


def test_state_directories_that_used_the_cache(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    for state in (one, two, one):
        gen.register_user(tmp_path, state)
    assert gen.users(tmp_path) == [one, two]
    two.rmdir()
    assert gen.live_users(tmp_path) == [one] and gen.users(tmp_path) == [one]


def test_what_refers_to_an_image(tmp_path: Path) -> None:
    held = tmp_path / "disk-x.img"
    held.write_text("")
    with held.open():
        assert (f"pid {os.getpid()}", str(held)) in gen.process_refs()
    if shutil.which("qemu-img"):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(held), "-F", "raw",
                        str(tmp_path / "h.qcow2")], check=True)
        assert gen.qcow2_backing(tmp_path / "h.qcow2") == str(held)
    qcow2_over(tmp_path / "rel.qcow2", "disk-x.img")  # a relative backing name is relative to the disk
    assert gen.qcow2_backing(tmp_path / "rel.qcow2") == str(held)
    (tmp_path / "raw.qcow2").write_text("not a qcow2")
    assert gen.qcow2_backing(tmp_path / "raw.qcow2") is None
    assert gen.check_due(None, 0) and gen.check_due(gen.Record("r", {}, 10.0, 10.0), 5.0)  # the clock went back
