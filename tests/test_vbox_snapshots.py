"""VirtualBox snapshots in VirtualBox's terms, on the fake VBoxManage (tests/fake_vboxmanage_snapshots.py on
top of the recorded tests/fake_vboxmanage.py): hosts paused and snapshotted together, resumed; env_stop sets a
VM that snapshots live in aside and a restore brings it back; deleting the snapshot and the image clean up.
VirtualBox itself never runs here (it is not packaged for Debian 12)."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

from booted.config import Settings
from booted.providers.lab import Lab
from booted.providers.vm import vm_name
from tests.conftest import REPO
from tests.test_virtualbox import Fake, Provider, identity

WRAPPER = Path(__file__).resolve().parent / "fake_vboxmanage_snapshots.py"


def make(tmp_path: Path) -> tuple[Fake, Provider, Lab]:
    fake = Fake(tmp_path)
    (fake.bin / "VBoxManage").write_text(f"#!/bin/sh\nexec {sys.executable} {WRAPPER} {fake.state} \"$@\"\n")
    settings = Settings.from_env({"BOOTED_STATE_DIR": str(tmp_path / "state"), "PATH": f"{fake.bin}:/usr/bin:/bin",
                                  "BOOTED_CACHE_DIR": str(tmp_path / "cache")}, REPO)
    (tmp_path / "cache").mkdir()
    vdi = tmp_path / "cache" / "bootdisk-0123456789ab.vdi"
    vdi.write_bytes(b"placeholder for the bootable golden disk\n")
    lab = Lab("vb", settings.lab_id("vb"), ipaddress.IPv4Network("10.213.205.0/24"), tmp_path / "state" / "labs" / "vb")
    return fake, Provider(settings, vdi), lab


def test_snapshot_env_stop_restore_delete(tmp_path: Path) -> None:
    fake, provider, lab = make(tmp_path)
    hosts = [identity(tmp_path, "web01", "10.213.205.3"), identity(tmp_path, "web02", "10.213.205.4")]
    provider.prepare_network(lab)
    started, errors = provider.start(lab, hosts, lambda line: None)
    assert errors == {} and len(started) == 2
    vm1, vm2 = vm_name(lab, "web01"), vm_name(lab, "web02")

    # paused together, snapshotted while paused, resumed; a paused VM still runs (`list runningvms`)
    assert provider.pause(lab, ["web01", "web02"]) == {}
    assert all(fake.world()["vms"][vm]["paused"] for vm in (vm1, vm2))
    assert sorted(provider.running(lab)) == ["web01", "web02"]
    folders = {n: tmp_path / "snap" / n for n in ("web01", "web02")}
    for name, folder in folders.items():
        folder.mkdir(parents=True)
        assert provider.save(lab, name, folder) == []
    snap1 = (folders["web01"] / "vbox-snapshot").read_text().strip()
    assert ["snapshot", vm1, "take", snap1, "--description", "booted snapshot of web01"] in fake.calls()
    assert provider.resume(lab, ["web01", "web02"]) == {}
    assert not any(fake.world()["vms"][vm]["paused"] for vm in (vm1, vm2))
    assert provider.resume(lab, ["web01"]) == {}  # resuming a host that is not paused does nothing

    # the watchdog's command, run as a killed snapshot run would leave it, resumes paused VMs
    provider.pause(lab, ["web01"])
    command = provider.resume_command(lab, ["web01"])
    assert command is not None
    subprocess.run(command, check=True, env={"PATH": f"{fake.bin}:/usr/bin:/bin"})
    assert not fake.world()["vms"][vm1]["paused"]

    # env_stop: the VM the snapshot lives in is set aside, not deleted; the next start clones a fresh one
    assert provider.stop(lab, ["web01", "web02"]) == {}
    provider.discard(lab, "web01")
    vms = fake.world()["vms"]
    [aside] = [v for v in vms if v.startswith(f"{vm1}-kept-")]
    assert vm1 not in vms and snap1 in vms[aside]["snapshots"]
    provider.start(lab, hosts[:1], lambda line: None)
    provider.stop(lab, ["web01"])

    # restore: the fresh VM gives way, the set-aside VM is the host's again, at the snapshot, its saved
    # state discarded (booted boots it with a new seed)
    provider.restore(lab, "web01", folders["web01"])
    vms = fake.world()["vms"]
    assert vm1 in vms and aside not in vms and vms[vm1]["restored"] == snap1 and vms[vm1]["state"] == "poweroff"
    assert ["unregistervm", vm1, "--delete"] in fake.calls() and ["discardstate", vm1] in fake.calls()
    provider.restore(lab, "web02", folders["web02"])  # a VM that was never set aside
    assert fake.world()["vms"][vm2]["restored"] == (folders["web02"] / "vbox-snapshot").read_text().strip()

    # the snapshot deleted: VirtualBox's goes too; a set-aside VM nothing needs goes with its image
    provider.forget(lab, "web02", folders["web02"])
    assert not [s for s in fake.world()["vms"][vm2]["snapshots"] if s.startswith("booted-")]
    provider.discard(lab, "web01")
    [aside] = [v for v in fake.world()["vms"] if v.startswith(f"{vm1}-kept-")]
    provider.destroy(lab, "web01")
    assert aside not in fake.world()["vms"]
