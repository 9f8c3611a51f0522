"""qemu provider: lab hosts as QEMU virtual machines on the lab bridge, one tap each.

Each host: a qcow2 copy-on-write disk over the golden image packed as ext4 (lab.host_dir/disk.qcow2, kept
across stop/start), the Debian cloud kernel booted directly (qboot, no firmware menus) with a tiny
initramfs, busybox init from the image's layer, and its identity handed in as fw_cfg files that
guest-init copies to /run/booted before the same boot script netns hosts run (providers/qemu_cmdline.py).
QEMU processes start in their own session and outlive `fab`; they are found again by
`-name booted-<lab id>-<host>` in /proc. A VM is launched once QEMU answers on its QMP socket; its boot is
discovery's to wait for. Without root, user-mode networking (providers/qemu_usernet.py) replaces the taps.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from booted.config import CHILD_ENV
from booted.errors import ConfigError
from booted.hosts.identity import Identity
from booted.hosts.seed import write_seed
from booted.images.vm_assets import Assets
from booted.providers import qemu_install, qemu_snapshot
from booted.providers.base import InstallMedia, Progress, Started
from booted.providers.bridge import ensure_bridge, remove_bridge
from booted.providers.lab import Lab
from booted.providers.links import link_exists
from booted.providers.qemu_cmdline import disk_name, host_command, tap_netdev
from booted.providers.qemu_options import Boot, boot_of
from booted.providers.qemu_tap import host_taps, make_taps, record_tap, recorded_taps, remove_stale_taps, remove_taps
from booted.providers.qemu_usernet import FORWARDS, USERNET_MARK, free_ports, read_forwards, user_netdev, write_forwards
from booted.providers.qemuctl import QBOOT, QEMU, detect_accel, is_vm, last_words, qmp_ok, stop_vm
from booted.providers.vm import INITS as INITS  # re-exported: tests and bench/ take INITS from here
from booted.providers.vm import Launch, VmProvider, vm_name

LAUNCH_SECONDS = 10.0  # QEMU answers QMP within a second once its devices are set up


class QemuProvider(VmProvider):
    name = "qemu"
    tools: ClassVar[dict[str, str]] = {QEMU: "qemu-system-x86", "qemu-img": "qemu-utils", "ip": "iproute2",
                                       QBOOT: "qemu-system-data", "nft": "nftables"}
    process = QEMU
    name_option = "-name"

    def root_needed(self, lab: Lab | None) -> str | None:
        if self.settings.qemu_net == "tap" or (lab is not None and len(lab.networks) > 1):
            if self.settings.qemu_net != "tap":
                return ("several networks need a tap per network on their bridges (root); user-mode networking "
                        "has one NIC")
            return ("BOOTED_QEMU_NET=tap needs root (a bridge and one tap per VM); or use BOOTED_QEMU_NET=user "
                    "(or auto) for user-mode networking")
        return None

    def check(self, lab: Lab | None = None) -> None:
        super().check(lab)
        if lab is not None and len(lab.networks) > 1 and self.user_net:
            raise ConfigError(f"environment {lab.env!r} has several networks: qemu needs a tap per network for "
                              "that (BOOTED_QEMU_NET=tap or auto, as root), not user-mode networking")

    @property
    def user_net(self) -> bool:
        """User-mode networking (no root: ports forwarded on 127.0.0.1) or a tap on the lab bridge (root)."""
        net = self.settings.qemu_net
        return net == "user" or (net == "auto" and not self.settings.is_root)

    def command(self, lab: Lab, host: Identity, assets: Assets, accel: str) -> list[str]:
        """The QEMU command line of one host."""
        if self.user_net:
            netdev = user_netdev(lab, host, read_forwards(lab.host_dir(host.name)))
        else:
            netdev = tap_netdev(lab, host)
        return host_command(lab, host, assets, accel, netdev)

    # the network ---------------------------------------------------------------------------------
    def prepare_network(self, lab: Lab) -> None:
        """The lab bridge, or for user-mode networking a marker that makes nginx listen on loopback."""
        if self.user_net:
            lab.dir.mkdir(parents=True, exist_ok=True)
            (lab.dir / USERNET_MARK).write_text("qemu user-mode networking: nginx listens on 127.0.0.1\n")
        else:
            ensure_bridge(lab)

    def endpoints(self, lab: Lab, name: str) -> dict[int, tuple[str, int]]:
        return {guest: ("127.0.0.1", fwd) for guest, fwd in read_forwards(lab.host_dir(name)).items()}

    def local_nics(self, lab: Lab, name: str, ip: str) -> dict[str, str]:
        taps = recorded_taps(lab.host_dir(name))  # none: user-mode networking, nothing of it is a link here
        return {net or lab.env: tap for net, tap in taps.items()}

    def listen_addresses(self, lab: Lab) -> list[str]:
        addresses = ["127.0.0.1"] if (lab.dir / USERNET_MARK).exists() else []
        return addresses + ([lab.gateway] if link_exists(lab.bridge) else [])

    # launching -----------------------------------------------------------------------------------
    def launcher(self, lab: Lab, hosts: list[Identity], progress: Progress) -> tuple[Launch, dict[str, str]]:
        assets = self.golden_assets(lab.packages, progress)
        if boot_of(lab) is Boot.DISK:  # the same disk, partitioned and bootable: overlays are made on it instead
            assets = replace(assets, disk=self.bootable_disk(assets, INITS[lab.init], progress, "raw"))
        accel, why = detect_accel(self.settings.cache_dir, assets.kernel.vmlinuz, self.settings.accel)
        progress(f"qemu accelerator: {accel} ({why}); network: "
                 + ("user-mode, ports forwarded on 127.0.0.1" if self.user_net else f"tap on {lab.bridge}"))
        errors = self._prepare(lab, hosts, assets)
        if not self.user_net:
            errors |= make_taps(lab, [h for h in hosts if h.name not in errors])
        count = len(hosts) - len(errors)
        if count:
            progress(f"launching {count} VM(s), {min(self.settings.boot_parallel, count)} at a time ({accel})")
        return (lambda host: self._launch(lab, host, assets, accel)), errors

    def _prepare(self, lab: Lab, hosts: list[Identity], assets: Assets) -> dict[str, str]:
        """Disks, identity files and forwarded ports for hosts about to boot; host -> error for those that
        failed."""
        errors: dict[str, str] = {}
        for host in hosts:
            hdir = lab.host_dir(host.name)
            hdir.mkdir(parents=True, exist_ok=True)
            host.write_dir(hdir / "identity")
            if boot_of(lab) is not Boot.KERNEL:
                write_seed(hdir / "identity", hdir / "seed.img", self.settings.path)
            if self.user_net:
                ports = [22, *host.ports]
                write_forwards(hdir, dict(zip(ports, free_ports(len(ports)))))
                (hdir / "tap").unlink(missing_ok=True)
            else:
                (hdir / FORWARDS).unlink(missing_ok=True)
                record_tap(lab, host)
            disk = hdir / disk_name(lab)
            if boot_of(lab) is Boot.INSTALLED:
                if not disk.exists():
                    errors[host.name] = (f"{host.name} has no installed disk ({disk}): install it first with fab "
                                         f"image_build --name {host.name} --installer preseed (or kickstart --iso)")
            elif not disk.exists():
                proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(assets.disk), "-F", "raw",
                                       str(disk)], capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    errors[host.name] = f"qemu-img create failed: {proc.stderr.strip()[-300:]}"
        return errors

    def _launch(self, lab: Lab, host: Identity, assets: Assets, accel: str) -> tuple[int | None, str | None]:
        """Start one VM: launched once QEMU answers on its QMP socket (its disks and network are set up by
        then), failed if QEMU exits first. A failed host's tap and forwarded ports go."""
        hdir = lab.host_dir(host.name)
        console = hdir / "console.log"
        if console.exists() and console.stat().st_size:
            os.replace(console, hdir / "console.log.1")  # the previous boot
        console.write_text(f"--- booted: starting {host.name} at {time.strftime('%F %T')} (qemu, {accel})\n")
        error: str | None = None
        with open(hdir / "qemu.log", "wb") as log:
            try:
                proc = subprocess.Popen(self.command(lab, host, assets, accel), stdin=subprocess.DEVNULL, env=CHILD_ENV,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=hdir)
            except OSError as exc:
                error = f"could not start {QEMU}: {exc}"
        deadline = time.monotonic() + LAUNCH_SECONDS
        while error is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                error = f"qemu exited with {proc.returncode}: {last_words(hdir)}"
            elif qmp_ok(hdir / "qmp.sock", "query-status"):
                break
            else:
                time.sleep(0.05)
        if error is None:
            return proc.pid, None  # (a QEMU slow to answer still runs: the wait for its boot judges it)
        (hdir / FORWARDS).unlink(missing_ok=True)
        if not self.user_net:
            remove_taps(host_taps(lab, host))
        return None, error

    def why_not_booted(self, lab: Lab, name: str) -> str:
        if name in self.running(lab):
            return ""
        return f"the VM stopped while booting: {last_words(lab.host_dir(name))}"

    # the rest of the contract --------------------------------------------------------------------
    def stop(self, lab: Lab, names: list[str]) -> dict[str, str]:
        scan = self.processes(lab)
        targets = {n: scan[n][0] for n in names if n in scan}
        if targets:
            with ThreadPoolExecutor(max_workers=min(32, len(targets))) as pool:
                list(pool.map(lambda n: stop_vm(vm_name(lab, n), targets[n], lab.host_dir(n) / "qmp.sock"), targets))
        remove_taps([tap for n in names for tap in recorded_taps(lab.host_dir(n)).values()])
        errors = {n: f"qemu PID {pid} did not exit" for n, pid in targets.items() if is_vm(pid, vm_name(lab, n))}
        for n in names:
            if n not in errors:
                for f in ("qmp.sock", "qemu.pid", FORWARDS):
                    (lab.host_dir(n) / f).unlink(missing_ok=True)
        return errors

    def clone(self, lab: Lab, src: str, new: str) -> None:
        disk, target = lab.host_dir(src) / disk_name(lab), self.new_disk(lab, new, disk_name(lab))
        if not disk.exists():
            return  # never booted: the clone starts from the golden image too
        sock = lab.host_dir(src) / "qmp.sock"
        paused = src in self.running(lab) and qmp_ok(sock, "stop")  # a consistent copy of a live disk
        try:
            subprocess.run(["cp", "--sparse=always", str(disk), str(target)], check=True)
        finally:
            if paused:
                qmp_ok(sock, "cont")

    def teardown(self, lab: Lab) -> None:
        scan = self.processes(lab)
        in_use = {m.group(1) for _, argv in scan.values() for a in argv if (m := re.search(r"ifname=([^,]+)", a))}
        remove_stale_taps(lab, in_use)
        if not scan:
            remove_bridge(lab)
            (lab.dir / USERNET_MARK).unlink(missing_ok=True)

    # snapshots (providers/qemu_snapshot.py) -----------------------------------------------------------
    snapshot_keeps = ("each VM's memory (its migration stream) and disk overlay; a restore continues it "
                      "where it was paused, no boot")
    restore_resumes = True
    can_pause = True

    def pause(self, lab: Lab, names: list[str]) -> dict[str, str]:
        return qemu_snapshot.pause(lab, names)

    def resume(self, lab: Lab, names: list[str]) -> dict[str, str]:
        return qemu_snapshot.resume(lab, names)

    def resume_command(self, lab: Lab, names: list[str]) -> list[str] | None:
        return qemu_snapshot.resume_command(lab, names)

    def save(self, lab: Lab, name: str, folder: Path) -> list[str]:
        return qemu_snapshot.save(lab, name, self.running(lab).get(name), folder)

    def restore(self, lab: Lab, name: str, folder: Path) -> None:
        qemu_snapshot.restore(lab, name, folder)

    def drop(self, lab: Lab, names: list[str]) -> None:
        qemu_snapshot.drop(lab, {n: p for n, p in self.running(lab).items() if n in names})

    def start_saved(self, lab: Lab, hosts: list[Identity]) -> tuple[list[Started], dict[str, str]]:
        errors = {} if self.user_net else make_taps(lab, hosts)
        todo = [h.name for h in hosts if h.name not in errors]
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(todo)))) as pool:
            done = dict(zip(todo, pool.map(lambda n: qemu_snapshot.start_saved(lab, n), todo)))
        errors |= {n: why for n, (_, why) in done.items() if why}
        if not self.user_net:
            remove_taps([tap for h in hosts if h.name in errors for tap in host_taps(lab, h)])
        return [s for s, _ in done.values() if s is not None], errors

    def check_install(self) -> None:
        if self.user_net:  # the installer needs the lab bridge: its static address, nginx, the apt proxy
            super().check_install()

    def install(self, lab: Lab, host: Identity, media: InstallMedia, timeout: float, progress: Progress
                ) -> tuple[bool, str]:
        """Run an installer onto a new disk, installed.qcow2, until it powers the VM off (providers/
        qemu_install.py)."""
        self.check_install()
        return qemu_install.install(self.settings, lab, host, media, timeout, progress)
