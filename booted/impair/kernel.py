"""Impairing one link on this machine, on the controller's side of a host's NIC (a netns veth, a qemu tap):
its egress is what the host receives, so everything here acts towards the host and a round trip grows by
the delay once. No change inside the guest.

- rate: `tc ... tbf` (the link's root qdisc; with the delay line, the line's input, so it still bounds
  what reaches the host).
- loss: nftables, one `netdev booted_impair_<lab id>` table per lab with a chain per link on its egress
  hook (`numgen random mod 10000 < N drop`), rewritten whole in one transaction (sync_loss).
- delay and jitter: `netem` when the kernel has it; otherwise (this kind of kernel says "Specified qdisc
  kind is unknown") booted's delay line: tc redirects the link's egress to a veth pair (`bx...`/`by...`,
  offloads off so frames are whole and checksummed), delayline.py holds each frame and sends it out of the
  link past its qdisc. One process per link, in its own session, found again by its PID file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from booted.config import CHILD_ENV
from booted.environments.impairment import Impairment
from booted.errors import ProviderError
from booted.providers.links import disable_ipv6, ip_batch, link_exists
from booted.providers.procs import alive, from_pidfile

DELAYLINE = Path(__file__).resolve().parent / "delayline.py"
MARK = "booted-delayline"
TIMEOUT = 15  # seconds for one tc/nft/ethtool call
NETEM, DELAY_LINE, TBF, NFTABLES = "netem", "delay-line", "tbf", "nftables"


def pair(link: str) -> tuple[str, str]:
    """The delay line's veth pair of a link: (where tc sends the link's frames, where delayline.py reads)."""
    return "bx" + link[1:], "by" + link[1:]


def pidfile(run_dir: Path, link: str) -> Path:
    return run_dir / f"{link}.delayline.pid"


def delay_line_pid(run_dir: Path, link: str) -> int | None:
    return from_pidfile(pidfile(run_dir, link), MARK, link)


def _run(argv: list[str], check: bool = True) -> str:
    """Run a tool; stderr back (ProviderError when `check` and it fails)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=CHILD_ENV, timeout=TIMEOUT)
    except FileNotFoundError:
        raise ProviderError(f"{argv[0]} not found (apt-get install iproute2 nftables ethtool, or run setup.sh)"
                            ) from None
    except subprocess.TimeoutExpired:
        raise ProviderError(f"{' '.join(argv)}: no answer in {TIMEOUT}s") from None
    if check and proc.returncode != 0:
        raise ProviderError(f"{' '.join(argv)}: {proc.stderr.strip()[-300:]}")
    return proc.stderr


