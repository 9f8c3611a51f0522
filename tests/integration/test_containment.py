"""Hosts contained (issue 19): a netns host's root, trying the escapes a root in a container tries (the chroot
climb of the probe, /proc/PID/root, mount, core_pattern, uevent_helper, mknod of a disk, open_by_handle_at,
setns/nsenter, ptrace and kill of a controller process), finds nothing of the controller: a canary file in
the state dir, the lab key and a canary process stay out of reach. Packages, package users and systemd hosts
keep working in the user namespace."""

from __future__ import annotations

import ast
import base64
import os
import secrets
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import LabRun
from tests.integration.test_netns_lab import make_hello_repo

pytestmark = pytest.mark.integration

ENV = '''ENVIRONMENTS = {{"ct": {{"provider": "netns", "network": "{net}", "init": "{init}", "hosts": {{
    "web[01:02]": {{"role": "worker", "service": "hello", "version": "1.0"}}}}}}}}
'''

# Run as root inside a host: python3 - STATE PID ROOTDEV. Prints one "name: value" line per try.
PROBE = r'''
import ctypes, os, subprocess, sys
state, pid, disk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
NS = ("mnt", "pid", "user", "net", "uts", "ipc", "cgroup")
def out(name, value): print(f"{name}: {value}", flush=True)
def err(ret): return f"ok {ret}" if ret >= 0 else f"error {os.strerror(ctypes.get_errno())}"
def read(path):
    try:
        with open(path, "rb") as f: return f.read(300).decode(errors="replace").replace("\0", " ")
    except OSError as e: return f"error {e.strerror}"
def write(path, text):
    try:
        with open(path, "w") as f: f.write(text)
        return "written"
    except OSError as e: return f"error {e.strerror}"
def child(fn):
    r = os.fork()
    if r == 0:
        try: fn()
        finally: os._exit(0)
    os.waitpid(r, 0)
out("uid", os.getuid())
out("uid_map", read("/proc/self/uid_map").split())
def climb():  # the escape of the probe: chroot deeper, fchdir out, climb, chroot there
    fd = os.open("/", os.O_RDONLY)
    os.makedirs("/tmp/.e", exist_ok=True)
    os.chroot("/tmp/.e"); os.fchdir(fd)
    for _ in range(64): os.chdir("..")
    os.chroot(".")
    out("climb-key", read(f"{state}/keys/lab_ed25519"))
    out("climb-canary", read(f"{state}/canary"))
    out("climb-write", write(f"{state}/escaped", "x"))
    out("climb-root", sorted(os.listdir("/")))
child(climb)
out("state-exists", os.path.exists(state))
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
out("pids", pids)
for p in pids:
    out(f"cmdline-{p}", read(f"/proc/{p}/cmdline"))
    out(f"proc-root-{p}", read(f"/proc/{p}/root{state}/canary"))
out("mount-tmpfs", err(libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)))
out("mount-cmd", subprocess.run(["mount", "-t", "proc", "proc", "/mnt"], capture_output=True).returncode)
out("core_pattern", write("/proc/sys/kernel/core_pattern", "|/tmp/x"))
out("uevent_helper", write("/sys/kernel/uevent_helper", "/tmp/x"))
out("sysrq", write("/proc/sysrq-trigger", "h"))
def unmask():  # a mount namespace of its own, to undo what hides the machine
    out("unshare-mnt", err(libc.unshare(0x00020000)))
    out("umount-proc-sys", err(libc.umount2(b"/proc/sys", 2)))
    out("umount-dev", err(libc.umount2(b"/dev", 2)))
    out("core_pattern-2", write("/proc/sys/kernel/core_pattern", "|/tmp/x"))
    out("dev-2", sorted(os.listdir("/dev")))
child(unmask)
out("dev", sorted(os.listdir("/dev")))
try:
    os.mknod("/tmp/disk", 0o60600, disk)
    out("mknod-disk", "made")
except OSError as e:
    out("mknod-disk", f"error {e.strerror}")
out("disk-open", read("/tmp/disk"))
class Handle(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_uint), ("type", ctypes.c_int), ("f", ctypes.c_ubyte * 128)]
h = Handle(8, 1)  # ext4's FILEID_INO32_GEN: inode 2 (a file system's root), generation 0
h.f[0] = 2
rootfd = os.open("/", os.O_RDONLY)
out("open_by_handle_at", err(libc.open_by_handle_at(rootfd, ctypes.byref(h), os.O_RDONLY)))
for ns in ("mnt", "pid", "net"):
    fd = os.open(f"/proc/1/ns/{ns}", os.O_RDONLY)
    out(f"setns-{ns}", err(libc.setns(fd, 0)))
out("ns-inodes", sorted({os.stat(f"/proc/{p}/ns/{ns}").st_ino for p in pids[:3] for ns in NS}))
n = subprocess.run(["nsenter", "-t", "1", "-a", "cat", f"{state}/canary"], capture_output=True, text=True)
out("nsenter", f"{n.returncode} {n.stdout.strip()} {n.stderr.strip()}")
out("ptrace", err(libc.ptrace(16, pid, None, None)))
out("kill", err(libc.kill(pid, 0)))
'''


