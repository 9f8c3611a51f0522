"""Snapshots without root or hosts: the decisions (names, which differences refuse a restore), the store
(a half-written snapshot is never listed), the watchdog that resumes paused hosts when the run dies, and a
take/change/restore round on the fake lab. The provider and SSH are faked at their process boundaries
(tests/fakes.py; the snapshot hooks below keep each fake host's state as a JSON file); the database, boot
log, folders and the watchdog's process are real."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from booted.config import Settings
from booted.context import Booted
from booted.environments import load_environments
from booted.errors import ConfigError, ProviderError, StateError
from booted.images.generations import disk_refs, in_use
from booted.providers.lab import Lab
from booted.snapshots import Snapshots, decide
from booted.snapshots.store import Manifest, SavedHost, Store
from booted.state import snapshots as records
from booted.state.warm import set_warm
from tests.conftest import REPO
from tests.fakes import FakeFleet, FakeHost, FakeProvider, World

ENV = """ENVIRONMENTS = {{"lab": {{"provider": "netns", "network": "10.213.203.0/24", "hosts": {{
    "lb01": {{"role": "lb", "service": "lb", "version": "1.0"}},
    "web[01:{last}]": {{"role": "worker", "service": "hello", "version": "1.0"}}}}}}}}
"""


class SnapProvider(FakeProvider):
    """The fake provider with snapshot hooks: a save writes the fake host's state into the folder."""

    snapshot_keeps = "the fake host's state"

    def pause(self, lab: Lab, names: list[str]) -> dict[str, str]:
        self.world.calls.append(f"pause {','.join(names)}")
        return {}

    def resume(self, lab: Lab, names: list[str]) -> dict[str, str]:
        self.world.calls.append(f"resume {','.join(names)}")
        return {}

    def save(self, lab: Lab, name: str, folder: Path) -> list[str]:
        (folder / "host.json").write_text(json.dumps(asdict(self.world.hosts.get(name, FakeHost()))))
        return ["/cache/rootfs-test-1"]

    def restore(self, lab: Lab, name: str, folder: Path) -> None:
        self.world.calls.append(f"restore {name}")
        if name in self.world.fail_start and "crash" in self.world.calls:
            raise KeyboardInterrupt  # the run dies here (as a kill would end it: nothing after runs)
        self.world.hosts[name] = FakeHost(**json.loads((folder / "host.json").read_text()))


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


def make_ctx(settings_env: dict[str, str], tmp_path: Path, world: World, last: str = "02") -> Booted:
    Path(settings_env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(last=last))
    settings = Settings.from_env({**settings_env, "BOOTED_SERVICES": str(REPO / "service"),
                                  "BOOTED_BOOT_TIMEOUT": "2"})
    return Booted(settings, say=lambda line: None, providers={"netns": lambda s: SnapProvider(s, world)},
                  fleets=lambda ctx: FakeFleet(world, tmp_path))


def snapped(settings_env: dict[str, str], tmp_path: Path, world: World) -> tuple[Booted, Snapshots]:
    """The fake lab started, with a snapshot "clean" of it."""
    ctx = make_ctx(settings_env, tmp_path, world)
    assert ctx.runs().start_all().failed() == []
    snaps = ctx.snapshots()
    snaps.take("clean")
    return ctx, snaps


@pytest.mark.parametrize("name", ["clean", "before-1-1", "2026_12_06", "a"])
def test_names_accepted(name: str) -> None:
    assert decide.check_name(name) == name


@pytest.mark.parametrize("name", ["", "Clean", "../x", "a/b", ".hidden", "-x", "x" * 41, "a b", "a.b"])
def test_names_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="snapshot name"):
        decide.check_name(name)


def manifest(**over: object) -> Manifest:
    hosts = [SavedHost("lb01", "lb", "lb", "10.213.203.2", "52:54:0a:d5:cb:02", True, True),
             SavedHost("web01", "worker", "hello", "10.213.203.3", "52:54:0a:d5:cb:03", True, True)]
    base = dict(name="s", env="lab", provider="netns", network="10.213.203.0/24", taken=0.0, pause_s=0.01,
                keeps="", hosts=hosts, defined={"lb01": {"role": "lb", "service": "lb"},
                                                "web01": {"role": "worker", "service": "hello"}},
                records={"releases": [], "pins": [], "held": []})
    return Manifest(**{**base, **over})  # type: ignore[arg-type]