def tbf(link: str, bits: int, parent: str = "root") -> list[str]:
    """A token bucket of `bits`/s: a burst of 10 ms of it (at least two full frames), 200 ms of queue."""
    burst = max(bits // 8 // 100, 3200)
    return ["tc", "qdisc", "replace", "dev", link, *parent.split(), "tbf", "rate", f"{bits}bit",
            "burst", str(burst), "latency", "200ms"]


def clear_link(run_dir: Path, link: str) -> None:
    """No qdisc, redirect or delay line of booted's on the link (what is already gone is no error)."""
    pid = delay_line_pid(run_dir, link)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    pidfile(run_dir, link).unlink(missing_ok=True)
    ip_batch([f"link del {p}" for p in pair(link)[:1] if link_exists(p)])  # its peer goes with it
    if link_exists(link):
        _run(["tc", "qdisc", "del", "dev", link, "root"], check=False)
        _run(["tc", "qdisc", "del", "dev", link, "clsact"], check=False)


def apply_link(run_dir: Path, link: str, spec: Impairment) -> dict[str, str]:
    """Impair the link's delay, jitter and rate as `spec` says (loss: sync_loss), from a clean slate;
    returns which mechanism does what ({"delay": "netem" | "delay-line", "rate": "tbf"})."""
    clear_link(run_dir, link)
    if not link_exists(link):
        raise ProviderError(f"interface {link} does not exist (the host is not running)")
    used: dict[str, str] = {"rate": TBF} if spec.rate_bits else {}
    if not (spec.delay_ms or spec.jitter_ms):
        if spec.rate_bits:
            _run(tbf(link, spec.rate_bits))
        return used
    err = _run(["tc", "qdisc", "replace", "dev", link, "root", "handle", "1:", "netem", "delay",
                f"{spec.delay_ms:g}ms", f"{spec.jitter_ms:g}ms"], check=False)
    if not err.strip():
        if spec.rate_bits:
            _run(tbf(link, spec.rate_bits, "parent 1:1 handle 10:"))
        return {**used, "delay": NETEM}
    if "unknown" not in err.lower():
        raise ProviderError(f"tc qdisc netem on {link}: {err.strip()[-300:]}")
    _delay_line(run_dir, link, spec)
    return {**used, "delay": DELAY_LINE}


def _delay_line(run_dir: Path, link: str, spec: Impairment) -> None:
    into, out = pair(link)
    err = ip_batch([f"link add {into} type veth peer name {out}"])
    if not link_exists(into):
        raise ProviderError(f"could not create the delay line's veth pair {into}/{out}: {err.strip()[-300:]}")
    for end in (into, out):
        disable_ipv6(end)
    _run(["ethtool", "-K", into, "tx", "off", "sg", "off", "tso", "off", "gso", "off"])
    _run(["ethtool", "-K", out, "gro", "off"], check=False)
    ip_batch([f"link set {into} up", f"link set {out} up"])
    if spec.rate_bits:
        _run(tbf(into, spec.rate_bits))
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / f"{link}.delayline.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, str(DELAYLINE), MARK, out, link, f"{spec.delay_ms:g}",
                                 f"{spec.jitter_ms:g}"], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=CHILD_ENV, start_new_session=True)
    pidfile(run_dir, link).write_text(f"{proc.pid}\n")
    # the process listens before any frame is redirected to it (a frame sent to nobody is lost)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and proc.poll() is None and not _listening(proc.pid):
        time.sleep(0.02)
    if proc.poll() is not None:
        raise ProviderError(f"the delay line of {link} exited: see {run_dir / f'{link}.delayline.log'}")
    _run(["tc", "qdisc", "add", "dev", link, "clsact"])
    _run(["tc", "filter", "add", "dev", link, "egress", "protocol", "all", "prio", "1", "u32", "match", "u32",
          "0", "0", "action", "mirred", "egress", "redirect", "dev", into])


def _listening(pid: int) -> bool:
    """The process has its packet sockets (two socket descriptors beside stdin/out/err)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        return sum(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:") for fd in fds) >= 2
    except OSError:
        return False


def loss_table(lab_id: str) -> str:
    return f"booted_impair_{lab_id}"


def sync_loss(lab_id: str, losses: dict[str, float]) -> None:
    """The lab's loss table holds exactly `losses` (link -> percent; links that do not exist are left out):
    one nft transaction."""
    if not losses and not shutil.which("nft", path=CHILD_ENV["PATH"]):
        return  # without nft there is no table to empty either
    table = f"netdev {loss_table(lab_id)}"
    lines = [f"add table {table}", f"delete table {table}"]
    live = {link: pct for link, pct in sorted(losses.items()) if pct and link_exists(link)}
    if live:
        lines.append(f"add table {table}")
    for link, pct in live.items():
        chain = f"{table} l_{link}"
        lines += [f'add chain {chain} {{ type filter hook egress device "{link}" priority filter; policy accept; }}',
                  f"add rule {chain} numgen random mod 10000 < {round(pct * 100)} drop"]
    _nft("\n".join(lines) + "\n")


def _nft(text: str) -> None:
    try:
        proc = subprocess.run(["nft", "-f", "-"], input=text, capture_output=True, text=True, check=False,
                              env=CHILD_ENV, timeout=TIMEOUT)
    except FileNotFoundError:
        raise ProviderError("nft not found (apt-get install nftables, or run setup.sh)") from None
    except subprocess.TimeoutExpired:
        raise ProviderError(f"nft: no answer in {TIMEOUT}s") from None
    if proc.returncode != 0:
        raise ProviderError(f"nft (loss): {proc.stderr.strip()[-400:]}")
