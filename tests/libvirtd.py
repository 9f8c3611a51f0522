"""A private libvirtd for tests: its own config, sockets, state and logs under a temporary folder.

It runs in its own mount namespace, where that folder's subfolders are bind-mounted over /etc/libvirt,
/run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt: nothing of the machine's libvirt
is read or changed (only the empty mount points are made if missing). Optionally in a network namespace,
listening on TCP there (no auth: a test stand-in for another machine's daemon, reached over the lab's own
network). `stop()` destroys and undefines what is left, then ends the daemon by its PID.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MOUNTS = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt", "log": "/var/log/libvirt",
          "cache": "/var/cache/libvirt"}


def missing() -> str | None:
    """Why a private libvirtd cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("libvirtd", "virsh", "unshare"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            return f"{tool} not installed (setup.sh installs libvirt-daemon, libvirt-daemon-driver-qemu)"
    if subprocess.run(["id", "libvirt-qemu"], capture_output=True, check=False).returncode != 0:
        return "no libvirt-qemu user (setup.sh makes it)"
    return None


@dataclass
class Libvirtd:
    root: Path
    proc: subprocess.Popen[bytes]
    uri: str  # how the controller reaches it

    def virsh(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["virsh", "-q", "-c", self.uri, *args], capture_output=True, text=True, timeout=60,
                              check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"virsh {args}: {proc.stderr}")
        return proc.stdout

    def log(self) -> str:
        try:
            return (self.root / "log" / "libvirtd.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def clear(self) -> None:
        """Destroy and undefine every domain and network left (a daemon shared by several tests is left empty
        after each one; its storage pool keeps the golden disk)."""
        for vm in self.virsh("list", "--all", "--name", check=False).split():
            self.virsh("destroy", vm, check=False)
            self.virsh("undefine", vm, check=False)
        for net in self.virsh("net-list", "--all", "--name", check=False).split():
            self.virsh("net-destroy", net, check=False)
            self.virsh("net-undefine", net, check=False)

    def stop(self) -> None:
        """Destroy and undefine every domain and network left, then end the daemon (this PID only)."""
        if self.proc.poll() is None:
            self.clear()
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(root: Path, netns: str | None = None, listen: str | None = None) -> Libvirtd:
    """Start a private libvirtd with its folders under `root`; in `netns`, listening on TCP at `listen`."""
    for sub in MOUNTS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    (root / "lib").chmod(0o755)  # libvirt's QEMU runs as libvirt-qemu: it must reach the pool below
    conf = ['unix_sock_dir = "/run/libvirt"', 'unix_sock_rw_perms = "0700"',
            'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"']
    if listen:
        conf += ["listen_tls = 0", "listen_tcp = 1", f'listen_addr = "{listen}"', 'auth_tcp = "none"']
    (root / "etc" / "libvirtd.conf").write_text("\n".join(conf) + "\n")
    (root / "etc" / "qemu.conf").write_text('stdio_handler = "file"\n')  # no virtlogd needed
    lines = ["set -e"]
    for sub, target in MOUNTS.items():
        lines += [f"mkdir -p {target}", f"mount --bind {shlex.quote(str(root / sub))} {target}"]
    lines.append(f"exec libvirtd {'--listen ' if listen else ''}-p /run/libvirt/libvirtd.pid "
                 "-f /etc/libvirt/libvirtd.conf")
    script = root / "start.sh"
    script.write_text("\n".join(lines) + "\n")
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", str(script)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    out = open(root / "daemon.out", "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out.close()
    uri = f"qemu+tcp://{listen}/system" if listen else f"qemu:///system?socket={root}/run/libvirt-sock"
    daemon = Libvirtd(root, proc, uri)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"libvirtd exited: {(root / 'daemon.out').read_text(errors='replace')} "
                                 f"{daemon.log()}")
        if subprocess.run(["virsh", "-q", "-c", uri, "uri"], capture_output=True, timeout=10,
                          check=False).returncode == 0:
            return daemon
        time.sleep(0.2)
    daemon.stop()
    raise AssertionError(f"libvirtd did not answer within 30 s: {daemon.log()}")
