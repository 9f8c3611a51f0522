"""A resumed VM's clock: it stood still while the VM was paused (QMP stop) or saved, so it is behind by that
long. No guest agent runs in booted's guests, so the controller sets it over SSH as root (`date -s @N`, sent
as the controller's clock reaches second N, less how late the last one landed) and measures the offset
before and after (guest minus controller, taken at the middle of one SSH round trip). Used after a restore
that resumes VMs, after a snapshot's pause, and by whoever resumes paused hosts (the warm pool)."""

from __future__ import annotations

import math
import time

import paramiko

from booted.remote.fanout import Fleet, StepFailed, Target
from booted.remote.reach import Remote
from booted.results import HostResult

NOW = "date +%s.%N"
PASSES = 3
CONNECT_SECONDS = 30.0
GOOD = 0.25  # seconds: a closer clock is not worth another pass  # busybox and coreutils both print nanoseconds


def offset(fleet: Fleet, target: Target) -> tuple[float, float]:
    """The host's clock minus the controller's, and the SSH command's round trip, in seconds."""
    before = time.time()
    said = fleet.sh(target, NOW)
    after = time.time()
    try:
        return float(said.strip().splitlines()[-1]) - (before + after) / 2, after - before
    except (ValueError, IndexError):
        raise StepFailed(f"`{NOW}` said {said[-80:]!r}") from None


def connected(fleet: Fleet, target: Target, seconds: float = CONNECT_SECONDS) -> None:
    """The host's SSH connection open, tried again until `seconds` pass: a guest just continued from its
    memory, starved of CPU (TCG), can miss one connect's 10 s banner wait. The last failure is raised."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fleet.connection(target)
            return
        except (paramiko.SSHException, OSError, EOFError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def correct(fleet: Fleet, target: Target) -> tuple[float, float]:
    """Set the host's clock to the controller's: (offset before, offset after). `date -s` takes whole seconds
    and lands as late as the SSH command takes to run, so a second pass sends it that much earlier. Connected
    first: a round trip that includes the SSH handshake (seconds, on a TCG guest) would aim the first pass
    that much early. A pass ends it when the offset is within GOOD or within what one round trip can tell
    (half of it: a loaded guest's round trips vary by more than GOOD, and another pass only adds noise)."""
    connected(fleet, target)
    was, trip = offset(fleet, target)
    now, lead = was, trip / 2  # a command runs about half a round trip after it is sent
    for _ in range(PASSES):
        at = time.time()
        second = math.ceil(at + lead + 0.05)
        time.sleep(max(0.0, second - lead - at))
        fleet.sh(target, f"date -u -s @{second} >/dev/null")
        now, trip = offset(fleet, target)
        if abs(now) < max(GOOD, trip / 2):
            break
        lead = max(0.0, lead - now)  # it landed `-now` late: send the next one that much earlier
    return was, now


def correct_all(remote: Remote, names: list[str], env: str) -> dict[str, HostResult]:
    """Every listed host of `names` set to the controller's clock; host -> result (detail: the offsets)."""
    def step(target: Target) -> str:
        was, now = correct(fleet, target)
        return f"clock was {was:+.3f} s off, now {now:+.3f} s"
    with remote.fleet() as fleet:
        results = fleet.run(remote.resolver.targets(names, env), step, "clock", progress=False, timeout=60.0)
    return {r.host: r for r in results}
