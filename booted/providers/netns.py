"""netns provider: lab hosts as Linux namespaces (net, uts, mount, pid, user) on a bridge.

Each host: a network namespace with a veth (eth0 inside) on the lab bridge, and a handle process
`unshare --uts --mount --pid --fork --kill-child` whose child (netns-host.sh) configures the host's network,
mounts a private overlay over idmapped layers (upper on disk under the host's directory, lower = the golden
image), a minimal /dev, a hardened /proc and /sys, copies the identity into a tmpfs at /run/booted,
pivot_roots into it and detaches the machine's root, then runs the image's boot script as root of a user
namespace mapping 0..65535 to id_base(ip).. (or systemd-nspawn with the same mapping). Killing the handle
kills the whole PID namespace; deleting the netns removes the veth.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

from booted.config import CHILD_ENV, Settings
from booted.errors import ProviderError, ToolMissing
from booted.hosts.identity import Identity
from booted.images.golden import ensure_golden
from booted.providers import netns_snapshot as snap
from booted.providers.base import Progress, Provider, Started
from booted.providers.bridge import remove_bridge
from booted.providers.hostroot import SPAN
from booted.providers.lab import Lab, address_on
from booted.providers.links import add_netns, ip_batch, link_exists
from booted.providers.portfilter import guard
from booted.providers.procs import alive

MARK = "booted-host"
SETUP = (Path(__file__).resolve().parent / "netns-host.sh").read_text()  # shellchecked in CI
HOSTROOT = Path(__file__).resolve().parent / "hostroot.py"  # run by netns-host.sh with the controller's python
ID_BASE, ID_SLOTS = 0x7000_0000, 0x1000  # host user namespaces: 65,536 ids each, above systemd-nspawn's


def id_base(ip: str) -> int:
    """The first id outside of a host's 0..65535: one range per address (the low 12 bits), so hosts of a
    lab (and of labs whose networks are less than 4096 addresses apart) never share ids, and a host keeps
    its ids across restarts (its disk is stored with plain 0..65535, so only the running host sees them)."""
    return ID_BASE + (int(ipaddress.IPv4Address(ip)) % ID_SLOTS) * SPAN


class NetnsProvider(Provider):
    name = "netns"
    own_netns = True
    tools: ClassVar[dict[str, str]] = {"ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux",
                                       "pivot_root": "util-linux", "mount": "mount", "nft": "nftables"}

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # the host handles this process started, kept until stopped: a Popen dropped while its process runs
        # joins subprocess's list of children that every later Popen polls (O(hosts) per spawn, O(hosts^2)
        # per start); start() and stop() reap the ended ones
        self._handles: dict[int, subprocess.Popen[bytes]] = {}

    def check(self, lab: Lab | None = None) -> None:
        super().check(lab)
        if lab is not None and lab.init == "systemd" and self.settings.which("systemd-nspawn") is None:
            raise ToolMissing("\"init\": \"systemd\" on netns hosts needs systemd-nspawn: apt-get install "
                              "systemd-container (or run setup.sh)")
    needs_root = True
    snapshot_keeps = "each host's writable layer (its overlay's upper dir); a restore boots it"
    can_pause = True

    # names ---------------------------------------------------------------------------------------
    @staticmethod
    def netns(lab: Lab, name: str) -> str:
        return f"bt{lab.lab_id}-{name}"

    @staticmethod
    def veth(lab: Lab, ip: str) -> str:
        return lab.link("v", ip)

    def local_nics(self, lab: Lab, name: str, ip: str) -> dict[str, str]:
        """A veth per network the host is on (the same host number on each network)."""
        veths = {net.name: self.veth(lab, address_on(ip, lab.network, net.cidr)) for net in lab.networks}
        return {net: veth for k, (net, veth) in enumerate(veths.items()) if not k or link_exists(veth)}

    # contract ------------------------------------------------------------------------------------
    def host_of(self, lab: Lab, argv: list[str]) -> str | None:
        """`unshare ... booted-host <lab dir>/hosts/<name>/root ...` whose namespace still exists."""
        if len(argv) < 3 or not argv[0].endswith("unshare") or MARK not in argv[:-1]:
            return None
        root = Path(argv[argv.index(MARK) + 1])
        if root.parent.parent != lab.dir / "hosts":
            return None
        name = root.parent.name
        return name if Path(f"/run/netns/{self.netns(lab, name)}").exists() else None

    def start(self, lab: Lab, hosts: list[Identity], progress: Progress) -> tuple[list[Started], dict[str, str]]:
        golden = ensure_golden(self.settings, progress, lab.packages)
        for path in golden.lowerdirs:
            if ":" in str(path) or "," in str(path):
                raise ProviderError(f"image path {path} contains ':' or ',': overlayfs cannot use it; "
                                    "set BOOTED_CACHE_DIR to a plain path")
        self._reap()
        running = self.running(lab)
        todo = [h for h in hosts if h.name not in running]
        errors_text = self._plug(lab, todo, [ns for ns in self._namespaces(lab) if ns.split("-", 1)[1] not in running])
        started: list[Started] = []
        errors: dict[str, str] = {}
        lower = ":".join(str(p) for p in golden.lowerdirs)
        for host in todo:
            ns, veth = self.netns(lab, host.name), self.veth(lab, host.ip)
            if not Path(f"/run/netns/{ns}").exists() or not Path(f"/sys/class/net/{veth}").exists():
                errors[host.name] = f"could not create namespace/veth: {errors_text.strip()[-300:]}"
                continue
            try:
                started.append(Started(host.name, self._spawn(lab, host, ns, lower)))
            except OSError as exc:
                errors[host.name] = f"could not start: {exc}"
        started += [Started(n, pid) for n, pid in running.items() if n in {h.name for h in hosts}]
        return started, errors

    def stop(self, lab: Lab, names: list[str]) -> dict[str, str]:
        snap.thaw({n: self.netns(lab, n) for n in names})  # a frozen process would not die of SIGKILL (cgroup v1)
        running = self.running(lab)
        for name in names:
            if name in running:
                try:
                    os.kill(running[name], signal.SIGKILL)  # --kill-child takes the PID namespace down
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(running[n]) for n in names if n in running):
            time.sleep(0.02)
        self._reap()
        present = set(self._namespaces(lab))
        gone = [self.netns(lab, n) for n in names if self.netns(lab, n) in present]
        _kill_netns_pids(gone)
        ip_batch([f"netns del {ns}" for ns in gone])
        for name in names:
            _remove_cgroups(self.netns(lab, name))
        left = set(self._namespaces(lab))
        errors = {n: "namespace still present after stop" for n in names if self.netns(lab, n) in left}
        errors |= {n: f"handle PID {running[n]} did not exit" for n in names if n in running and alive(running[n])}
        return errors

    def clone(self, lab: Lab, src: str, new: str) -> None:
        upper = lab.host_dir(src) / "upper"
        target = self.new_disk(lab, new, "upper")
        if upper.exists():
            subprocess.run(["cp", "-a", str(upper), str(target)], check=True)

    def teardown(self, lab: Lab) -> None:
        running = self.running(lab)
        stale = [ns for ns in self._namespaces(lab) if ns.split("-", 1)[1] not in running]
        _kill_netns_pids(stale)
        ip_batch([f"netns del {ns}" for ns in stale])
        if not running:
            remove_bridge(lab)

    # snapshots (netns_snapshot.py) ---------------------------------------------------------------------
    def pause(self, lab: Lab, names: list[str]) -> dict[str, str]:
        return snap.freeze({n: self.netns(lab, n) for n in names})

    def resume(self, lab: Lab, names: list[str]) -> dict[str, str]:
        return snap.thaw({n: self.netns(lab, n) for n in names})

    def resume_command(self, lab: Lab, names: list[str]) -> list[str] | None:
        return snap.thaw_command([self.netns(lab, n) for n in names])

    def save(self, lab: Lab, name: str, folder: Path) -> list[str]:
        return snap.save(lab.host_dir(name), folder)

    def restore(self, lab: Lab, name: str, folder: Path) -> None:
        if name in self.running(lab):
            raise ProviderError(f"host {name} is running: a restore needs it stopped")
        snap.restore(lab.host_dir(name), folder)

    # helpers -------------------------------------------------------------------------------------
    def _plug(self, lab: Lab, hosts: list[Identity], stale: list[str]) -> str:
        """A fresh namespace and veth on the bridge per host. Leftovers of a crashed run or a dead host
        (namespaces whose host process is gone, their veths) are removed first and waited for: the kernel
        tears a namespace down asynchronously, and a veth made while the old one goes can lose its bridge
        side. Returns ip's error output."""
        _kill_netns_pids(stale)
        nics = [(h, nic, self.veth(lab, nic.ip), lab.bridge_of(nic.network) if k else lab.bridge)
                for h in hosts for k, nic in enumerate(h.nics)]  # a veth per NIC, on its network's bridge
        err = ip_batch([f"netns del {ns}" for ns in stale]
                       + [f"link del {veth}" for _, _, veth, _ in nics if link_exists(veth)])
        deadline = time.monotonic() + 5
        while any(link_exists(veth) for _, _, veth, _ in nics) and time.monotonic() < deadline:
            time.sleep(0.02)
        err += add_netns([self.netns(lab, h.name) for h in hosts])
        lines = []
        for host, nic, veth, bridge in nics:
            lines += [f"link add {veth} type veth peer name {nic.iface} address {nic.mac} "
                      f"netns {self.netns(lab, host.name)}", f"link set {veth} master {bridge} up"]
        err += ip_batch(lines)
        guard(lab, [(veth, nic.mac, nic.ip) for _, nic, veth, _ in nics])  # before any host process starts
        return err + ip_batch([f"link set {veth} master {bridge} up" for _, _, veth, bridge in nics
                               if link_exists(veth) and not _on_bridge(veth, bridge)])

    def _reap(self) -> None:
        """Forget (and reap) the handles of hosts that ended: once per start or stop, not per host."""
        for pid in [pid for pid, handle in self._handles.items() if handle.poll() is not None]:
            del self._handles[pid]

    def _namespaces(self, lab: Lab) -> list[str]:
        prefix = f"bt{lab.lab_id}-"
        try:
            return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix))
        except FileNotFoundError:
            return []

    def _spawn(self, lab: Lab, host: Identity, ns: str, lower: str) -> int:
        hdir = lab.host_dir(host.name)
        for sub in ("root", "upper", "work", "boot"):
            (hdir / sub).mkdir(parents=True, exist_ok=True)
        lower = snap.pinned_lower(hdir) or lower  # a restored layer boots on the image it was written on
        (hdir / snap.LOWER).write_text(lower.replace(":", "\n") + "\n")
        ident = hdir / "identity"
        host.write_dir(ident)
        cmd = ["nsenter", f"--net=/run/netns/{ns}", "unshare", "--uts", "--mount", "--pid", "--fork",
               "--kill-child", "--propagation", "private", "sh", "-c", SETUP, MARK,
               str(hdir / "root"), lower, str(hdir), str(ident), lab.init, ns, host.name,
               str(id_base(host.ip)), f"{host.ip}/{host.prefix}", sys.executable, str(HOSTROOT),
               " ".join(f"{n.iface}={n.ip}/{n.prefix}" for n in host.extra)]
        with open(hdir / "console.log", "ab") as console:
            console.write(f"--- booted: starting {host.name} at {time.strftime('%F %T')}\n".encode())
            console.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                    env=CHILD_ENV, start_new_session=True)
        self._handles[proc.pid] = proc
        return proc.pid


