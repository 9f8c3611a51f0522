"""The libvirt provider's parts that need no VM: placement across hypervisors (pure), the environment keys
(hypervisors, uplink, a host's hypervisor) with their messages, and the virsh runner against real virsh
(libvirt's test driver in-process; a TCP URI on 127.0.0.1 where nothing listens for a daemon that is down)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from booted.environments import load_environments
from booted.errors import ConfigError
from booted.providers.hypervisors import Capacity, parse_hypervisors, place
from booted.providers.libvirt_hypervisors import vcpus_in_use
from booted.providers.libvirt_options import LibvirtOptions
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
