"""snapshots/clock.py against a fake fleet (the SSH process boundary faked: a guest clock in memory)."""

from __future__ import annotations

import time

import paramiko
import pytest

from booted.remote.fanout import Target
from booted.snapshots import clock

HOST = Target("web01", "10.0.0.2")


class Guest:
    """A fleet whose one host's clock is `off` seconds from this machine's; its SSH connect fails `refuse`
    times first (a guest just continued from its memory, not greeting yet)."""

    def __init__(self, off: float, refuse: int = 0) -> None:
        self.off, self.refuse, self.connects, self.commands = off, refuse, 0, []

    def connection(self, target: Target) -> None:
        self.connects += 1
        if self.connects <= self.refuse:
            raise paramiko.SSHException("Error reading SSH protocol banner")

    def sh(self, target: Target, script: str) -> str:
        self.commands.append(script)
        if script == clock.NOW:
            return f"{time.time() + self.off:.6f}"
        self.off = float(script.split("@")[1].split()[0]) - time.time()  # `date -s` lands at once
        return ""


def test_correct_connects_first_and_sets_the_clock() -> None:
    guest = Guest(-300.0, refuse=2)
    was, now = clock.correct(guest, HOST)  # type: ignore[arg-type]
    assert guest.connects == 3 and guest.commands[0] == clock.NOW
    assert was == pytest.approx(-300.0, abs=0.1)
    assert abs(now) < clock.GOOD and abs(guest.off) < clock.GOOD


def test_connected_gives_up_with_the_last_failure() -> None:
    guest = Guest(0.0, refuse=1000)
    with pytest.raises(paramiko.SSHException):
        clock.connected(guest, HOST, seconds=0.3)  # type: ignore[arg-type]
    assert guest.connects > 1