def _kill_netns_pids(names: list[str]) -> None:
    """SIGKILL every process in these network namespaces: one scan of /proc for all of them (`ip netns pids`
    per namespace scanned every process of the machine once per namespace: O(hosts^2) for a lab's stop)."""
    inodes = set()
    for name in names:
        try:
            st = os.stat(f"/run/netns/{name}")
            inodes.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    if not inodes:
        return
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
            if (st.st_dev, st.st_ino) in inodes:
                os.kill(int(pid), signal.SIGKILL)
        except OSError:  # gone meanwhile
            pass


def _on_bridge(link: str, bridge: str) -> bool:
    """The link is a port of `bridge` and administratively up."""
    try:
        master = os.path.basename(os.readlink(f"/sys/class/net/{link}/master"))
        flags = int(Path(f"/sys/class/net/{link}/flags").read_text(), 16)
    except (OSError, ValueError):
        return False
    return master == bridge and bool(flags & 1)


CGROUP_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/freezer", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")


def _remove_cgroups(ns: str, wait: float = 5.0) -> None:
    """The cgroups a systemd host had (netns-host.sh makes booted/<ns> in each hierarchy): removed deepest
    first once their processes are gone (a killed container's processes exit a moment after its init)."""
    tops = [Path(root) / "booted" / ns for root in CGROUP_ROOTS if (Path(root) / "booted" / ns).is_dir()]
    deadline = time.monotonic() + wait
    while tops and time.monotonic() < deadline:
        for top in tops:
            for dirpath, _, _ in sorted(os.walk(top), key=lambda d: -d[0].count("/")):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass
        tops = [t for t in tops if t.is_dir()]
        if tops:
            time.sleep(0.05)
