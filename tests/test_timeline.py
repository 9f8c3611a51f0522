"""Boot timelines without root or hosts: placing a guest's clocks on the controller's (lab/timeline.py), the
phases they make (state/timelines.py), the waterfall picture (report_svg.py), and a start through the fake
provider recording them (its boot-log lines carry the boot script's `times`), shown by env_timeline's table."""

from __future__ import annotations

import itertools
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from booted.config import Settings
from booted.context import Booted
from booted.hosts.identity import Identity
from booted.lab.timeline import build, created_at
from booted.report_svg import waterfall
from booted.state.records import GuestTimes, Timeline
from booted.state.timelines import KEEP, NO_KERNEL, NOT_SEEN, PHASES, as_json, phases, save, total
from fabfile.envmanager import timeline_table
from tests.conftest import REPO
from tests.fakes import FakeFleet, FakeProvider, World

NAMES = [name for name, _, _ in PHASES]
SVG = "{http://www.w3.org/2000/svg}"


def netns_host(start: float = 1000.0) -> Timeline:
    """A host on the machine's kernel: its uptime is the machine's (5000 s), its wall clock the controller's."""
    guest = GuestTimes(wall=1001.30, uptime=5000.00, init=4999.02, boot=4999.50, sshd=4999.70, serving=5000.00)
    return build("lab", "web01", start, 1000.20, 1001.32, 1001.40, guest, uptime_at=5000.0)


def vm_host(start: float = 1000.0, **kw: float | None) -> Timeline:
    """A VM: its own kernel (6.2 s of uptime at the phone-home), its clock 0.8 s behind the controller's."""
    guest = GuestTimes(**{"wall": 1007.20, "uptime": 6.20, "init": 1.05, "boot": 1.31, "sshd": 2.40,
                          "serving": 5.90, **kw})  # type: ignore[arg-type]
    return build("lab", "vm01", start, 1001.00, 1008.00, 1008.30, guest, uptime_at=50000.0)


def contiguous(t: Timeline) -> None:
    """The phases follow each other from the start to the last moment, and add up to it."""
    timed = [p for p in phases(t) if p.seconds is not None]
    assert [p.name for p in phases(t)] == NAMES
    assert timed[0].begin == 0.0
    assert all(a.end == b.begin for a, b in itertools.pairwise(timed))
    assert all(p.seconds >= 0 for p in timed)  # type: ignore[operator]
    assert sum(p.seconds for p in timed) == pytest.approx(total(t))  # type: ignore[misc]
    assert timed[-1].end == pytest.approx(total(t))


def test_a_netns_host_runs_on_the_machines_kernel_and_clock() -> None:
    t = netns_host()
    assert t.clock == "machine" and t.kernel is None and t.init is None  # the machine's PID 1 is not its own
    assert (t.boot, t.sshd, t.serving) == pytest.approx((1000.80, 1001.00, 1001.30))
    assert t.offset == pytest.approx(-0.02) and t.note == ""
    by = {p.name: p for p in phases(t)}
    assert by["firmware"].why == NO_KERNEL and by["kernel"].why == NO_KERNEL
    assert by["prepare"].seconds == pytest.approx(0.20)
    assert by["init"].seconds == pytest.approx(0.60)  # created -> the boot script: namespaces, mounts, init
    contiguous(t)


def test_a_vm_is_placed_by_its_boot_log_line() -> None:
    t = vm_host()
    assert t.clock == "guest" and t.offset == pytest.approx(-0.80)
    assert t.kernel == pytest.approx(1008.00 - 6.20)  # its kernel started `uptime` seconds before the line
    assert (t.init, t.boot, t.sshd, t.serving) == pytest.approx((1002.85, 1003.11, 1004.20, 1007.70))
    seconds = {p.name: p.seconds for p in phases(t)}
    assert seconds == pytest.approx({"prepare": 1.0, "firmware": 0.8, "kernel": 1.05, "init": 0.26, "sshd": 1.09,
                                     "service": 3.5, "phone-home": 0.3, "verify": 0.3})
    contiguous(t)
    row = as_json(t)
    assert row["name"] == "vm01" and row["seconds"] == 8.3 and row["phases"][-1]["to"] == 8.3
    assert row["moments"]["kernel"] == 1.8


