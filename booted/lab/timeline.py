"""A start's timeline, put together by the lab handle once its hosts booted: each moment taken where it
happens, all on the controller's clock.

- start, logged, verified: the controller (the handle's start, nginx's time of the boot-log line, the SSH banner);
- created: the kernel's start time of the host's process (/proc/PID/stat: QEMU, the namespace's first process);
- kernel, init, boot, sshd, serving: the guest, as uptimes (seconds since its kernel started). A host on
  the machine's kernel (netns: its uptime is the machine's) shares the controller's clock: its moments are
  its wall clock at the phone-home minus the uptimes between. A VM has a clock of its own, set at boot from
  its RTC (this machine's time, to the second): its moments are counted back from the boot-log line (its
  kernel started `uptime` seconds before it), late by at most the phone-home call's own time; its wall
  clock's difference is only shown (clock offset). Under TCG on a busy machine a guest's clock can also run
  at the wrong speed (its TSC calibrated against a timer while its vCPU was not running): then its wall
  clock minus its uptime (its kernel's start by its RTC) disagrees with the line by more than the RTC's
  second, and its moments are spread at the speed the two ends give, between that start and the line.
  The service starts beside sshd: its phase is what the host waited for it once sshd listened (none if it
  served first). A moment out of order (a guest's report is never trusted) is moved into order and the
  timeline says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from booted.results import HostResult
from booted.state import timelines
from booted.state.inventory import Inventory
from booted.state.records import GuestTimes, Timeline

SHARED_CLOCK = 1.0  # seconds: a guest uptime this close to the machine's is the machine's kernel (netns)
RTC_SLACK = 2.0  # seconds a guest's kernel start by its RTC (read to the second) may differ from the line's
MOVED = 0.02  # seconds a guest moment may be out of order from rounding (uptimes in 1/100 s) before it is said


def created_at(pid: int) -> float | None:
    """When process `pid` started (epoch seconds, 1/CLK_TCK s), from /proc; None if it is not there."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime: clock ticks after boot
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))


def machine_uptime(at: float) -> float:
    """This machine's uptime at epoch time `at`."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) - (time.time() - at)


def build(env: str, host: str, start: float, created: float | None, logged: float | None, verified: float | None,
          guest: GuestTimes | None, note: str = "", uptime_at: float | None = None) -> Timeline:
    """One host's timeline from the moments the controller took and what the guest reported (see above).
    `uptime_at`: the machine's uptime at the guest's phone-home (default: read now)."""
    blank = Timeline(env, host, start, created, None, None, None, None, None, logged, verified, note=note)
    if guest is None or logged is None:
        return blank
    machine = machine_uptime(guest.wall) if uptime_at is None else uptime_at
    shared = abs(guest.uptime - machine) < SHARED_CLOCK
    anchor = guest.wall if shared else logged  # the moment the guest's uptime `guest.uptime` stands for
    low, said = created if created is not None else start, [note] if note else []
    by_rtc, speed = guest.wall - guest.uptime, 1.0  # its kernel's start by its own RTC; its clock's speed
    if (not shared and guest.uptime > 0 and low - RTC_SLACK <= by_rtc and max(by_rtc, low) < logged
            and abs((logged - guest.uptime) - by_rtc) > RTC_SLACK):
        speed = guest.uptime / (logged - max(by_rtc, low))
        said.append(f"the guest's clock ran at {speed:.2f}x: its moments are spread between its kernel's start by "
                    "its RTC and its boot-log line")

    def at(uptime: float | None) -> float | None:
        return None if uptime is None else anchor - (guest.uptime - uptime) / speed

    moments = {"kernel": None if shared else at(0.0), "init": None if shared else at(guest.init),
               "boot": at(guest.boot), "sshd": at(guest.sshd), "serving": at(guest.serving)}
    moved = []
    for name, value in moments.items():
        if value is None:
            continue
        if name == "serving":  # the service starts beside sshd: serving before sshd listened is in order
            value = max(value, low)
        fixed = min(max(value, low), logged)
        if abs(fixed - value) > MOVED:
            moved.append(f"{name} {fixed - value:+.2f}s")
        moments[name] = low = fixed
    if moved:
        said.append(f"guest moments out of order, moved: {', '.join(moved)}")
    return Timeline(env, host, start, created, moments["kernel"], moments["init"], moments["boot"], moments["sshd"],
                    moments["serving"], logged, verified, "machine" if shared else "guest", guest.wall - logged,
                    "; ".join(said))


def record(inventory: Inventory, env: str, start: float, pids: Mapping[str, int | None],
           results: Mapping[str, HostResult]) -> None:
    """Record the timelines of a start's fresh hosts (`pids`: each one's process, None if it has none), from
    their results (a booted host's seconds: until it was verified) and the host list (its boot-log line)."""
    listed = {h.name: h.booted_at for h in inventory.hosts()}
    out = []
    for name, pid in pids.items():
        r = results.get(name)
        logged = listed.get(name) if name in listed and listed[name] >= start - 1 else None
        verified = start + r.seconds if r is not None and r.ok and r.seconds is not None else None
        guest = timelines.guest_times(inventory, name, logged) if logged is not None else None
        note = r.detail if r is not None and not r.ok else ""
        out.append(build(env, name, start, created_at(pid) if pid else None, logged, verified, guest, note))
    timelines.save(inventory, out)
