"""Lab snapshots on qemu VMs (real QEMU, TCG here), end to end through `fab`: a snapshot keeps each VM's
memory and disk, so a restore continues the VMs where they were (no boot: the console has no new boot, the
guest's uptime goes on from the snapshot's), their clocks set to the controller's; the same after env_stop."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.integration.conftest import LabRun, assert_back_at_one, guest, leftovers
from tests.integration.test_netns_lab import health, make_hello_repo

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 not installed")]
WEB1, WEB2 = "10.213.195.2", "10.213.195.3"
ENV = '''ENVIRONMENTS = {
    "qsnap": {
        "provider": "qemu",
        "network": "10.213.195.0/24",
        "hosts": {"web[01:02]": {"role": "worker", "service": "hello", "version": "1.0"}},
    },
}
'''


def uptime(lab_run: LabRun, host: str) -> float:
    return float(guest(lab_run, host, "cut -d' ' -f1 /proc/uptime"))


def clock_offset(lab_run: LabRun, host: str) -> float:
    """How far the guest's clock is from ours at least, measured by `date` inside a hosts_run: the guest read
    it at some moment of the run, so its offset lies between `said - after` and `said - before`; the bound
    nearest zero (0 when that range holds it). A run slowed by load widens the range, never fails it."""
    before = time.time()
    said = float(guest(lab_run, host, "date +%s.%N"))
    after = time.time()
    return said - after if said > after else said - before if said < before else 0.0


def console(lab_run: LabRun, host: str) -> str:
    return (Path(lab_run.env["BOOTED_STATE_DIR"]) / "labs" / "qsnap" / "hosts" / host / "console.log").read_text(
        errors="replace")


def assert_as_snapshot(lab_run: LabRun, uptimes: dict[str, float]) -> None:
    assert_back_at_one(lab_run, (WEB1, WEB2), "web02")
    for host in ("web01", "web02"):
        since = console(lab_run, host).rsplit(f"--- booted: {host} continues from a snapshot", 1)
        assert len(since) == 2 and "phoned home" not in since[1], since[-1][-2000:]  # no boot since the restore
        assert "booted: starting" not in since[1]
        assert uptime(lab_run, host) >= uptimes[host]  # the guest's own time went on from the snapshot's
        assert abs(clock_offset(lab_run, host)) < 2.0


def test_qemu_snapshot_change_restore_and_after_env_stop(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV)
    lab_run.env["HELLO_REPO"] = str(make_hello_repo(lab_run.tmp))
    lab_run.env.setdefault("BOOTED_BOOT_TIMEOUT", "600")
    lab_run.fab("env_start_all", timeout=1200)
    assert health(WEB1)["version"] == "1.0"

    uptimes = {h: uptime(lab_run, h) for h in ("web01", "web02")}
    taken = lab_run.fab("env_snapshot", "clean", timeout=600)
    assert "2 running host(s) paused together" in taken.stdout, taken.stdout + taken.stderr
    [snap] = json.loads(lab_run.fab("env_snapshots", "--json").stdout)
    assert snap["name"] == "clean" and snap["size"] > 0 and snap["pause_s"] > 0
    assert abs(clock_offset(lab_run, "web01")) < 2.0  # the snapshot's pause was corrected on resume
    assert "phoned home" in console(lab_run, "web01")

    lab_run.fab("hello_deploy", "--version", "1.1", "--hosts", "web01", timeout=600)
    assert health(WEB1)["version"] == "1.1"
    assert guest(lab_run, "web02", "echo later > /root/after && echo written") == "written"

    restored = lab_run.fab("env_restore", "clean", timeout=900)
    assert "continued from the snapshot" in restored.stdout, restored.stdout + restored.stderr
    assert_as_snapshot(lab_run, uptimes)
    # a VM continued from a snapshot is saved with the command line its host was started with
    lab_run.fab("env_snapshot", "again", timeout=600)
    folder = Path(lab_run.env["BOOTED_STATE_DIR"]) / "snapshots" / "qsnap" / "again" / "hosts" / "web01"
    argv = json.loads((folder / "argv.json").read_text())
    assert "-incoming" not in argv and argv[argv.index("-name") + 1].endswith("-web01"), argv

    lab_run.fab("env_stop", timeout=300)
    assert leftovers(lab_run) == []
    again = lab_run.fab("env_restore", "clean", timeout=900)
    assert "continued from the snapshot" in again.stdout, again.stdout + again.stderr
    assert_as_snapshot(lab_run, uptimes)


def test_pause_resume_and_the_watchdogs_cont_on_a_bare_qemu(tmp_path: Path) -> None:
    """The hooks the warm pool and a snapshot's watchdog use, on real QEMUs with no guest (no boot needed):
    pause stops every VM, resume (and the watchdog's command, which imports nothing of booted) continues them."""
    import ipaddress
    import subprocess

    from booted.providers import qemu_snapshot
    from booted.providers.lab import Lab
    from booted.providers.qemuctl import qmp

    lab = Lab(env="bare", lab_id="zz", network=ipaddress.ip_network("10.213.199.0/24"), dir=tmp_path)
    procs = []
    for name in ("a", "b"):
        lab.host_dir(name).mkdir(parents=True)
        procs.append(subprocess.Popen(["qemu-system-x86_64", "-M", "pc", "-accel", "tcg", "-m", "64", "-nodefaults",
                                       "-display", "none", "-qmp",
                                       f"unix:{lab.host_dir(name) / 'qmp.sock'},server=on,wait=off"]))

    def states() -> dict[str, str]:
        return {n: (qmp(lab.host_dir(n) / "qmp.sock", "query-status")[0] or {})["return"]["status"] for n in "ab"}
    try:
        deadline = time.monotonic() + 60
        while not all((lab.host_dir(n) / "qmp.sock").exists() for n in "ab") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert qemu_snapshot.pause(lab, ["a", "b"]) == {}
        assert states() == {"a": "paused", "b": "paused"}
        assert qemu_snapshot.resume(lab, ["a", "b"]) == {}
        assert states() == {"a": "running", "b": "running"}
        assert qemu_snapshot.pause(lab, ["a", "b", "gone"]).keys() == {"gone"}
        subprocess.run(qemu_snapshot.resume_command(lab, ["a", "b", "gone"]), check=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin"}, cwd="/")
        assert states() == {"a": "running", "b": "running"}
        # a migration still under way when the run resumes (or dies): cancelled first, else `cont` would run
        # the VM until the migration completes and then leave it stopped ("postmigrate")
        for resume in ("resume", "watchdog"):
            assert qemu_snapshot.pause(lab, ["a", "b"]) == {}
            for n in "ab":
                sock = lab.host_dir(n) / "qmp.sock"
                said = qmp(sock, {"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": 1000}},
                           {"execute": "migrate", "arguments": {"uri": "exec:cat > /dev/null"}})
                assert all(r and "return" in r for r in said), said
                assert (qmp(sock, "query-migrate")[0] or {})["return"]["status"] in ("setup", "active")
            if resume == "resume":
                assert qemu_snapshot.resume(lab, ["a", "b"]) == {}
            else:
                subprocess.run(qemu_snapshot.resume_command(lab, ["a", "b"]), check=True, timeout=120,
                               env={"PATH": "/usr/bin:/bin"}, cwd="/")
            assert states() == {"a": "running", "b": "running"}, resume
            assert {(qmp(lab.host_dir(n) / "qmp.sock", "query-migrate")[0] or {})["return"]["status"]
                    for n in "ab"} == {"cancelled"}, resume
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
