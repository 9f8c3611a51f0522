"""A resumed VM's clock: it stood still while the VM was paused (QMP stop) or saved, so it is behind by that
long. No guest agent runs in booted's guests, so the controller sets it over SSH as root (`date -s @N.N`,
the controller's clock plus half an SSH round trip: about when the command runs) and measures the offset
before and after (guest minus controller, taken at the middle of one SSH round trip). The one clock code of
booted: a restore that resumes VMs, a snapshot's pause (`correct`, up to PASSES passes, within GOOD), and the
monitor's warm pool taking a paused host (`quick`: one command that reads and sets it, no pass after)."""

from __future__ import annotations

import time

import paramiko

from booted.remote.fanout import Fleet, StepFailed, Target
from booted.remote.reach import Remote
from booted.results import HostResult

NOW = "date +%s.%N"  # busybox and coreutils both print nanoseconds
PASSES = 3
GOOD = 0.25  # seconds: a closer clock is not worth another pass
CONNECT_SECONDS = 30.0
LEAD = 0.02  # seconds a command runs after it is sent, when no round trip was measured (a reused connection)


def _set(at: float) -> str:
    """Set the clock to `at` (fractions of a second where `date` takes them: coreutils does, busybox not)."""
    return f"date -u -s @{at:.6f} >/dev/null 2>&1 || date -u -s @{round(at)} >/dev/null"


def _parse(said: str) -> float:
    try:
        return float(said.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise StepFailed(f"`{NOW}` said {said[-80:]!r}") from None


def offset(fleet: Fleet, target: Target) -> tuple[float, float]:
    """The host's clock minus the controller's, and the SSH command's round trip, in seconds."""
    before = time.time()
    said = fleet.sh(target, NOW)
    after = time.time()
    return _parse(said) - (before + after) / 2, after - before


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
    """Set the host's clock to the controller's: (offset before, offset after). The set lands about half a
    round trip after it is sent; a pass that lands farther than GOOD sends the next one that much earlier.
    Connected first: a round trip that includes the SSH handshake (seconds, on a TCG guest) would aim the
    first pass that much early. A pass ends it when the offset is within GOOD or within what one round trip
    can tell (half of it: a loaded guest's round trips vary by more than GOOD; another pass only adds noise)."""
    connected(fleet, target)
    was, trip = offset(fleet, target)
    now, lead = was, trip / 2
    for _ in range(PASSES):
        fleet.sh(target, _set(time.time() + lead))
        now, trip = offset(fleet, target)
        if abs(now) < max(GOOD, trip / 2):
            break
        lead = max(0.0, lead - now)  # it landed `-now` late: send the next one that much earlier
    return was, now


def quick(fleet: Fleet, target: Target) -> float:
    """One SSH command that reads the host's clock and sets it to the controller's (plus LEAD): the offset it
    had. For a warm host taken to serve, over the connection kept open while it was paused (a few ms): within
    about one way of that round trip, no measuring pass after."""
    sent = time.time()
    said = fleet.sh(target, f"{NOW}; {_set(sent + LEAD)}")
    return _parse(said) - sent


def correct_all(remote: Remote, names: list[str], env: str) -> dict[str, HostResult]:
    """Every listed host of `names` set to the controller's clock; host -> result (detail: the offsets)."""
    def step(target: Target) -> str:
        was, now = correct(fleet, target)
        return f"clock was {was:+.3f} s off, now {now:+.3f} s"
    with remote.fleet() as fleet:
        results = fleet.run(remote.resolver.targets(names, env), step, "clock", progress=False, timeout=60.0)
    return {r.host: r for r in results}
