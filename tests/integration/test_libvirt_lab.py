"""The libvirt provider for real: the tests start their own libvirtd (tests/libvirtd.py: private config,
sockets and state, stopped afterwards) and run labs through it with `fab`, as a user would. The second test
adds a second libvirtd in its own network namespace, standing for another machine: reached over TCP at its
own address, its hosts on a bridge there that a veth (the environment's `uplink`) joins to the lab bridge;
and a third hypervisor that is down. The daemons and booted's state directory are the module's, shared as a
user's labs share them (each test its own environment, each daemon left empty after it): booted uploads the
golden disk once per daemon and learns once per daemon that KVM fails here."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from booted.config import Settings
from booted.providers.libvirt_hypervisors import vcpus_in_use
from booted.remote.releases import discard
from tests import libvirtd
from tests.conftest import REPO
from tests.integration.conftest import LabRun, leftovers

pytestmark = [pytest.mark.integration, pytest.mark.skipif(libvirtd.missing() is not None,
                                                          reason=f"private libvirtd: {libvirtd.missing()}")]


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("libvirt") / "state"
    yield state
    discard(Settings.from_env({"BOOTED_STATE_DIR": str(state), "PATH": os.environ["PATH"]}, REPO))


@pytest.fixture
def settings_env(settings_env: dict[str, str], shared_state: Path) -> Iterator[dict[str, str]]:
    """The tests' own environments.py, in the module's state directory; the host images a failed test left
    are deleted after its lab is stopped (host names are unique per state directory)."""
    env = {**settings_env, "BOOTED_STATE_DIR": str(shared_state)}
    yield env
    if Path(env["BOOTED_ENVIRONMENTS"]).exists():
        run = LabRun({k: v for k, v in {**os.environ, **env}.items() if k not in ("BOOTED_ENV", "BOOTED_LOG")},
                     Path(env["BOOTED_ENVIRONMENTS"]).parent)
        left = [i["name"] for i in json.loads(run.fab("image_list", "--json", check=False).stdout or "[]")]
        if left:
            run.fab("image_del", ",".join(left), check=False)


@pytest.fixture(scope="module")
def first_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[libvirtd.Libvirtd]:
    daemon = libvirtd.start(tmp_path_factory.mktemp("hv1"))
    yield daemon
    daemon.stop()


@pytest.fixture
def local_daemon(first_daemon: libvirtd.Libvirtd) -> Iterator[libvirtd.Libvirtd]:
    yield first_daemon
    first_daemon.clear()  # after the test's own teardown (env_stop): whatever a failed test left


def domains(daemon: libvirtd.Libvirtd) -> list[str]:
    return daemon.virsh("list", "--all", "--name").split()


def host_volumes(daemon: libvirtd.Libvirtd) -> list[str]:
    daemon.virsh("pool-refresh", "booted")
    return [line.split()[0] for line in daemon.virsh("vol-list", "booted").splitlines()
            if line.strip() and not line.split()[0].startswith("golden-")]


def test_a_two_vm_lab_on_libvirt_serves_shows_consoles_and_stops_clean(local_daemon: libvirtd.Libvirtd,
                                                                        lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(f'''ENVIRONMENTS = {{
    "lv": {{
        "provider": "libvirt",
        "network": "10.213.66.0/24",
        "hypervisors": [{{"uri": "{local_daemon.uri}", "name": "local"}}],
        "hosts": {{"web[01:02]": {{"role": "worker", "service": "hello", "version": "1.0"}}}},
    }},
}}
''')
    start = lab_run.fab("env_start_all", timeout=900)
    assert "2 ok, 0 failed" in start.stdout, start.stdout + start.stderr
    assert "starting 2 libvirt domain(s) on local (2)" in start.stderr
    assert "hello: served at first boot, verified: web01, web02; deploying over SSH: none" in start.stderr
    lab_id = lab_run.ctx().settings.lab_id("lv")
    assert sorted(local_daemon.virsh("list", "--name").split()) == [f"booted-{lab_id}-web01", f"booted-{lab_id}-web02"]
    assert vcpus_in_use(local_daemon.virsh("domstats", "--vcpu", "--list-active")) == 2  # what placement counts
    xml = local_daemon.virsh("dumpxml", domains(local_daemon)[0])
    assert "<backingStore type='file'" in xml and "golden-" in xml  # copy-on-write over the uploaded golden disk
    assert "2 ok, 0 failed" in lab_run.fab("hello_test").stdout
    images = json.loads(lab_run.fab("image_list", "--json").stdout)
    assert {i["name"]: (i["hypervisor"], i["running"]) for i in images} == {"web01": ("local", True),
                                                                           "web02": ("local", True)}
    assert "hypervisor" in lab_run.fab("hosts_list").stdout.splitlines()[0]
    console = lab_run.fab("image_console", "web02", "--lines", "300").stdout  # from the pool (vol-download)
    assert "booted-init: identity from the seed disk" in console and "phoned home" in console, console

    # a clone carries web01's disk (byte copy of its volume, still an overlay) under a new identity
    lab_run.fab("hosts_run", "echo written-on-web01 > /root/mark; sync", "--hosts", "web01")
    assert "10.213.66.4" in lab_run.fab("image_clone", "web01", "web03").stdout
    assert "1 ok, 0 failed" in lab_run.fab("image_start", "web03").stdout
    web03 = lab_run.fab("hosts_run", "hostname; cat /root/mark", "--hosts", "web03").stdout
    assert "--- web03\nweb03\nwritten-on-web01" in web03, web03
    local_daemon.virsh("pool-refresh", "booted")
    vol = local_daemon.virsh("vol-dumpxml", "--pool", "booted", f"booted-{lab_id}-web03.qcow2")
    assert "<backingStore>" in vol and "golden-" in vol

    assert "3 ok, 0 failed" in lab_run.fab("env_stop").stdout
    assert local_daemon.virsh("list", "--name").split() == []
    assert local_daemon.virsh("net-list", "--all", "--name").split() == []  # the lab network went with it
    assert leftovers(lab_run) == []
    again = lab_run.fab("image_start", "web01")  # starts again (env_stop discarded its disk: a fresh one)
    assert "1 ok, 0 failed" in again.stdout, again.stdout + again.stderr
    assert "3 ok, 0 failed" in lab_run.fab("image_del", "web01,web02,web03").stdout
    assert domains(local_daemon) == [] and host_volumes(local_daemon) == []  # nothing left in libvirt
    assert not list((Path(lab_run.env["BOOTED_STATE_DIR"]) / "labs" / "lv" / "hosts").glob("*"))
    assert leftovers(lab_run) == []


@pytest.fixture(scope="module")
def other_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[libvirtd.Libvirtd, str]]:
    """A libvirtd in network namespace bthv<pid> at 10.213.68.2 (management link), with bridge brlab whose
    port is the veth whose other end (returned: the environment's uplink) is on this machine."""
    tag = str(os.getpid() % 100000)
    ns, mgmt, uplink = f"bthv{tag}", f"btlm{tag}", f"btlu{tag}"
    cmds = [f"netns add {ns}", f"-n {ns} link set lo up",
            f"link add {mgmt} type veth peer name m0 netns {ns}", f"addr add 10.213.68.1/24 dev {mgmt}",
            f"link set {mgmt} up", f"-n {ns} addr add 10.213.68.2/24 dev m0", f"-n {ns} link set m0 up",
            f"-n {ns} link add brlab type bridge", f"-n {ns} link set brlab up",
            f"link add {uplink} type veth peer name u0 netns {ns}", f"-n {ns} link set u0 master brlab",
            f"-n {ns} link set u0 up"]
    try:
        for cmd in cmds:
            subprocess.run(["ip", *cmd.split()], check=True, capture_output=True)
        daemon = libvirtd.start(tmp_path_factory.mktemp("hv2"), netns=ns, listen="10.213.68.2")
    except BaseException:
        for link in (mgmt, uplink):
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        raise
    yield daemon, uplink
    daemon.stop()
    for link in (mgmt, uplink):
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture
def second_machine(other_machine: tuple[libvirtd.Libvirtd, str]) -> Iterator[tuple[libvirtd.Libvirtd, str]]:
    yield other_machine
    other_machine[0].clear()


def test_one_lab_across_two_libvirt_daemons_and_one_that_is_down(
        local_daemon: libvirtd.Libvirtd, second_machine: tuple[libvirtd.Libvirtd, str], lab_run: LabRun) -> None:
    hv2, uplink = second_machine
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(f'''ENVIRONMENTS = {{
    "lv2": {{
        "provider": "libvirt",
        "network": "10.213.67.0/24",
        "uplink": "{uplink}",
        "hypervisors": [
            {{"uri": "{local_daemon.uri}", "name": "local"}},
            {{"uri": "{hv2.uri}", "name": "hv2", "bridge": "brlab"}},
            {{"uri": "qemu+tcp://127.0.0.1:1/system", "name": "gone", "bridge": "brlab"}},
        ],
        "hosts": {{
            "web[01:02]": {{"role": "worker", "service": "hello", "version": "1.0"}},
            "web03": {{"role": "worker", "service": "hello", "version": "1.0", "hypervisor": "gone"}},
        }},
    }},
}}
''')
    start = lab_run.fab("env_start_all", check=False, timeout=900)
    out = start.stdout + start.stderr
    assert start.returncode != 0 and "2 ok, 1 failed" in start.stdout, out
    assert "web03 boot: hypervisor gone is down: failed to connect" in start.stderr, out  # named, with libvirt's reason
    images = {i["name"]: i for i in json.loads(lab_run.fab("image_list", "--json").stdout)}
    placed = {n: images[n]["hypervisor"] for n in ("web01", "web02")}
    assert sorted(placed.values()) == ["hv2", "local"], placed  # spread by free memory, one on each
    assert images["web01"]["running"] and images["web02"]["running"] and not images["web03"]["running"]
    remote = next(n for n, hv in placed.items() if hv == "hv2")
    assert len(hv2.virsh("list", "--name").split()) == 1 and len(local_daemon.virsh("list", "--name").split()) == 1
    test = lab_run.fab("hello_test", "--hosts", "web01,web02")  # one lab serving across both machines
    assert "2 ok, 0 failed" in test.stdout, test.stdout
    console = lab_run.fab("image_console", remote).stdout  # from the other machine's pool
    assert "booted-init: identity from the seed disk" in console, console
    listed = lab_run.fab("hosts_list").stdout
    assert "hv2" in listed and "local" in listed

    assert "2 ok, 0 failed" in lab_run.fab("env_stop").stdout  # web03 never ran
    assert hv2.virsh("list", "--name").split() == [] and local_daemon.virsh("list", "--name").split() == []
    lab_run.fab("image_del", "web01,web02,web03")
    assert domains(hv2) == [] and domains(local_daemon) == []
    assert host_volumes(hv2) == [] and host_volumes(local_daemon) == []
    assert leftovers(lab_run) == []


def test_hosts_on_a_machine_whose_bridge_is_not_on_the_lab_network_say_so(
        second_machine: tuple[libvirtd.Libvirtd, str], lab_run: LabRun) -> None:
    """No uplink: hv2's bridge is not connected to the lab bridge, so its host boots but never reaches the
    gateway; a bridge that does not exist on that machine fails at once with libvirt's reason."""
    hv2, _ = second_machine
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(f'''ENVIRONMENTS = {{
    "lv3": {{
        "provider": "libvirt",
        "network": "10.213.69.0/24",
        "hypervisors": [{{"uri": "{hv2.uri}", "name": "hv2", "bridge": "brlab"}}],
        "hosts": {{"web01": {{"hypervisor": "hv2"}}}},
    }},
}}
''')
    # waited out on purpose: 12 s from the domain's start (again after a KVM fallback); it boots in about 6
    start = lab_run.fab("image_start", "web01", check=False, extra={"BOOTED_BOOT_TIMEOUT": "12"}, timeout=600)
    assert start.returncode != 0 and "0 ok, 1 failed" in start.stdout, start.stdout + start.stderr
    hint = "hosts on hv2 may not reach the lab network; its bridge brlab must carry 10.213.69.0/24"
    assert hint in start.stdout, start.stdout  # in web01's failure row
    assert "1 ok, 0 failed" in lab_run.fab("env_stop").stdout
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(
        Path(lab_run.env["BOOTED_ENVIRONMENTS"]).read_text().replace('"bridge": "brlab"', '"bridge": "brnone"'))
    start = lab_run.fab("image_start", "web01", check=False, timeout=300)
    assert start.returncode != 0 and "brnone" in start.stderr, start.stdout + start.stderr
    lab_run.fab("env_stop")
    lab_run.fab("image_del", "web01")
    assert domains(hv2) == [] and host_volumes(hv2) == [] and leftovers(lab_run) == []
