"""qemu provider: lab hosts as QEMU virtual machines on the lab bridge, one tap each.

Each host: a qcow2 copy-on-write disk over the golden image packed as ext4 (lab.host_dir/disk.qcow2, kept
across stop/start), the Debian cloud kernel booted directly (qboot, no firmware menus) with a tiny
initramfs, busybox init from the image's layer, and its identity handed in as fw_cfg files that
guest-init copies to /run/booted before the same boot script netns hosts run. QEMU processes start in
their own session and outlive `fab`; they are found again by `-name booted-<lab id>-<host>` in /proc.
Boots are CPU-bound under TCG: at most BOOTED_BOOT_PARALLEL (default 2 x cores) boot at once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from booted.config import CHILD_ENV
from booted.hosts.identity import Identity
from booted.hosts.seed import write_seed
from booted.images.bootdisk import ensure_bootdisk
from booted.images.golden import ensure_golden
from booted.images.vm_assets import Assets, ensure_assets
from booted.netcheck import ssh_banner
from booted.providers.base import InstallMedia, Lab, Progress, Provider, Started
from booted.providers.bridge import ensure_bridge, ip_batch, link_exists, remove_bridge
from booted.providers.portfilter import guard
from booted.providers.procs import alive, cmdline
from booted.providers.qemu_usernet import FORWARDS, USERNET_MARK, free_ports, read_forwards, user_netdev, write_forwards
from booted.providers.qemuctl import QBOOT, QEMU, detect_accel, opt, qmp

KERNEL_ARGS = ("console=ttyS0 quiet panic=1 mitigations=off cryptomgr.notests i8042.noaux i8042.nokbd "
               "i8042.nopnp tsc=reliable no_timer_check 8250.nr_uarts=1 nowatchdog net.ifnames=0 root=/dev/vda")
INITS = {"busybox": "init=/usr/lib/booted/init", "systemd": "init=/lib/systemd/systemd systemd.show_status=0"}
IDENTITY_FILES = ("identity", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "authorized_keys")
POWERDOWN_SECONDS = 3.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|[\x00-\x08\x0e-\x1f]")  # a console's screen codes
def boot_timeout(base: float, booting: int, cores: int | None = None) -> float:
    """Seconds a VM may take to answer SSH: the base timeout, longer when more than 2 VMs per core boot."""
    cores = cores or os.cpu_count() or 1
    return base * max(1.0, booting / (2 * cores))


class QemuProvider(Provider):
    name = "qemu"
    tools: ClassVar[dict[str, str]] = {QEMU: "qemu-system-x86", "qemu-img": "qemu-utils", "ip": "iproute2",
                                       QBOOT: "qemu-system-data", "nft": "nftables"}

    def root_needed(self, lab: Lab | None) -> str | None:
        if self.settings.qemu_net == "tap":
            return ("BOOTED_QEMU_NET=tap needs root (a bridge and one tap per VM); or use BOOTED_QEMU_NET=user "
                    "(or auto) for user-mode networking")
        return None

    @property
    def user_net(self) -> bool:
        """User-mode networking (no root: ports forwarded on 127.0.0.1) or a tap on the lab bridge (root)."""
        net = self.settings.qemu_net
        return net == "user" or (net == "auto" and not self.settings.is_root)

    # names ---------------------------------------------------------------------------------------
    @staticmethod
    def vm_name(lab: Lab, name: str) -> str:
        return f"booted-{lab.lab_id}-{name}"

    @staticmethod
    def tap(lab: Lab, ip: str) -> str:
        return lab.link("q", ip)

    def command(self, lab: Lab, host: Identity, assets: Assets, accel: str) -> list[str]:
        """The QEMU command line of one host."""
        hdir = lab.host_dir(host.name)
        if self.user_net:
            netdev = user_netdev(lab, host, read_forwards(hdir))
        else:
            netdev = f"tap,id=n0,ifname={self.tap(lab, host.ip)},script=no,downscript=no"
        if lab.boot in ("disk", "installed"):  # SeaBIOS boots the disk's boot loader; identity on the seed disk
            boot = ["-drive", f"file={opt(hdir / 'seed.img')},if=virtio,format=raw,readonly=on"]
        else:
            boot = ["-bios", QBOOT, "-kernel", str(assets.kernel.vmlinuz), "-initrd", str(assets.initramfs),
                    "-append", f"{KERNEL_ARGS} {INITS[lab.init]}"]
            for f in IDENTITY_FILES + (("serve.sh",) if host.serve else ()):
                boot += ["-fw_cfg", f"name=opt/booted/{f},file={opt(hdir / 'identity' / f)}"]
        cmd = [QEMU, "-name", self.vm_name(lab, host.name), "-M", "pc", "-accel", accel,
               *(["-cpu", "host"] if accel == "kvm" else []), "-m", str(host.memory), "-smp", str(host.cpus),
               "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
               "-drive", f"file={opt(hdir / self.disk_name(lab))},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
               *boot,
               "-device", "virtio-rng-pci",
               "-netdev", netdev,
               "-device", f"virtio-net-pci,netdev=n0,mac={host.mac}",
               # `-serial file:` truncates on every start; append keeps the separator line written before
               "-chardev", f"file,id=console,path={opt(hdir / 'console.log')},append=on", "-serial", "chardev:console",
               "-qmp", f"unix:{opt(hdir / 'qmp.sock')},server=on,wait=off",
               "-pidfile", str(hdir / "qemu.pid")]
        return cmd

    @staticmethod
    def disk_name(lab: Lab) -> str:
        """The host's disk: its overlay on the golden image, or (boot "installed") its installed disk."""
        return "installed.qcow2" if lab.boot == "installed" else "disk.qcow2"

    # contract ------------------------------------------------------------------------------------
    def host_of(self, lab: Lab, argv: list[str]) -> str | None:
        """`qemu-system-x86_64 -name booted-<lab id>-<host> ...`"""
        if not argv[0].endswith(QEMU) or "-name" not in argv[:-1]:
            return None
        value, prefix = argv[argv.index("-name") + 1], f"booted-{lab.lab_id}-"
        return value[len(prefix):] if value.startswith(prefix) else None

    def prepare_network(self, lab: Lab) -> None:
        """The lab bridge, or for user-mode networking a marker that makes nginx listen on loopback."""
        if self.user_net:
            lab.dir.mkdir(parents=True, exist_ok=True)
            (lab.dir / USERNET_MARK).write_text("qemu user-mode networking: nginx listens on 127.0.0.1\n")
        else:
            ensure_bridge(lab)

    def endpoints(self, lab: Lab, name: str) -> dict[int, tuple[str, int]]:
        return {guest: ("127.0.0.1", fwd) for guest, fwd in read_forwards(lab.host_dir(name)).items()}

    def listen_addresses(self, lab: Lab) -> list[str]:
        addresses = ["127.0.0.1"] if (lab.dir / USERNET_MARK).exists() else []
        return addresses + ([lab.gateway] if link_exists(lab.bridge) else [])

    def start(self, lab: Lab, hosts: list[Identity], progress: Progress) -> tuple[list[Started], dict[str, str]]:
        golden = ensure_golden(self.settings, progress, lab.packages)
        cache_dir = self.settings.cache_dir
        assets = ensure_assets(cache_dir, golden, progress, self.settings.path)
        if lab.boot == "disk":  # the same disk, partitioned and bootable: overlays are made on it instead
            assets = replace(assets, disk=ensure_bootdisk(cache_dir, assets, INITS[lab.init], progress,
                                                          self.settings.path))
        accel, why = detect_accel(cache_dir, assets.kernel.vmlinuz, self.settings.accel)
        progress(f"qemu accelerator: {accel} ({why}); network: "
                 + ("user-mode, ports forwarded on 127.0.0.1" if self.user_net else f"tap on {lab.bridge}"))
        self.prepare_network(lab)
        running = self.running(lab)
        todo = [h for h in hosts if h.name not in running]
        errors = self._prepare(lab, todo, assets)
        todo = [h for h in todo if h.name not in errors]
        parallel = min(self.settings.boot_parallel, max(1, len(todo)))
        timeout = boot_timeout(self.settings.boot_timeout, parallel)
        if todo:
            progress(f"booting {len(todo)} VM(s), {parallel} at a time ({accel}, {timeout:.0f}s each)")
        started: list[Started] = []
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            futures = [pool.submit(self._boot, lab, h, assets, accel, timeout) for h in todo]
            for done, future in enumerate(as_completed(futures), 1):
                name, pid, error = future.result()
                if pid is not None:
                    started.append(Started(name, pid))
                if error:
                    errors[name] = error
                state = error or "answers SSH"
                progress(f"  [{time.monotonic() - t0:5.1f}s] {name}: {state} ({done}/{len(todo)})")
        failed = [h for h in todo if h.name in errors and h.name not in {s.name for s in started}]
        for h in failed:
            (lab.host_dir(h.name) / FORWARDS).unlink(missing_ok=True)
        ip_batch([f"link del {self.tap(lab, h.ip)}" for h in failed if link_exists(self.tap(lab, h.ip))])
        started += [Started(n, pid) for n, pid in running.items() if n in {h.name for h in hosts}]
        return started, errors

    def stop(self, lab: Lab, names: list[str]) -> dict[str, str]:
        scan = self.processes(lab)
        targets = {n: scan[n][0] for n in names if n in scan}
        if targets:
            with ThreadPoolExecutor(max_workers=min(32, len(targets))) as pool:
                list(pool.map(lambda n: self._stop_vm(lab, n, targets[n]), targets))
        taps = [t for t in (self._recorded_tap(lab, n) for n in names) if t and link_exists(t)]
        ip_batch([f"link del {t}" for t in taps])
        errors = {n: f"qemu PID {pid} did not exit" for n, pid in targets.items() if self._ours(lab, n, pid)}
        for n in names:
            if n not in errors:
                for f in ("qmp.sock", "qemu.pid", FORWARDS):
                    (lab.host_dir(n) / f).unlink(missing_ok=True)
        return errors

    def clone(self, lab: Lab, src: str, new: str) -> None:
        disk, target = lab.host_dir(src) / self.disk_name(lab), self.new_disk(lab, new, self.disk_name(lab))
        if not disk.exists():
            return  # never booted: the clone starts from the golden image too
        sock = lab.host_dir(src) / "qmp.sock"
        paused = src in self.running(lab) and self._qmp(sock, "stop")  # a consistent copy of a live disk
        try:
            subprocess.run(["cp", "--sparse=always", str(disk), str(target)], check=True)
        finally:
            if paused:
                self._qmp(sock, "cont")

    def teardown(self, lab: Lab) -> None:
        scan = self.processes(lab)
        in_use = {m.group(1) for _, argv in scan.values() for a in argv if (m := re.search(r"ifname=([^,]+)", a))}
        pattern = re.compile(rf"bq{lab.lab_id}\d+")
        try:
            links = os.listdir("/sys/class/net")
        except OSError:
            links = []
        ip_batch([f"link del {t}" for t in links if pattern.fullmatch(t) and t not in in_use])
        if not scan:
            remove_bridge(lab)
            (lab.dir / USERNET_MARK).unlink(missing_ok=True)

    # helpers -------------------------------------------------------------------------------------
    def _ours(self, lab: Lab, name: str, pid: int) -> bool:
        """PID still is this host's live QEMU (checked before every signal: PIDs get reused)."""
        argv = cmdline(pid)
        return alive(pid) and "-name" in argv[:-1] and argv[argv.index("-name") + 1] == self.vm_name(lab, name)

    @staticmethod
    def _recorded_tap(lab: Lab, name: str) -> str | None:
        try:
            return (lab.host_dir(name) / "tap").read_text().strip() or None
        except OSError:
            return None

    @staticmethod
    def _qmp(sock: Path, command: str) -> bool:
        try:
            reply = qmp(sock, command)
        except (OSError, ValueError):
            return False
        return bool(reply and reply[0] and "return" in reply[0])

    def _prepare(self, lab: Lab, hosts: list[Identity], assets: Assets) -> dict[str, str]:
        """Disks, identity files and taps for hosts about to boot; host -> error for those that failed."""
        errors: dict[str, str] = {}
        for host in hosts:
            hdir = lab.host_dir(host.name)
            hdir.mkdir(parents=True, exist_ok=True)
            host.write_dir(hdir / "identity")
            if lab.boot in ("disk", "installed"):
                write_seed(hdir / "identity", hdir / "seed.img", self.settings.path)
            if self.user_net:
                ports = [22, *host.ports]
                write_forwards(hdir, dict(zip(ports, free_ports(len(ports)))))
                (hdir / "tap").unlink(missing_ok=True)
            else:
                (hdir / FORWARDS).unlink(missing_ok=True)
                (hdir / "tap").write_text(self.tap(lab, host.ip) + "\n")
            disk = hdir / self.disk_name(lab)
            if lab.boot == "installed":
                if not disk.exists():
                    errors[host.name] = (f"{host.name} has no installed disk ({disk}): install it first with fab "
                                         f"image_build --name {host.name} --installer preseed (or kickstart --iso)")
            elif not disk.exists():
                proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(assets.disk), "-F", "raw",
                                       str(disk)], capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    errors[host.name] = f"qemu-img create failed: {proc.stderr.strip()[-300:]}"
        if self.user_net:
            return errors
        return self._make_taps(lab, [h for h in hosts if h.name not in errors], errors)

    def _make_taps(self, lab: Lab, hosts: list[Identity], errors: dict[str, str]) -> dict[str, str]:
        """A tap on the lab bridge per host (a crashed run's leftover replaced); host -> error added."""
        taps = [self.tap(lab, h.ip) for h in hosts if h.name not in errors]
        lines = [f"link del {t}" for t in taps if link_exists(t)]  # leftover of a crashed run
        lines += [f"tuntap add dev {t} mode tap" for t in taps]
        err = ip_batch(lines)
        for t in taps:
            try:
                Path(f"/proc/sys/net/ipv6/conf/{t}/disable_ipv6").write_text("1")
            except OSError:
                pass
        guard(lab, [(self.tap(lab, h.ip), h.mac, h.ip) for h in hosts if h.name not in errors])
        err += ip_batch([f"link set {t} master {lab.bridge} up" for t in taps])
        for host in hosts:
            if host.name not in errors and not link_exists(self.tap(lab, host.ip)):
                errors[host.name] = f"could not create tap {self.tap(lab, host.ip)}: {err.strip()[-300:]}"
        return errors

    def check_install(self) -> None:
        if self.user_net:  # the installer needs the lab bridge: its static address, nginx, the apt proxy
            super().check_install()

    def install(self, lab: Lab, host: Identity, media: InstallMedia, timeout: float, progress: Progress
                ) -> tuple[bool, str]:
        """Run an installer (its kernel, initrd and command line; its ISO as a CD) onto a new disk,
        installed.qcow2, until it powers the VM off (done) or `timeout` passes (then the VM is ended)."""
        self.check_install()
        hdir = lab.host_dir(host.name)
        hdir.mkdir(parents=True, exist_ok=True)
        disk = hdir / "installed.qcow2"
        disk.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "4G"], check=True)
        errors = self._make_taps(lab, [host], {})
        if errors:
            return False, errors[host.name]
        accel, _ = detect_accel(self.settings.cache_dir, media.kernel, self.settings.accel)
        console = hdir / "console.log"
        console.write_text(f"--- booted: installing {host.name} at {time.strftime('%F %T')} (qemu, {accel})\n")
        cmd = [QEMU, "-name", self.vm_name(lab, host.name), "-M", "pc", "-accel", accel, "-m", "1024", "-smp", "1",
               "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
               "-kernel", str(media.kernel), "-initrd", str(media.initrd), "-append", media.append,
               "-drive", f"file={opt(disk)},if=virtio,format=qcow2,cache=unsafe",
               *(["-drive", f"file={opt(media.iso)},media=cdrom,readonly=on"] if media.iso else []),
               "-netdev", f"tap,id=n0,ifname={self.tap(lab, host.ip)},script=no,downscript=no",
               "-device", f"virtio-net-pci,netdev=n0,mac={host.mac}",
               "-chardev", f"file,id=console,path={opt(console)},append=on", "-serial", "chardev:console",
               "-pidfile", str(hdir / "qemu.pid")]
        start = time.monotonic()
        with open(hdir / "qemu.log", "wb") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=CHILD_ENV,
                                    start_new_session=True)
        shown = 0.0
        try:
            while proc.poll() is None and time.monotonic() - start < timeout:
                if time.monotonic() - shown > 30:
                    shown = time.monotonic()
                    progress(f"  [{shown - start:6.0f}s] installing {host.name}: {self._why(hdir)[-120:]}")
                time.sleep(1)
        finally:  # a timeout, Ctrl-C or an error: the installer VM does not outlive the run
            finished = proc.poll() is not None
            if not finished:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if not finished:
            return False, f"the install did not finish within {timeout:.0f}s: {self._why(hdir)}"
        took = time.monotonic() - start
        if proc.returncode != 0:
            return False, f"qemu exited with {proc.returncode}: {self._why(hdir)}"
        return True, f"installed in {took:.0f}s onto {disk}"

    def _boot(self, lab: Lab, host: Identity, assets: Assets, accel: str, timeout: float
              ) -> tuple[str, int | None, str | None]:
        """Start one VM and wait until it answers SSH, dies, or times out (it keeps running then)."""
        hdir = lab.host_dir(host.name)
        console = hdir / "console.log"
        if console.exists() and console.stat().st_size:
            os.replace(console, hdir / "console.log.1")  # the previous boot
        console.write_text(f"--- booted: starting {host.name} at {time.strftime('%F %T')} (qemu, {accel})\n")
        with open(hdir / "qemu.log", "wb") as log:
            try:
                proc = subprocess.Popen(self.command(lab, host, assets, accel), stdin=subprocess.DEVNULL, env=CHILD_ENV,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                return host.name, None, f"could not start {QEMU}: {exc}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return host.name, None, f"qemu exited with {proc.returncode}: {self._why(hdir)}"
            addr, port = ("127.0.0.1", read_forwards(hdir)[22]) if self.user_net else (host.ip, 22)
            if ssh_banner(addr, 1.0, port):
                return host.name, proc.pid, None
            time.sleep(0.1)
        return host.name, proc.pid, f"no SSH banner within {timeout:.0f}s (still running): {self._why(hdir)}"

    @staticmethod
    def _why(hdir: Path) -> str:
        lines: list[str] = []
        for f in ("qemu.log", "console.log"):
            try:
                lines += (hdir / f).read_text(errors="replace").strip().splitlines()[-2:]
            except OSError:
                pass
        text = " / ".join(ANSI.sub("", line).strip() for line in lines if ANSI.sub("", line).strip())
        return text[-400:]

    def _stop_vm(self, lab: Lab, name: str, pid: int) -> None:
        """Power button (acpid syncs and powers off), then QMP quit, then SIGTERM, then SIGKILL."""
        sock = lab.host_dir(name) / "qmp.sock"
        steps = [(lambda: self._qmp(sock, "system_powerdown"), POWERDOWN_SECONDS),
                 (lambda: self._qmp(sock, "quit"), 2.0),
                 (lambda: self._signal(lab, name, pid, signal.SIGTERM), 3.0),
                 (lambda: self._signal(lab, name, pid, signal.SIGKILL), 3.0)]
        for action, wait in steps:
            if not self._ours(lab, name, pid):
                return
            if not action():
                continue
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and alive(pid):
                time.sleep(0.02)

    def _signal(self, lab: Lab, name: str, pid: int, sig: signal.Signals) -> bool:
        if not self._ours(lab, name, pid):
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