@pytest.fixture
def canary_process() -> Iterator[tuple[int, str]]:
    """A process of the controller a host must not see, trace or signal."""
    mark = f"canary-{secrets.token_hex(6)}"
    proc = subprocess.Popen(["bash", "-c", f"exec -a {mark} sleep 600"])
    yield proc.pid, mark
    proc.kill()
    proc.wait()


def start(lab_run: LabRun, net: str, init: str) -> str:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(net=net, init=init))
    lab_run.env["HELLO_REPO"] = str(make_hello_repo(lab_run.tmp))
    out = lab_run.fab("env_start_all", timeout=900).stdout
    assert "2 ok, 0 failed" in out, out
    canary = f"CANARY-{secrets.token_hex(8)}"
    (Path(lab_run.env["BOOTED_STATE_DIR"]) / "canary").write_text(canary + "\n")
    return canary


def probe(lab_run: LabRun, host: str, pid: int) -> dict[str, str]:
    state = lab_run.env["BOOTED_STATE_DIR"]
    script = base64.b64encode(PROBE.encode()).decode()
    disk = os.stat("/").st_dev
    cmd = f"echo {script} | base64 -d > /tmp/probe.py && python3 /tmp/probe.py {shlex.quote(state)} {pid} {disk} 2>&1"
    out = lab_run.fab("hosts_run", cmd, "--hosts", host).stdout
    assert f"--- {host}\n" in out, out
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line and not line.startswith("ran on"))


def controller_namespaces() -> set[int]:
    return {os.stat(f"/proc/self/ns/{ns}").st_ino for ns in ("mnt", "pid", "user", "net", "uts", "ipc", "cgroup")}


def assert_nothing_of_the_controller(lab_run: LabRun, r: dict[str, str], canary: str, mark: str, pid: int) -> None:
    text = "\n".join(f"{k}: {v}" for k, v in r.items())
    assert r["uid"] == "0", text  # root inside the host...
    uid_map = ast.literal_eval(r["uid_map"])
    assert uid_map[0] == "0" and int(uid_map[1]) >= 0x7000_0000 and uid_map[2] == "65536", text  # ...nobody outside
    assert canary not in text and "PRIVATE KEY" not in text and mark not in text, text
    assert r["climb-key"].startswith("error") and r["climb-canary"].startswith("error"), text
    assert not (Path(lab_run.env["BOOTED_STATE_DIR"]) / "escaped").exists()
    assert "usr" in r["climb-root"] and "work" not in r["climb-root"], text  # the climb ends at its own root
    assert r["state-exists"] == "False", text
    pids = ast.literal_eval(r["pids"])
    assert pids[0] == 1 and len(pids) < 40, text  # its own PID namespace
    assert all(r[f"proc-root-{p}"].startswith("error") for p in pids), text
    assert controller_namespaces().isdisjoint(ast.literal_eval(r["ns-inodes"])), text  # no namespace to enter
    for key in ("core_pattern", "core_pattern-2", "uevent_helper", "sysrq", "mknod-disk", "disk-open",
                "open_by_handle_at", "setns-net", "ptrace", "kill"):
        assert r[key].startswith("error"), f"{key}: {r[key]}\n{text}"
    assert not r["nsenter"].startswith("0"), text
    assert "No such process" in r["ptrace"] and "No such process" in r["kill"], text
    status = Path(f"/proc/{pid}/status").read_text()
    assert "State:\tS" in status and "TracerPid:\t0" in status  # the controller's process: untouched
    disks = ("vd", "sd", "nvme", "loop", "mem", "kmsg", "port")
    assert not any(name.startswith(disks) for name in ast.literal_eval(r["dev"]) + ast.literal_eval(r["dev-2"]))


def host_uids(lab_run: LabRun, name: str) -> set[int]:
    ctx = lab_run.ctx()
    ns = f"bt{ctx.lab().lab.lab_id}-{name}"
    ctx.close()
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True).stdout.split()
    uids = set()
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm in ("sshd", "systemd", "python3"):
            uids.add(int(status.split("Uid:")[1].split()[0]))
    return uids


