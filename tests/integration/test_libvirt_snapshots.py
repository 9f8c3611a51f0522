"""Lab snapshots on libvirt (a private libvirtd, tests/libvirtd.py; real QEMU guests, TCG here), end to end
through `fab`: libvirt's internal snapshot keeps each domain's disk and memory in its qcow2 volume, so a
restore continues the guests where they were (the same boot: their boot_id is the snapshot's), after a change
(another version deployed, a file written, a host stopped) and after env_stop, which keeps the disks the
snapshot lives in. Deleting the snapshot lets env_stop remove them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import libvirtd
from tests.integration.conftest import FAB, LabRun, assert_back_at_one, guest, leftovers
from tests.integration.test_netns_lab import health, make_hello_repo

pytestmark = [pytest.mark.integration, pytest.mark.skipif(libvirtd.missing() is not None,
                                                          reason=f"private libvirtd: {libvirtd.missing()}")]
WEB1, WEB2 = "10.213.210.2", "10.213.210.3"
ENV = '''ENVIRONMENTS = {{
    "lsnap": {{
        "provider": "libvirt",
        "network": "10.213.210.0/24",
        "hypervisors": [{{"uri": "{uri}", "name": "local"}}],
        "hosts": {{"web[01:02]": {{"role": "worker", "service": "hello", "version": "1.0"}}}},
    }},
}}
'''


@pytest.fixture
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[libvirtd.Libvirtd]:
    hv = libvirtd.start(tmp_path_factory.mktemp("lsnap-hv"))
    yield hv
    hv.stop()


def boot_ids(lab_run: LabRun) -> dict[str, str]:
    return {h: guest(lab_run, h, "cat /proc/sys/kernel/random/boot_id") for h in ("web01", "web02")}


def volumes(hv: libvirtd.Libvirtd) -> list[str]:
    hv.virsh("pool-refresh", "booted")
    names = [line.split()[0] for line in hv.virsh("vol-list", "booted").splitlines() if line.strip()]
    return sorted(n for n in names if n.endswith(".qcow2") and not n.startswith("golden-"))


def states(hv: libvirtd.Libvirtd, domains: list[str]) -> str:
    """The domains' one state ("running", "paused"), or all of them when they differ."""
    said = {hv.virsh("domstate", d).strip() for d in domains}
    return said.pop() if len(said) == 1 else " / ".join(sorted(said))


def until(done: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.2)
    return done()


def steps(said: str) -> str:
    """A restore's steps as it printed them (for the run's log: where its time went)."""
    return "; ".join(line.split(": ", 1)[1] for line in said.splitlines() if line.startswith("restore clean: "))


def allocation(hv: libvirtd.Libvirtd, volume: str) -> int:
    hv.virsh("pool-refresh", "booted")
    return int(hv.virsh("vol-info", "--pool", "booted", volume, "--bytes").split("Allocation:")[1].split()[0])


def assert_as_snapshot(lab_run: LabRun, booted: dict[str, str]) -> None:
    assert_back_at_one(lab_run, (WEB1, WEB2), "web01")
    assert boot_ids(lab_run) == booted  # continued from its memory: the same boot, not a new one
    assert "2 ok, 0 failed" in lab_run.fab("hello_test").stdout


def test_libvirt_snapshot_change_restore_and_after_env_stop(daemon: libvirtd.Libvirtd, lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(uri=daemon.uri))
    lab_run.env["HELLO_REPO"] = str(make_hello_repo(lab_run.tmp))
    lab_run.env.setdefault("BOOTED_BOOT_TIMEOUT", "600")
    began = time.monotonic()
    lab_run.fab("env_start_all", timeout=1200)
    print(f"libvirt env_start_all: {time.monotonic() - began:.1f}s")
    lab_id = lab_run.ctx().settings.lab_id("lsnap")
    booted = boot_ids(lab_run)
    before = allocation(daemon, f"booted-{lab_id}-web01.qcow2")

    taken = lab_run.fab("env_snapshot", "clean", timeout=600)
    assert "2 running host(s) paused together" in taken.stdout, taken.stdout + taken.stderr
    [snap] = json.loads(lab_run.fab("env_snapshots", "--json").stdout)
    assert snap["name"] == "clean" and snap["pause_s"] > 0
    for host in ("web01", "web02"):  # libvirt's own, with memory
        info = daemon.virsh("snapshot-info", f"booted-{lab_id}-{host}", "--current")
        assert "Location:       internal" in info and "State:          paused" in info, info
    grown = allocation(daemon, f"booted-{lab_id}-web01.qcow2") - before
    print(f"libvirt snapshot: pause_s={snap['pause_s']} web01's volume grew {grown / 2**20:.1f} MiB")

    lab_run.fab("hello_deploy", "--version", "1.1", "--hosts", "web01", timeout=600)
    assert health(WEB1)["version"] == "1.1"
    lab_run.fab("hosts_run", "echo later > /root/after; sync", "--hosts", "web01")
    lab_run.fab("image_stop", "web02")
    assert daemon.virsh("list", "--name").split() == [f"booted-{lab_id}-web01"]

    began = time.monotonic()
    restored = lab_run.fab("env_restore", "clean", timeout=900)
    print(f"libvirt restore (running lab): {time.monotonic() - began:.1f}s", steps(restored.stderr))
    assert restored.stdout.count("continued from the snapshot") == 2, restored.stdout + restored.stderr
    assert_as_snapshot(lab_run, booted)

    lab_run.fab("env_stop", timeout=300)
    assert leftovers(lab_run) == [] and daemon.virsh("list", "--name").split() == []
    # the disks the snapshot lives in are kept; the domains get new ones for the next start
    kept = [f"booted-{lab_id}-web01.qcow2", f"booted-{lab_id}-web02.qcow2"]
    assert volumes(daemon) == kept
    began = time.monotonic()
    again = lab_run.fab("env_restore", "clean", timeout=900)
    print(f"libvirt restore (after env_stop): {time.monotonic() - began:.1f}s", steps(again.stderr))
    assert again.stdout.count("continued from the snapshot") == 2, again.stdout + again.stderr
    assert_as_snapshot(lab_run, booted)

    # a snapshot run killed while the lab is paused (after saving): the watchdog resumes every domain
    domains = [f"booted-{lab_id}-web01", f"booted-{lab_id}-web02"]
    proc = subprocess.Popen([FAB, "env_snapshot", "half"], cwd=Path(__file__).parents[2],
                            env={**lab_run.env, "BOOTED_SNAPSHOT_HOLD": "300"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert until(lambda: states(daemon, domains) == "paused", 300), states(daemon, domains)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert until(lambda: states(daemon, domains) == "running", 60), states(daemon, domains)
    assert [s["name"] for s in json.loads(lab_run.fab("env_snapshots", "--json").stdout)] == ["clean"]
    assert "2 ok, 0 failed" in lab_run.fab("hello_test").stdout

    # libvirt's snapshots go (live: the domains run on those disks), and those the killed run left
    lab_run.fab("env_snapshot_del", "clean")
    assert [daemon.virsh("snapshot-list", d, "--name").split() for d in domains] == [[], []]
    lab_run.fab("env_stop", timeout=300)
    assert volumes(daemon) == [] and daemon.virsh("list", "--all", "--name").split() == []
    assert leftovers(lab_run) == []
    lab_run.fab("image_del", "web01,web02")