def test_differences_name_what_changed(settings_env: dict[str, str], tmp_path: Path, world: World) -> None:
    path = Path(settings_env["BOOTED_ENVIRONMENTS"])
    path.write_text(ENV.format(last="01"))
    env = load_environments(path)["lab"]
    ctx = make_ctx(settings_env, tmp_path, world, last="01")
    images = {i.name: i for i in ctx.lab().images(["lb01", "web01"])}
    assert decide.differences(manifest(), env, images, {"lb01", "web01"}) == []
    assert decide.differences(manifest(network="10.213.204.0/24", provider="qemu"), env, images,
                              {"lb01", "web01"}) == ["provider: qemu in the snapshot, netns now",
                                                     "network: 10.213.204.0/24 in the snapshot, 10.213.203.0/24 now"]
    more = {**manifest().defined, "web02": {"role": "worker", "service": "hello"}}
    other = {"lb01": {"role": "lb", "service": "lb"}, "web01": {"role": "db", "service": "hello"}}
    assert decide.differences(manifest(defined=more), env, images, {"lb01", "web01"}) == [
        "host web02: in the snapshot, no longer in environments.py"]
    assert decide.differences(manifest(defined=other), env, images, {"lb01", "web01"}) == [
        "host web01: role db in the snapshot, worker now"]
    assert decide.differences(manifest(), env, {"lb01": images["lb01"]}, {"lb01"}) == [
        "host web01: its host image was deleted since the snapshot (image_del)"]
    assert decide.differences(manifest(), env, images, {"lb01"}) == [
        "host web01: its saved state is gone from the snapshot (image_del)"]
    ctx.close()


def test_store_lists_only_complete_snapshots(tmp_path: Path) -> None:
    store = Store(tmp_path, "lab")
    partial = store.partial("s")
    (partial / "hosts" / "web01").mkdir()
    assert store.all() == [] and not store.exists("s")  # a run killed now leaves nothing listed
    store.commit(partial, manifest(golden=["/cache/rootfs-x"]))
    assert [m.name for m in store.all()] == ["s"] and store.load("s") == manifest(golden=["/cache/rootfs-x"])
    assert (store.folder("s") / "golden.ref").read_text() == "/cache/rootfs-x\n"
    store.partial("t")
    assert [g.split("-")[1] for g in store.remove_partials()] == ["t"]
    assert store.saved_of("web01") == [store.folder("s") / "hosts" / "web01"]
    with pytest.raises(StateError, match="has no snapshot 'x' \\(its snapshots: s"):
        store.load("x")
    store.delete("s")
    assert store.all() == [] and list(store.dir.iterdir()) == []


