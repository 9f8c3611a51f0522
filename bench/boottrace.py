"""Boot timeline trials: one VM on booted's own QEMU command line, QEMU exec to sshd's banner, phase by phase.

    .venv/bin/python bench/boottrace.py --boots 3                    # booted as it is: timeline, medians
    .venv/bin/python bench/boottrace.py --boots 5 --ab A,B            # alternate two trial variants
    .venv/bin/python bench/boottrace.py --kernel-log --boots 1        # also the kernel's own printk times

What it boots: booted's kernel and golden disk (an overlay in a temporary folder), booted's initramfs recipe
and the guest files of this checkout (booted/guest/*, copied over the disk's by the trial's /init before it
hands over: no golden image is rebuilt for a trial), user-mode networking (the guest's sshd reached through a
forward on 127.0.0.1, its phone-home answered by a small HTTP server on 127.0.0.1). Every step writes a
`booted-trace: <name>` line to the console; this script notes when each line appears (QEMU's exec = 0), polls
for sshd's banner on the forward, then logs in once over SSH (pinned host key). Last line:
`exec_to_ssh_s=<median> floor_s=<median> ssh_over_floor=<ratio>` of the first variant.
"""

from __future__ import annotations

import argparse
import http.server
import ipaddress
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar

import _bootfloor
import _traceinit
from boot import prepare

from booted.hosts.identity import Identity
from booted.images.vm_assets import Assets
from booted.providers.lab import Lab
from booted.providers.qemu_cmdline import host_command

TIMEOUT = 240.0
PHASES = (("kernel", "", "init"), ("modules", "init", "modules"), ("root", "modules", "switch"),
          ("busybox-init", "switch", "guest-init"), ("guest-init", "guest-init", "guest-init-end"),
          ("to-boot", "guest-init-end", "boot"), ("boot", "boot", "sshd-exec"), ("sshd", "sshd-exec", "ssh"))
STAMP = b"booted-trace: "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PhoneHome(http.server.BaseHTTPRequestHandler):
    """Answers the guest's phone-home (200) and notes when it came (`seen`: a subclass per trial VM sets it)."""

    seen: ClassVar[list[float]]

    def do_GET(self) -> None:
        self.seen.append(time.monotonic())
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def keys(tmp: Path) -> tuple[Path, Path]:
    """A host key and a client key for the trial (ed25519, no passphrase)."""
    host, client = tmp / "host_ed25519", tmp / "client_ed25519"
    for key in (host, client):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return host, client


def banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(1.0)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def one_boot(argv: list[str], console: Path, ssh_port: int, ssh_argv: list[str], phoned: list[float]
             ) -> dict[str, float]:
    """QEMU exec -> each trace line, the banner, the first login, the phone-home (seconds after exec)."""
    console.unlink(missing_ok=True)
    phoned.clear()
    marks: dict[str, float] = {}
    began = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    offset = 0
    try:
        while "ssh" not in marks:
            now = time.monotonic() - began
            if now > TIMEOUT or proc.poll() is not None:
                tail = console.read_bytes()[-600:] if console.exists() else b""
                raise RuntimeError(f"no SSH banner after {now:.0f}s (QEMU rc {proc.poll()}): {tail!r}")
            if console.exists():
                data = console.read_bytes()
                for line in data[offset:data.rfind(b"\n") + 1].splitlines():
                    if STAMP in line:
                        marks.setdefault(line.split(STAMP, 1)[1].decode(errors="replace").split(" @")[0].strip(), now)
                offset = max(offset, data.rfind(b"\n") + 1)
            if "sshd-exec" in marks and banner(ssh_port):
                marks["ssh"] = time.monotonic() - began
            time.sleep(0.01)
        t0 = time.monotonic()
        login = subprocess.run(ssh_argv + ["true"], capture_output=True, timeout=60, check=False)
        if login.returncode != 0:
            raise RuntimeError(f"first login failed: {login.stderr.decode(errors='replace')[-300:]}")
        marks["login_s"] = time.monotonic() - t0
        deadline = time.monotonic() + 20
        while not phoned and time.monotonic() < deadline:
            time.sleep(0.05)
        if phoned:
            marks["phoned"] = phoned[0] - began
        data = console.read_bytes()
        for line in data[offset:].splitlines():
            if STAMP in line:
                name = line.split(STAMP, 1)[1].decode(errors="replace").split(" @")[0].strip()
                marks.setdefault(name, time.monotonic() - began)
        marks.update(_traceinit.uptimes(data))
        return marks
    finally:
        proc.kill()
        proc.wait(timeout=10)


def dropbear_files(vdir: Path, host_key: Path, client: Path) -> dict[str, tuple[bytes, int]]:
    """The dropbear trial's files for the root disk: Debian's dropbear-bin and its two libraries (unpacked in
    $BOOTED_DROPBEAR_ROOT), the host key converted here, root's authorized_keys."""
    root = Path(os.environ.get("BOOTED_DROPBEAR_ROOT", "/tmp/s21/bi-dropbear/root"))
    libs = root / "usr/lib/x86_64-linux-gnu"
    key = vdir / "host.dropbear"
    subprocess.run([str(root / "usr/bin/dropbearconvert"), "openssh", "dropbear", str(host_key), str(key)],
                   env={**os.environ, "LD_LIBRARY_PATH": str(libs)}, check=True, capture_output=True)
    files = {"usr/sbin/dropbear": ((root / "usr/sbin/dropbear").read_bytes(), 0o755),
             "etc/dropbear/host.dropbear": (key.read_bytes(), 0o600),
             "root/.ssh/authorized_keys": (Path(f"{client}.pub").read_bytes(), 0o600)}
    for lib in ("libtomcrypt.so.1", "libtommath.so.1"):
        files[f"usr/lib/x86_64-linux-gnu/{lib}"] = ((libs / lib).read_bytes(), 0o644)
    return files