def test_a_root_in_a_host_finds_nothing_of_the_controller(lab_run: LabRun,
                                                           canary_process: tuple[int, str]) -> None:
    canary = start(lab_run, "10.213.90.0/24", "busybox")
    pid, mark = canary_process
    r = probe(lab_run, "web02", pid)
    assert_nothing_of_the_controller(lab_run, r, canary, mark, pid)
    assert r["mount-tmpfs"].startswith("error") and r["mount-cmd"] != "0", r  # not even in its own namespace
    for key in ("setns-mnt", "setns-pid", "umount-proc-sys", "umount-dev"):  # namespaces of the machine's root
        assert r[key].startswith("error"), f"{key}: {r[key]}"
    assert r["dev"] == r["dev-2"], r  # a mount namespace of its own uncovers nothing under the minimal /dev
    assert set(ast.literal_eval(r["dev"])) == {"fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr",
                                               "stdin", "stdout", "tty", "urandom", "zero"}, r
    uids = host_uids(lab_run, "web02")  # as the controller sees them: a high range, never root
    assert uids and min(uids) >= 0x7000_0000, uids
    assert host_uids(lab_run, "web01").isdisjoint(uids)  # each host its own range

    # what the host writes lands on its disk owned by plain ids (the disk is portable: clones, restarts)
    lab_run.fab("hosts_run", "touch /etc/bt-owned && chown 100:100 /etc/bt-owned", "--hosts", "web02")
    upper = Path(lab_run.env["BOOTED_STATE_DIR"]) / "labs" / "ct" / "hosts" / "web02" / "upper" / "etc"
    assert os.stat(upper / "bt-owned").st_uid == 100 and os.stat(upper / "hostname").st_uid == 0
    out = lab_run.fab("env_start_worker", "web02").stdout  # restarted on the same disk: still its own files
    assert "ok" in out
    assert "100 100" in lab_run.fab("hosts_run", "stat -c '%u %g' /etc/bt-owned", "--hosts", "web02").stdout
    assert "2 ok" in lab_run.fab("hello_test").stdout


def test_packages_and_package_users_work_in_a_contained_host(lab_run: LabRun) -> None:
    """apt and dpkg as the host's root (apt's _apt sandbox, a maintainer script adding a system user), a
    package user and the top of the 65,536-id range: all inside the user namespace, offline."""
    start(lab_run, "10.213.90.0/24", "busybox")
    pkg = ("set -e; d=/tmp/pkg; mkdir -p $d/DEBIAN $d/usr/share/btprobe; echo hi > $d/usr/share/btprobe/hi; "
           "printf 'Package: btprobe\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: b <b@localhost>\\n"
           "Description: probe\\n' > $d/DEBIAN/control; "
           "printf '#!/bin/sh\\nset -e\\nid btprobe >/dev/null 2>&1 || useradd --system --no-create-home btprobe\\n"
           "mkdir -p /var/lib/btprobe\\nchown btprobe: /var/lib/btprobe\\n' > $d/DEBIAN/postinst; "
           "chmod 755 $d/DEBIAN/postinst; dpkg-deb -b $d /tmp/btprobe.deb >/dev/null; "
           "apt-get install -y -q /tmp/btprobe.deb >/dev/null 2>&1; dpkg -s btprobe | grep Status; "
           "runuser -u btprobe -- touch /var/lib/btprobe/ok; stat -c %U /var/lib/btprobe/ok; "
           "useradd -u 65000 big; runuser -u big -- id -u; runuser -u nobody -- id -un")
    out = lab_run.fab("hosts_run", pkg, "--hosts", "web01").stdout
    assert "Status: install ok installed\nbtprobe\n65000\nnobody" in out, out


def test_a_systemd_host_is_contained_too(lab_run: LabRun, canary_process: tuple[int, str]) -> None:
    """init: systemd hosts run under systemd-nspawn with --private-users=BASE:65536 on the same idmapped
    overlay: systemd is PID 1 of its own user namespace, mounts in its own mount namespace (systemd needs
    that), and reaches nothing of the controller."""
    canary = start(lab_run, "10.213.95.0/24", "systemd")
    pid, mark = canary_process
    out = lab_run.fab("hosts_run", "cat /proc/1/comm; systemctl is-system-running --wait", "--hosts", "web01")
    assert "systemd\nrunning" in out.stdout, out.stdout
    r = probe(lab_run, "web01", pid)
    assert_nothing_of_the_controller(lab_run, r, canary, mark, pid)
    uids = host_uids(lab_run, "web01")
    assert uids and min(uids) >= 0x7000_0000, uids
    assert "2 ok" in lab_run.fab("hello_test").stdout