def test_watchdog_resumes_when_the_run_is_killed(tmp_path: Path) -> None:
    mark = tmp_path / "resumed"
    code = ("import os, signal, sys; from booted.snapshots.take import watchdog\n"
            f"with watchdog(['touch', {str(mark)!r}]):\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False)
    assert proc.returncode == -9
    for _ in range(200):  # the watchdog runs in its own session: wait for it (bounded)
        if mark.exists():
            break
        time.sleep(0.05)
    assert mark.exists()


def test_take_change_restore_on_the_fake_lab(settings_env: dict[str, str], tmp_path: Path, world: World) -> None:
    ctx = make_ctx(settings_env, tmp_path, world)
    assert ctx.runs().start_all().failed() == []
    snaps = ctx.snapshots()
    taken = snaps.take("clean")
    assert world.calls[-2:] == ["pause lb01,web01,web02", "resume lb01,web01,web02"]
    assert taken.ran() == {"lb01": "lb 1.0", "web01": "hello 1.0", "web02": "hello 1.0"}
    assert records.paused(ctx.inventory, "lab") == {}
    assert [e["kind"] for e in records.events(ctx.inventory, "lab")] == ["snapshot"]
    with pytest.raises(StateError, match="already has a snapshot 'clean'"):
        snaps.take("clean")

    # the lab changes: web01 runs 1.1 (as the database and the host say), web02 is stopped by the user
    ctx.inventory.record_release("web01", "hello", "1.1")
    world.hosts["web01"].current = "hello-1.1-x"
    ctx.lab().stop(["web02"])
    assert ctx.inventory.image("web02").held == 1  # type: ignore[union-attr]

    _, results = snaps.restore("clean")
    assert [r.ok for r in results] == [True, True, True], results
    assert ctx.inventory.releases() == {("lb01", "lb"): "1.0", ("web01", "hello"): "1.0", ("web02", "hello"): "1.0"}
    assert world.hosts["web01"].current != "hello-1.1-x"
    assert sorted(world.running) == ["lb01", "web01", "web02"]
    assert {i.name: i.held for i in ctx.inventory.images("lab")} == {"lb01": 0, "web01": 0, "web02": 0}
    assert records.unfinished_restore(ctx.inventory, "lab") is None
    ctx.close()


def test_the_monitors_warm_hosts_stay_paused(settings_env: dict[str, str], tmp_path: Path, world: World) -> None:
    """A warm host (the monitor's paused spare) is saved but neither paused again nor woken by a snapshot."""
    ctx = make_ctx(settings_env, tmp_path, world)
    assert ctx.runs().start_all().failed() == []
    set_warm(ctx.inventory, "lab", {"web02": world.running["web02"]})
    taken = ctx.snapshots().take("warm")
    assert world.calls[-2:] == ["pause lb01,web01", "resume lb01,web01"]
    assert [h.name for h in taken.hosts if h.saved] == ["lb01", "web01", "web02"]
    ctx.close()


def test_a_restore_that_does_not_match_touches_nothing(settings_env: dict[str, str], tmp_path: Path,
                                                       world: World) -> None:
    ctx = make_ctx(settings_env, tmp_path, world)
    ctx.runs().start_all()
    ctx.snapshots().take("clean")
    ctx.close()
    calls = len(world.calls)
    ctx = make_ctx(settings_env, tmp_path, world, last="03")
    with pytest.raises(ConfigError, match="host web03: in environments.py, not in the snapshot"):
        ctx.snapshots().restore("clean")
    assert world.calls[calls:] == []  # nothing stopped, nothing restored
    ctx.close()


def test_a_restore_that_dies_half_way_is_finished_by_a_rerun(settings_env: dict[str, str], tmp_path: Path,
                                                              world: World) -> None:
    ctx, snaps = snapped(settings_env, tmp_path, world)
    ctx.inventory.record_release("web01", "hello", "1.1")
    world.fail_start.add("web02")
    world.calls.append("crash")
    with pytest.raises(KeyboardInterrupt):
        snaps.restore("clean")  # dies after lb01 and web01 got their state back, before web02 and the boot
    world.fail_start.clear()
    assert snaps.unfinished_restore() is not None and snaps.unfinished_restore()[1:] == ("clean", "disks")
    assert world.running == {}  # stopped, not booted yet
    _, results = snaps.restore("clean")
    assert all(r.ok for r in results) and sorted(world.running) == ["lb01", "web01", "web02"]
    assert ctx.inventory.releases()[("web01", "hello")] == "1.0"
    assert snaps.unfinished_restore() is None
    ctx.close()


def test_image_del_frees_the_space_and_the_snapshot_says_so(settings_env: dict[str, str], tmp_path: Path,
                                                            world: World) -> None:
    ctx, snaps = snapped(settings_env, tmp_path, world)
    assert snaps.store.saved_of("web02")
    result = ctx.delete_image("web02")
    assert result.ok and result.detail.endswith("its state left 1 snapshot(s)")
    assert snaps.store.saved_of("web02") == []
    ctx.runs().start_all()  # web02 comes back with a new identity: the snapshot no longer fits
    with pytest.raises(ConfigError, match="host web02: its saved state is gone from the snapshot"):
        snaps.restore("clean")
    ctx.close()


def test_a_snapshot_keeps_its_golden_generation(tmp_path: Path) -> None:
    cache, state = tmp_path / "cache", tmp_path / "state"
    store = Store(state, "lab")
    store.commit(store.partial("s"), manifest(golden=[str(cache / "rootfs-k-20261201000000")]))
    refs = disk_refs([state])
    assert in_use(cache, "rootfs-k-20261201000000", refs) == (
        f"snapshot {store.folder('s')} uses {cache / 'rootfs-k-20261201000000'}")
    assert in_use(cache, "rootfs-k-20261202000000", refs) is None
    store.delete("s")
    assert disk_refs([state]) == []


def test_a_provider_without_snapshots_says_so(settings_env: dict[str, str], tmp_path: Path, world: World) -> None:
    Path(settings_env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(last="01"))
    ctx = Booted(Settings.from_env({**settings_env, "BOOTED_SERVICES": str(REPO / "service")}), say=lambda _: None,
                 providers={"netns": lambda s: FakeProvider(s, world)}, fleets=lambda c: FakeFleet(world, tmp_path))
    with pytest.raises(ProviderError, match="cannot take snapshots yet"):
        ctx.snapshots().take("s")
    assert Store(ctx.settings.state_dir, "lab").all() == []
    ctx.close()


def test_a_vm_is_saved_with_the_command_line_its_host_was_started_with() -> None:
    """A VM that was itself continued from a snapshot runs with `-incoming fd:N`: that is not saved (the next
    restore adds its own); /proc's empty last word goes too, an empty word inside stays."""
    from booted.providers.qemu_migrate import as_started as _as_started
    argv = ["qemu-system-x86_64", "-name", "booted-x-web01", "-append", "", "-m", "256", "-incoming", "fd:7", ""]
    assert _as_started(argv) == ["qemu-system-x86_64", "-name", "booted-x-web01", "-append", "", "-m", "256"]
    assert _as_started(["qemu", "-incoming", "defer", "-incoming", "fd:3", "-m", "64"]) == ["qemu", "-m", "64"]