def test_a_guest_report_out_of_order_is_moved_and_said() -> None:
    t = vm_host(uptime=9.0, sshd=9.5, serving=None)  # a kernel older than its VM, sshd after the phone-home
    assert t.kernel == 1001.00 and t.sshd == 1008.00 and t.serving is None  # moved into [created, logged]
    assert t.note.startswith("guest moments out of order, moved: kernel +2.00s, init +0.95s")
    assert t.note.endswith("sshd -0.50s")
    assert {p.name: p.why for p in phases(t)}["service"] == NOT_SEEN
    contiguous(t)


def test_a_service_that_served_before_sshd_listened_is_in_order() -> None:
    """The boot script starts the service beside sshd: serving first is no disorder, its phase is empty."""
    t = vm_host(sshd=4.00, serving=3.10)
    assert t.note == "" and t.serving == t.sshd == pytest.approx(1005.80)
    assert {p.name: p.seconds for p in phases(t)}["service"] == pytest.approx(0.0)
    contiguous(t)


def test_a_guest_clock_at_the_wrong_speed_is_spread_between_its_rtc_and_its_line() -> None:
    """Under TCG on a busy machine a VM's clock ran 4x (recorded: uptime 74.3 s 18 s after QEMU started, its wall
    clock 56 s ahead): its kernel's start by its RTC (wall - uptime, to the second) and its boot-log line give
    the speed; a clock off by less than the RTC's second is taken as it is (above)."""
    guest = GuestTimes(wall=1699.94, uptime=74.30, init=0.68, boot=18.90, sshd=30.67, serving=70.30)
    t = build("lab", "vm01", 1619.72, 1626.10, 1644.01, 1644.42, guest, uptime_at=50000.0)
    assert t.note.startswith("the guest's clock ran at 4.15x") and "out of order" not in t.note
    assert t.kernel == pytest.approx(1626.10)  # its RTC says 1625.64: before QEMU started, so QEMU's start
    assert t.serving == pytest.approx(1626.10 + 70.30 / 74.30 * (1644.01 - 1626.10))
    assert t.offset == pytest.approx(55.93)
    contiguous(t)
    slow = build("lab", "vm01", 1000.0, 1001.0, 1008.0, 1008.3,
                 GuestTimes(wall=1004.5, uptime=3.0, init=0.5, boot=1.0, sshd=1.5, serving=2.5),
                 uptime_at=50000.0)  # its RTC: started at 1001.5; 6.5 s to its line, 3 s of uptime
    assert slow.note.startswith("the guest's clock ran at 0.46x") and slow.kernel == pytest.approx(1001.5)
    contiguous(slow)


def test_a_failed_start_keeps_what_it_knows() -> None:
    t = build("lab", "web03", 1000.0, 1000.3, None, None, None, "no boot-log line within 2s")
    assert [p.name for p in phases(t) if p.seconds is not None] == ["prepare"]
    assert total(t) == pytest.approx(0.3) and as_json(t)["ok"] is False


def test_created_is_the_process_start() -> None:
    mine = created_at(__import__("os").getpid())
    assert mine is not None and mine <= time.time()
    assert created_at(2**22 + 12345) is None  # no such process