def setup(assets: Assets, accel: str, tmp: Path, variant: str, kernel_log: bool
          ) -> tuple[list[str], Path, int, list[str], list[float]]:
    """The trial VM's command line (booted's, with the trial initramfs), console file, forward port, ssh argv."""
    vdir = tmp / variant
    lab = Lab("trace", "7e7e7e", ipaddress.ip_network("10.0.2.0/24"), vdir / "lab")
    hdir = lab.host_dir("trace")
    vdir.mkdir(parents=True)
    host_key, client = keys(vdir)
    ssh_port, http_port = free_port(), free_port()
    host = Identity(name="trace", ip="10.0.2.15", prefix=24, gateway="10.0.2.2", mac="52:54:00:12:34:56",
                    boot_url=f"http://10.0.2.2:{http_port}/boot", login_user="root", pw_hash=None,
                    host_key=host_key, authorized_key=Path(f"{client}.pub").read_text().strip())
    host.write_dir(hdir / "identity")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(assets.disk), "-F", "raw",
                    str(hdir / "disk.qcow2")], check=True)
    netdev = f"user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-10.0.2.15:22"
    argv = _bootfloor.dropped(host_command(lab, host, assets, accel, netdev), "-qmp")
    initrd = vdir / "trace-initramfs.gz"
    extra = _traceinit.build(assets, variant, initrd, dropbear_files(vdir, host_key, client)
                             if variant == "dropbear" else None)
    argv = _bootfloor.replaced(argv, "-initrd", str(initrd))
    append = argv[argv.index("-append") + 1]
    if kernel_log:
        append = append.replace(" quiet", "") + " printk.time=1 initcall_debug loglevel=8"
    argv = _traceinit.qemu_argv(variant, _bootfloor.replaced(argv, "-append", f"{append} {extra}".strip()))
    known = vdir / "known_hosts"
    known.write_text(f"[127.0.0.1]:{ssh_port} {Path(f'{host_key}.pub').read_text().split(' ')[0]} "
                     f"{Path(f'{host_key}.pub').read_text().split(' ')[1]}\n")
    ssh_argv = ["ssh", "-p", str(ssh_port), "-i", str(client), "-o", f"UserKnownHostsFile={known}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30",
                "-o", "GlobalKnownHostsFile=/dev/null", "root@127.0.0.1"]
    handler = type("TrialPhoneHome", (PhoneHome,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", http_port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return argv, hdir / "console.log", ssh_port, ssh_argv, handler.seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--boots", type=int, default=3, help="boots per variant (alternating), default 3")
    parser.add_argument("--ab", default="base", help=f"comma list of variants ({', '.join(_traceinit.VARIANTS)})")
    parser.add_argument("--floor", type=int, default=3, help="floor boots (interleaved), default 3")
    parser.add_argument("--kernel-log", action="store_true", help="printk times + initcall_debug on the console")
    args = parser.parse_args()
    variants = [v for v in args.ab.split(",") if v]
    if unknown := set(variants) - set(_traceinit.VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}: known {sorted(_traceinit.VARIANTS)}")
    if os.geteuid() != 0:
        print("bench/boottrace.py needs root (QEMU, the golden image)", file=sys.stderr)
        return 2
    accel, _, assets = prepare(["busybox"])
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    floors: list[float] = []
    with tempfile.TemporaryDirectory(prefix="booted-bench-trace-") as tmpname:
        tmp = Path(tmpname)
        setups = {v: setup(assets, accel, tmp, v, args.kernel_log) for v in variants}
        fargv, fconsole = _bootfloor.command(assets, accel, tmp / "floor")
        for i in range(args.boots):
            for v in variants:
                try:
                    marks = one_boot(*setups[v])
                except RuntimeError as exc:
                    print(f"{v} #{i + 1}: FAILED {exc}", flush=True)
                    continue
                results[v].append(marks)
                print(f"{v} #{i + 1}: " + " ".join(f"{k}={t:.2f}" for k, t in sorted(marks.items(),
                                                                                      key=lambda kv: kv[1])
                                                    if not k.startswith("up:")), flush=True)
                if args.kernel_log:
                    log = setups[v][1].read_text(errors="replace")
                    (Path("/tmp") / f"boottrace-{v}-{i}.log").write_text(log)
            if i < args.floor:
                floors.append(_bootfloor.one_boot(fargv, fconsole))
                print(f"floor #{i + 1}: {floors[-1]:.2f}", flush=True)
    print(f"load average: {os.getloadavg()[0]:.1f}")
    for v in variants:
        names = sorted({k for m in results[v] for k in m if not k.startswith("up:")}, key=lambda k: statistics.median(
            [m[k] for m in results[v] if k in m]))
        print(f"{v}: " + " ".join(f"{k}={statistics.median([m[k] for m in results[v] if k in m]):.2f}"
                                  for k in names))
    for v in variants:
        done = [m for m in results[v] if all(k in m for _, a, b in PHASES for k in (a, b) if k)]
        print(f"{v} phases (median of {len(done)}): " + " ".join(
            f"{name}={statistics.median(m[b] - (m[a] if a else 0.0) for m in done):.2f}" for name, a, b in PHASES)
            if done else f"{v}: no complete boot")
    first = statistics.median(m["ssh"] for m in results[variants[0]])
    floor = statistics.median(floors) if floors else float("nan")
    print(f"exec_to_ssh_s={first:.2f} floor_s={floor:.2f} ssh_over_floor={first / floor:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
