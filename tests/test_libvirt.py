"""The libvirt provider's parts that need no VM: placement across hypervisors (pure), the environment keys
(hypervisors, uplink, a host's hypervisor) with their messages, and the virsh runner against real virsh
(libvirt's test driver in-process; a TCP URI on 127.0.0.1 where nothing listens for a daemon that is down)."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from booted.environments import load_environments
from booted.errors import ConfigError, ProviderError
from booted.providers import libvirt_snapshot as snap
from booted.providers.hypervisors import Capacity, parse_hypervisors, place
from booted.providers.lab import Lab
from booted.providers.libvirt_hypervisors import vcpus_in_use
from booted.providers.libvirt_options import LibvirtOptions
from booted.providers.libvirt_store import disk_volumes, spare_disk, working_disk
from booted.providers.virsh import HypervisorDown, Virsh, VirshError

BIG = Capacity(free_mb=8000, cpus=2, vcpus_used=0)


def test_hosts_spread_by_free_memory_counting_what_this_run_placed() -> None:
    caps = {"a": Capacity(4000, 2, 0), "b": Capacity(3000, 2, 0)}
    placement, errors = place([("w1", 512, 1), ("w2", 512, 1), ("w3", 512, 1), ("w4", 512, 1)], caps, {}, {}, {})
    assert errors == {}
    # most free memory wins, minus what this run put there: a 4000 -> 3488 -> 2976, b 3000 -> 2488, a again
    assert placement == {"w1": "a", "w2": "a", "w3": "b", "w4": "a"}


def test_ties_go_to_the_first_listed_and_vcpus_are_a_filter() -> None:
    caps = {"a": Capacity(4000, 1, 15), "b": Capacity(4000, 1, 0)}
    placement, _ = place([("w1", 100, 2)], caps, {}, {}, {})
    assert placement == {"w1": "b"}  # a would exceed 16 vCPUs per CPU (Nova's default ratio)
    assert place([("w1", 100, 1)], {"a": BIG, "b": BIG}, {}, {}, {})[0] == {"w1": "a"}


def test_pins_recorded_placement_and_down_hypervisors() -> None:
    caps: dict[str, Capacity | None] = {"a": BIG, "b": BIG, "c": None}
    down = {"c": "Connection refused"}
    placement, errors = place([("w1", 256, 1), ("w2", 256, 1), ("w3", 256, 1), ("w4", 256, 1), ("w5", 256, 1)],
                              caps, {"w2": "b", "w4": "a"}, {"w1": "b", "w3": "c", "w4": "b"}, down)
    assert placement == {"w1": "b", "w2": "b", "w5": "a"}  # w5 avoids b (2 hosts there now) and the down c
    assert errors["w3"] == "hypervisor c is down: Connection refused"
    assert "pinned to hypervisor b but its disk is on a" in errors["w4"] and "fab image_del w4" in errors["w4"]


def test_vcpus_in_use_from_domstats() -> None:
    text = ("Domain: 'booted-abc-web01'\n  vcpu.current=2\n  vcpu.maximum=2\n  vcpu.0.state=1\n\n"
            "Domain: 'someone-else'\n  vcpu.current=1\n  vcpu.maximum=4\n")
    assert vcpus_in_use(text) == 3 and vcpus_in_use("") == 0  # every running domain counts, booted's or not


def test_no_room_says_what_each_hypervisor_has() -> None:
    _, errors = place([("w1", 4096, 1)], {"a": Capacity(1000, 2, 3), "b": None}, {}, {}, {"b": "EOF"})
    assert errors["w1"] == ("no hypervisor has room for 4096 MiB and 1 vCPU(s) (a: 1000 MiB free, 3/32 vCPUs; "
                            "b: down (EOF))")


@pytest.mark.parametrize(("raw", "words"), [
    ([], "non-empty list"),
    (["http://x/system"], "a libvirt system URI"),
    (["qemu:///session"], "a libvirt system URI"),
    (["qemu+ssh://root@hv2/system"], "another machine: give 'bridge'"),
    ([{"uri": "qemu:///system", "bridge": "br0"}], "is this machine"),
    ([{"uri": "qemu+ssh://hv2/system", "bridge": "br0; rm -rf /"}], "bridge 'br0; rm -rf /'"),
    ([{"uri": "qemu+ssh://hv2/system", "bridge": "br0", "pool": "/srv/../etc"}], "an absolute directory"),
    ([{"uri": "qemu+ssh://10.0.0.2/system", "bridge": "br0"}], "give 'name'"),
    (["qemu:///system", "qemu:///system"], "listed twice"),
    ([{"uri": "qemu:///system", "cpu": 3}], "optionally 'name', 'bridge', 'pool'"),
])
def test_bad_hypervisors_say_what_is_wrong(raw: object, words: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_hypervisors(raw)
    assert words in str(err.value)


def test_hypervisor_defaults_and_names() -> None:
    assert parse_hypervisors(None)[0].uri == "qemu:///system"
    local, remote = parse_hypervisors(["qemu:///system?socket=/run/x/libvirt-sock",
                                       {"uri": "qemu+ssh://root@hv2.lab.example/system", "bridge": "br-lab"}])
    assert (local.name, local.local) == ("local", True)
    assert (remote.name, remote.local, remote.bridge, remote.pool_dir) == ("hv2", False, "br-lab",
                                                                           "/var/lib/libvirt/booted")


ENV = '''ENVIRONMENTS = {
    "lab": {
        "provider": "libvirt",
        "network": "10.213.90.0/24",
        "uplink": "eth1",
        "hypervisors": ["qemu:///system", {"uri": "qemu+ssh://root@hv2/system", "bridge": "br-lab"}],
        "hosts": {"web01": {"hypervisor": "hv2"}, "web02": {}},
    },
}
'''


def test_environment_keys_for_libvirt(tmp_path: Path) -> None:
    path = tmp_path / "environments.py"
    path.write_text(ENV)
    env = load_environments(path)["lab"]
    options = env.options  # libvirt's own keys, parsed by it (providers/libvirt_options.py)
    assert isinstance(options, LibvirtOptions)
    assert [h.name for h in options.hypervisors] == ["local", "hv2"] and options.uplink == "eth1"
    assert options.pinned() == {"web01": "hv2"}


@pytest.mark.parametrize(("old", "new", "line", "words"), [
    ('"hypervisor": "hv2"', '"hypervisor": "hv3"', 7, "hypervisor 'hv3' is not one of local, hv2"),
    ('"uplink": "eth1"', '"uplink": "eth1 up"', 5, "uplink 'eth1 up'"),
    ('"provider": "libvirt"', '"provider": "qemu"', 6, "'hypervisors' is for provider libvirt"),
    ('"bridge": "br-lab"', '"name": "hv2"', 6, "another machine: give 'bridge'"),
])
def test_environment_mistakes_name_file_and_line(tmp_path: Path, old: str, new: str, line: int, words: str) -> None:
    path = tmp_path / "environments.py"
    path.write_text(ENV.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_environments(path)
    assert f"{path}:{line}:" in str(err.value) and words in str(err.value), str(err.value)


needs_virsh = pytest.mark.skipif(shutil.which("virsh") is None, reason="needs libvirt-clients: run setup.sh")


@needs_virsh
def test_virsh_runs_against_libvirts_test_driver() -> None:
    v = Virsh("test:///default")
    assert v.names() == ["test"]  # the test driver's one running domain
    assert v.info("dominfo", "test")["State"] == "running"
    assert v.run("dominfo", "nosuch", ok=("failed to get domain",)) == ""
    with pytest.raises(VirshError, match="failed to get domain 'nosuch'") as err:
        v.run("dominfo", "nosuch")
    assert not isinstance(err.value, HypervisorDown)
    assert v.calls[-1] == ["dominfo", "nosuch"]


@needs_virsh
def test_a_daemon_that_cannot_be_reached_is_down() -> None:
    with pytest.raises(HypervisorDown, match="Connection refused"):
        Virsh("qemu+tcp://127.0.0.1:1/system", timeout=20).names()


# snapshots (providers/libvirt_snapshot.py): the decisions, against a fake virsh (the process boundary faked:
# a few domains, their snapshots and the pool's volumes in memory, answering as virsh 9.0 does)

DOMAIN = "<domain><name>{vm}</name><devices><disk><source file='/pool/{disk}'/><target dev='vda'/></disk>" \
         "<disk><source file='/pool/{vm}-seed.img'/><target dev='vdb'/></disk></devices></domain>"


class FakeVirsh(Virsh):
    def __init__(self, disks: dict[str, str], snapshots: dict[str, dict[str, str]], vols: set[str]) -> None:
        super().__init__("qemu:///fake")
        self.disks, self.snapshots, self.vols = disks, snapshots, vols  # vm -> disk; vm -> snapshot -> disk
        self.refuse_live_delete = False
        self.active: set[str] = set()

    def run(self, *args: str, timeout: float | None = None, ok: tuple[str, ...] = ()) -> str:
        self.calls.append(list(args))
        cmd, rest = args[0], list(args[1:])
        if cmd in ("dumpxml", "snapshot-list") and rest[-1 if cmd == "dumpxml" else 0] not in self.disks:
            raise VirshError("failed to get domain")
        if cmd == "dumpxml":
            return DOMAIN.format(vm=rest[-1], disk=self.disks[rest[-1]])
        if cmd == "snapshot-list":
            return "".join(f"{s}\n" for s in self.snapshots.get(rest[0], {}))
        if cmd == "snapshot-dumpxml":
            domain = DOMAIN.format(vm=rest[0], disk=self.snapshots[rest[0]][rest[1]])
            return f"<domainsnapshot>{domain}</domainsnapshot>"
        if cmd == "domstate":
            return "paused\n" if rest[0] in self.active else "shut off\n"
        if cmd == "snapshot-create-as":
            self.snapshots.setdefault(rest[0], {})[rest[1]] = self.disks[rest[0]]
        if cmd == "list":
            return "".join(f"{vm}\n" for vm in sorted(self.active))
        if cmd == "undefine":
            self.disks.pop(rest[0], None)
            self.snapshots.pop(rest[0], None)
        if cmd == "vol-list":
            return "".join(f"{v} /pool/{v}\n" for v in sorted(self.vols))
        if cmd == "vol-delete":
            self.vols.discard(rest[-1])
        if cmd == "define":
            source = ET.parse(rest[0]).getroot().find("devices/disk/source")
            assert source is not None
            self.disks[ET.parse(rest[0]).getroot().findtext("name") or ""] = Path(source.get("file", "")).name
        if cmd == "snapshot-revert":
            self.disks[rest[0]] = self.snapshots[rest[0]][rest[1]]
        if cmd == "snapshot-delete":
            if self.refuse_live_delete and "--metadata" not in rest:
                raise VirshError("Operation not supported: disk image 'vda' for internal snapshot 'x' is not the "
                                 "same as disk image currently used by VM")
            del self.snapshots[rest[0]][rest[1]]
        return ""


def snap_lab(tmp_path: Path) -> Lab:
    return Lab(env="e", lab_id="ab", network=ipaddress.ip_network("10.213.211.0/24"), dir=tmp_path / "lab",
               options=LibvirtOptions(hypervisors=parse_hypervisors(None)))


def test_disk_names_while_snapshots_keep_a_hosts_disk() -> None:
    names = {"booted-ab-w1.qcow2", "booted-ab-w1.2.qcow2", "booted-ab-w10.qcow2", "booted-ab-w1-seed.img"}
    assert disk_volumes("booted-ab-w1", names) == ["booted-ab-w1.2.qcow2", "booted-ab-w1.qcow2"]
    assert spare_disk("booted-ab-w1", names) == "booted-ab-w1.1.qcow2"
    assert spare_disk("booted-ab-w1", names | {"booted-ab-w1.1.qcow2"}) == "booted-ab-w1.3.qcow2"


def test_env_stop_keeps_a_disk_snapshots_live_in_and_gives_the_domain_a_new_one(tmp_path: Path) -> None:
    lab = snap_lab(tmp_path)
    virsh = FakeVirsh({"booted-ab-w1": "booted-ab-w1.qcow2", "booted-ab-w2": "booted-ab-w2.qcow2"},
                      {"booted-ab-w1": {"booted-1": "booted-ab-w1.qcow2"}, "booted-ab-w2": {"other": "x.qcow2"}},
                      {"booted-ab-w1.qcow2", "booted-ab-w2.qcow2"})
    assert snap.keep_disk(virsh, lab, "w1", {"booted-1"}) is True
    assert virsh.disks["booted-ab-w1"] == "booted-ab-w1.1.qcow2"  # the next start makes it, fresh
    assert working_disk(virsh, "booted-ab-w1") == "booted-ab-w1.1.qcow2"
    assert snap.keep_disk(virsh, lab, "w2", {"booted-1"}) is False  # no snapshot of booted's: env_stop deletes it
    # started again on w1.1, stopped again: w1.1 holds no snapshot and goes; the domain and the kept disk stay
    virsh.vols.add("booted-ab-w1.1.qcow2")
    assert snap.keep_disk(virsh, lab, "w1", {"booted-1"}) is True
    assert "booted-ab-w1.qcow2" in virsh.vols and "booted-ab-w1.1.qcow2" not in virsh.vols
    assert virsh.disks["booted-ab-w1"] == "booted-ab-w1.1.qcow2"  # made fresh by the next start
    assert snap.keep_disk(virsh, lab, "w3", set()) is False
    assert working_disk(virsh, "booted-ab-w3") == "booted-ab-w3.qcow2"


def test_a_killed_snapshot_runs_libvirt_snapshot_does_not_keep_a_disk(tmp_path: Path) -> None:
    """The run saved, then was killed: its folder (.partial-*) is gone, its libvirt snapshot is not; booted's
    folders name the others (found by known(), as the provider reads the state dir)."""
    lab = snap_lab(tmp_path)
    store = tmp_path / "snapshots" / "e"
    kept = store / "clean" / "hosts" / "w1"
    kept.mkdir(parents=True)
    (kept / snap.MARK).write_text(json.dumps(asdict(snap.Saved("booted-kept", "local", "d.qcow2", True))))
    half = store / ".partial-half-1-ab" / "hosts" / "w1"  # the killed run's, left until the next snapshot run
    half.mkdir(parents=True)
    (half / snap.MARK).write_text(json.dumps(asdict(snap.Saved("booted-half", "local", "d.qcow2", True))))
    assert snap.known(store) == {"booted-kept"}
    virsh = FakeVirsh({"booted-ab-w1": "booted-ab-w1.qcow2"}, {"booted-ab-w1": {"booted-half": "booted-ab-w1.qcow2"}},
                      {"booted-ab-w1.qcow2"})
    assert snap.keep_disk(virsh, lab, "w1", snap.known(store)) is False
    assert virsh.snapshots["booted-ab-w1"] == {} and ["snapshot-delete", "booted-ab-w1", "booted-half"] in virsh.calls


def test_a_snapshot_is_named_in_its_folder_before_libvirt_takes_it(tmp_path: Path) -> None:
    lab = replace(snap_lab(tmp_path), placed=lambda name: "local" if name != "w9" else "")
    virsh = FakeVirsh({"booted-ab-w1": "booted-ab-w1.1.qcow2", "booted-ab-w2": "booted-ab-w2.qcow2"}, {}, set())
    virsh.active = {"booted-ab-w1"}
    for host in ("w1", "w2"):
        (tmp_path / host).mkdir()
        snap.save(lambda hv: virsh, lab, host, tmp_path / host)
    one, two = snap.Saved.read(tmp_path / "w1"), snap.Saved.read(tmp_path / "w2")
    assert (one.hypervisor, one.disk, one.memory) == ("local", "booted-ab-w1.1.qcow2", True)  # paused: with memory
    assert (two.disk, two.memory) == ("booted-ab-w2.qcow2", False)  # shut off: its disk only
    assert virsh.snapshots["booted-ab-w1"] == {one.snapshot: "booted-ab-w1.1.qcow2"}
    assert one.snapshot.startswith(snap.PREFIX) and one.snapshot != two.snapshot
    with pytest.raises(ProviderError, match="never placed"):
        snap.save(lambda hv: virsh, lab, "w9", tmp_path)


def saved_folder(tmp_path: Path, saved: snap.Saved) -> Path:
    folder = tmp_path / "snap" / "hosts" / "w1"
    folder.mkdir(parents=True)
    (folder / snap.MARK).write_text(json.dumps(asdict(saved)))
    return folder


def test_restore_with_memory_waits_for_the_network_a_disk_snapshot_reverts_now(tmp_path: Path) -> None:
    lab = snap_lab(tmp_path)
    virsh = FakeVirsh({"booted-ab-w1": "booted-ab-w1.1.qcow2"},
                      {"booted-ab-w1": {"booted-m": "booted-ab-w1.qcow2", "booted-d": "booted-ab-w1.qcow2"}},
                      {"booted-ab-w1.qcow2", "booted-ab-w1.1.qcow2"})
    memory = saved_folder(tmp_path, snap.Saved("booted-m", "local", "booted-ab-w1.qcow2", True))
    snap.restore(lambda hv: virsh, lab, "w1", memory)
    assert not [c for c in virsh.calls if c[0] == "snapshot-revert"]  # start_saved reverts it, running
    assert snap.to_continue(lab, "w1") == snap.Saved("booted-m", "local", "booted-ab-w1.qcow2", True)
    assert virsh.vols == {"booted-ab-w1.qcow2"}  # the disk made since env_stop held no snapshot: gone

    disk_only = tmp_path / "d"
    disk_only.mkdir()
    (disk_only / snap.MARK).write_text(json.dumps(asdict(snap.Saved("booted-d", "local", "booted-ab-w1.qcow2",
                                                                    False))))
    snap.restore(lambda hv: virsh, lab, "w1", disk_only)
    assert ["snapshot-revert", "booted-ab-w1", "booted-d"] in virsh.calls
    assert virsh.disks["booted-ab-w1"] == "booted-ab-w1.qcow2"  # the snapshot's definition, with its disk
    assert snap.to_continue(lab, "w1") is None  # it boots from its reverted disk when started

    virsh.snapshots["booted-ab-w1"].clear()  # libvirt lost it: refused, naming it
    with pytest.raises(ProviderError, match="no longer has its snapshot booted-m"):
        snap.restore(lambda hv: virsh, lab, "w1", memory)


def test_deleting_the_last_snapshot_of_a_kept_disk_deletes_the_disk(tmp_path: Path) -> None:
    lab = snap_lab(tmp_path)
    virsh = FakeVirsh({"booted-ab-w1": "booted-ab-w1.1.qcow2"},
                      {"booted-ab-w1": {"booted-a": "booted-ab-w1.qcow2", "booted-b": "booted-ab-w1.qcow2"}},
                      {"booted-ab-w1.qcow2", "booted-ab-w1.1.qcow2"})
    virsh.refuse_live_delete = True  # the domain runs on w1.1: libvirt 9 will not delete live from another disk
    a = saved_folder(tmp_path, snap.Saved("booted-a", "local", "booted-ab-w1.qcow2", True))
    lab.host_dir("w1").mkdir(parents=True)  # the host has its disk (not discarded by env_stop)
    snap.forget(lambda hv: virsh, lab, "w1", a, {"booted-a", "booted-b"})
    assert ["snapshot-delete", "booted-ab-w1", "booted-a", "--metadata"] in virsh.calls
    assert "booted-ab-w1.qcow2" in virsh.vols  # booted-b still lives in it
    b = tmp_path / "b"
    b.mkdir()
    (b / snap.MARK).write_text(json.dumps(asdict(snap.Saved("booted-b", "local", "booted-ab-w1.qcow2", True))))
    snap.forget(lambda hv: virsh, lab, "w1", b, {"booted-b"})
    assert virsh.vols == {"booted-ab-w1.1.qcow2"}
    snap.forget(lambda hv: virsh, lab, "w1", tmp_path / "never-written", set())  # a killed run's empty folder
    assert "booted-ab-w1" in virsh.disks  # the host has a folder: its domain stays

    # env_stop kept w2's domain and disk for its snapshot; deleting that snapshot removes what env_stop would have
    virsh.disks["booted-ab-w2"] = "booted-ab-w2.1.qcow2"
    virsh.snapshots["booted-ab-w2"] = {"booted-c": "booted-ab-w2.qcow2"}
    virsh.vols |= {"booted-ab-w2.qcow2", "booted-ab-w2-seed.img", "booted-ab-w2.console"}
    c = tmp_path / "c"
    c.mkdir()
    (c / snap.MARK).write_text(json.dumps(asdict(snap.Saved("booted-c", "local", "booted-ab-w2.qcow2", True))))
    snap.forget(lambda hv: virsh, lab, "w2", c, {"booted-c"})
    assert "booted-ab-w2" not in virsh.disks and virsh.vols == {"booted-ab-w1.1.qcow2"}


def test_pause_and_resume_each_domain_on_its_hypervisor(tmp_path: Path) -> None:
    lab = snap_lab(tmp_path)
    [local] = parse_hypervisors(None)
    virsh = FakeVirsh({}, {}, set())
    assert snap.pause(lambda hv: virsh, lab, {"w1": local}, ["w1", "w2"]) == {"w2": "its domain is not running"}
    assert snap.pause(lambda hv: virsh, lab, {"w1": local}, ["w1", "w2"], resume=True) == {}
    assert sorted(virsh.calls) == [["resume", "booted-ab-w1"], ["suspend", "booted-ab-w1"]]


def test_the_watchdogs_resume_command_runs_virsh_per_domain_without_booted(tmp_path: Path) -> None:
    """The command itself, run by a shell as the watchdog would, with a stand-in virsh that logs its argv and
    fails for one domain: every domain is still resumed, and the command succeeds."""
    lab = snap_lab(tmp_path)
    hv1, hv2 = parse_hypervisors(["qemu:///system?socket=/run/a/libvirt-sock",
                                  {"uri": "qemu+ssh://root@hv2/system", "bridge": "br0"}])
    fake = tmp_path / "virsh"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/log\ncase "$*" in *w1*) exit 1;; esac\n')
    fake.chmod(0o755)
    command = snap.resume_command(str(fake), lab, {"w1": hv1, "w2": hv2}, ["w1", "w2", "gone"])
    subprocess.run(command, check=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert (tmp_path / "log").read_text().splitlines() == [
        "-q -c qemu:///system?socket=/run/a/libvirt-sock resume booted-ab-w1",
        "-q -c qemu+ssh://root@hv2/system resume booted-ab-w2"]