def test_the_waterfall_is_one_self_contained_svg_with_ordered_bars() -> None:
    hosts = [(t.host, phases(t)) for t in (vm_host(), netns_host())]
    text = waterfall("lab: <start> & co", hosts)
    root = ET.fromstring(text)  # well-formed
    assert root.tag == f"{SVG}svg" and root.find(f"{SVG}title").text == "lab: <start> & co"  # type: ignore[union-attr]
    for bad in ("href", "<script", "url(", "@import", "<image", "<foreignObject"):
        assert bad not in text
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    for host, host_phases in hosts:
        mine = [b for b in bars if b.get("data-host") == host]
        assert [b.get("data-phase") for b in mine] == [p.name for p in host_phases if p.seconds is not None]
        xs = [float(b.get("x", "")) for b in mine]
        assert xs == sorted(xs) and xs[0] == pytest.approx(170)  # from the start, in order
        for a, b in itertools.pairwise(mine):  # each begins where the one before ended
            assert float(b.get("x", "")) == pytest.approx(float(a.get("x", "")) + float(a.get("width", "")), abs=1.01)
    ticks = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "axis"]
    assert ticks[0] == "0 s" and len(ticks) >= 3  # the time axis
    assert "n/a: no kernel of its own" in text


def test_the_table_says_what_n_a_means() -> None:
    out = timeline_table([vm_host(), netns_host()])
    header, _, vm, netns, *notes = out.splitlines()
    assert header.split() == ["host", *NAMES, "total", "clock"]
    assert vm.split() == ["vm01", "1.00", "0.80", "1.05", "0.26", "1.09", "3.50", "0.30", "0.30", "8.30", "-0.80s"]
    assert netns.split()[:4] == ["web01", "0.20", "n/a", "n/a"] and netns.split()[-1] == "machine's"
    assert any(n.startswith("n/a: a netns host runs on the machine's kernel") for n in notes)


class TimedProvider(FakeProvider):
    """The fake provider whose hosts' boot-log lines carry the boot script's `times` (a netns host's)."""

    def _phone_home(self, host: Identity) -> None:
        super()._phone_home(host)
        log = self.settings.boot_log
        lines = log.read_text().splitlines(keepends=True)
        now = time.time()
        up = time.clock_gettime(time.CLOCK_BOOTTIME)
        lines[-1] = lines[-1].rstrip('"\n') + f'&times={now - 0.01:.6f}_{up:.2f}_-_{up - 0.3:.2f}_{up - 0.2:.2f}_-"\n'
        log.write_text("".join(lines))


@pytest.fixture
def ctx(settings_env: dict[str, str], tmp_path: Path) -> Iterator[Booted]:
    world = World()
    Path(settings_env["BOOTED_ENVIRONMENTS"]).write_text(
        'ENVIRONMENTS = {"lab": {"provider": "netns", "network": "10.213.41.0/24", "hosts": {"web[01:02]": {}}}}\n')
    settings = Settings.from_env({**settings_env, "BOOTED_SERVICES": str(REPO / "service"),
                                  "BOOTED_BOOT_TIMEOUT": "2"})
    booted = Booted(settings, say=lambda line: None, providers={"netns": lambda s: TimedProvider(s, world)},
                    fleets=lambda c: FakeFleet(world, tmp_path))
    yield booted
    booted.close()
    world.close()


def test_a_start_records_each_hosts_timeline(ctx: Booted) -> None:
    report = ctx.runs().start_all()
    assert report.failed() == []
    starts = ctx.lab().last_start()
    assert [t.host for t in starts] == ["web01", "web02"] and len({t.start for t in starts}) == 1
    for t in starts:
        boot = report.steps["boot"][t.host]
        assert t.verified is not None and boot.seconds == pytest.approx(t.verified - t.start)  # what the start said
        assert t.logged is not None and t.boot is not None and t.sshd is not None and t.clock == "machine"
        assert t.start <= t.boot <= t.sshd <= t.logged <= t.verified
        contiguous(t)
    ctx.runs().start_all()  # nothing started: the last start stays the one that started hosts
    assert ctx.lab().last_start() == starts
    save(ctx.inventory, [starts[0]] * (KEEP + 5))
    assert ctx.inventory.db.execute("SELECT count(*) FROM timelines WHERE host = 'web01'").fetchone()[0] == KEEP
    ctx.inventory.release_image("web01")  # image_del: its identity goes, and its timelines with it
    assert [t.host for t in ctx.lab().last_start()] == ["web02"]
