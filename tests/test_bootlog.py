"""Boot-log parser driven by recorded lines (tests/data/bootlog/*.log + expected *.json), and the
incremental reader's cursor (no re-reading, partial lines, rotation)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from booted.discovery.bootlog import BadLine, ReadResult, parse_line, read_new
from booted.hosts.identity import Keys, fingerprint
from booted.state.inventory import Image, Inventory
from tests.fakes import boot_line

DATA = Path(__file__).parent / "data" / "bootlog"
CASES = sorted(p.stem for p in DATA.glob("*.log"))


def parse_file(path: Path) -> tuple[list[dict[str, object]], int]:
    events, skipped = [], 0
    for raw in path.read_bytes().split(b"\n")[:-1]:
        try:
            events.append(asdict(parse_line(raw.decode())))
        except (BadLine, UnicodeDecodeError):
            skipped += 1
    return events, skipped


@pytest.mark.parametrize("case", CASES)
def test_parser_cases(case: str) -> None:
    expected = json.loads((DATA / f"{case}.json").read_text())
    events, skipped = parse_file(DATA / f"{case}.log")
    assert events == expected["events"]
    assert skipped == expected["skipped"]


def log_lines(case: str) -> int:
    return len((DATA / f"{case}.log").read_bytes().split(b"\n")[:-1])


def test_cases_cover_each_kind_and_account_for_every_line() -> None:
    """Valid, garbage and hostile input each have a case, and each case's expected file accounts for every
    line of its log (an event or a skipped line): no case passes by ignoring some of its lines."""
    expected = {case: json.loads((DATA / f"{case}.json").read_text()) for case in CASES}
    counts = {case: (len(e["events"]), e["skipped"]) for case, e in expected.items()}
    assert counts["valid"] == (3, 0) and counts["garbage"] == (0, 9) and counts["hostile"] == (1, 9)
    assert {case: sum(c) for case, c in counts.items()} == {case: log_lines(case) for case in CASES}


@pytest.mark.parametrize("case", CASES)
def test_reader_matches_parser_and_believes_no_unknown_host(tmp_path: Path, case: str) -> None:
    inv = Inventory(tmp_path / "state.db")
    log = tmp_path / "boot.log"
    log.write_bytes((DATA / f"{case}.log").read_bytes())
    result = read_new(inv, log)
    expected = json.loads((DATA / f"{case}.json").read_text())
    assert (result.lines, result.bytes_read) == (log_lines(case), log.stat().st_size)  # every line, once
    assert result.skipped == expected["skipped"]
    assert result.new_events == [] and result.rejected == len(expected["events"])  # no such host images
    assert inv.hosts() == []


def lease(tmp_path: Path, inv: Inventory, name: str, token: str = "ab" * 16) -> tuple[Image, str]:
    """A host image with a real host key and a boot token; returns it and its fingerprint."""
    keys = Keys(tmp_path / "keys")
    pub = keys.ensure_host_key(name)
    image = inv.lease(name=name, env="lab", provider="netns", network=ipaddress.IPv4Network("10.213.7.0/24"),
                      role="worker", service=None, version=None, hostkey=pub)
    inv.set_boot_token(name, token)
    image = inv.image(name)
    assert image is not None
    return image, fingerprint(pub)


def line(image: Image, fpr: str, **kw: str) -> str:
    values = {"host": image.name, "mac": image.mac, "ip": image.ip, "hostkey": fpr, "token": image.boot_token or ""}
    remote = kw.pop("remote", None)
    values.update(kw)
    return boot_line(values["host"], values["mac"], values["ip"], values["hostkey"], values["token"], remote)


def test_incremental_read(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "state.db")
    log = tmp_path / "boot.log"
    (a, fa), (b, fb) = lease(tmp_path, inv, "lb01"), lease(tmp_path, inv, "web01")
    lines = [line(a, fa), line(b, fb)]
    log.write_text(lines[0] + lines[1][:40])  # a partial second line (nginx mid-write)
    first = read_new(inv, log)
    assert [e.host for e in first.new_events] == ["lb01"]
    assert first.bytes_read == len(lines[0])
    with open(log, "a") as fh:
        fh.write(lines[1][40:])
    second = read_new(inv, log)
    assert [e.host for e in second.new_events] == ["web01"]
    assert second.bytes_read == len(lines[1])  # only the new bytes were read
    assert read_new(inv, log).lines == 0
    assert {h.name for h in inv.hosts()} == {"lb01", "web01"}


def test_rotation_starts_over(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "state.db")
    log = tmp_path / "boot.log"
    (a, fa), (b, fb) = lease(tmp_path, inv, "lb01"), lease(tmp_path, inv, "web01")
    log.write_text(line(a, fa) + line(b, fb))
    assert len(read_new(inv, log).new_events) == 2
    log.rename(tmp_path / "boot.log.old")
    log.write_text(line(b, fb))  # a new file (new inode): read from its start
    assert [e.host for e in read_new(inv, log).new_events] == ["web01"]


def test_only_what_booted_made_is_believed(tmp_path: Path) -> None:
    """Spoofed lines (from another host, another address, with a guessed key or an old token) are
    rejected and counted; the real line and a user-mode VM's line through loopback are believed."""
    inv = Inventory(tmp_path / "state.db")
    log = tmp_path / "boot.log"
    (web01, f1), (web03, f3) = lease(tmp_path, inv, "web01"), lease(tmp_path, inv, "web03", "cd" * 16)
    forged = [
        line(web01, f1, ip=web03.ip, remote=web03.ip),  # web03 claims to be web01 with its own address
        line(web01, f1, remote=web03.ip),  # web01's address claimed, sent from web03
        line(web01, f1, token=web03.boot_token or ""),  # web03's token
        line(web01, f1, token="00" * 16),  # a guess / an old boot's token
        line(web01, f1, remote="127.0.0.1", token="11" * 16),  # through loopback, without the token
        line(web01, f3),  # web03's host key
        line(web01, f1, host="ghost"),  # no such host image
    ]
    log.write_text("".join(forged))
    result = read_new(inv, log)
    # the line whose claimed address is not its sender's is malformed already; the others are rejected
    assert (result.new_events, result.rejected, result.skipped) == ([], len(forged) - 1, 1)
    assert inv.hosts() == []
    with open(log, "a") as fh:
        fh.write(line(web03, f3, remote="127.0.0.1") + line(web01, f1))
    result = read_new(inv, log)
    assert [e.host for e in result.new_events] == ["web03", "web01"] and result.rejected == 0
    assert {h.name: h.ip for h in inv.hosts()} == {"web01": web01.ip, "web03": web03.ip}
    inv.set_boot_token("web01", "ee" * 16)  # web01 boots again: its earlier lines are void
    inv.remove_hosts()
    inv.bootlog_reset(str(log))
    assert {e.host for e in read_new(inv, log).new_events} == {"web03"}


def test_missing_log_is_empty(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "state.db")
    assert read_new(inv, tmp_path / "nope.log") == ReadResult([], 0, 0, 0)
    assert inv.hosts() == [] and not (tmp_path / "nope.log").exists()  # nothing listed, nothing made


@pytest.mark.parametrize("case", CASES)
def test_fast_path_agrees_with_general_path(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast regex for the boot script's own lines accepts and decodes exactly what the general path does."""
    import re

    from booted.discovery import bootlog

    lines = (DATA / f"{case}.log").read_bytes().decode(errors="replace").splitlines()
    taken = [m for m in map(bootlog.FAST_RE.fullmatch, lines) if m and m.group(2) == m.group(5)]
    assert len(taken) == {"valid": 2, "serving": 1, "hostile": 1, "times": 2}.get(case, 0)  # the fast path is compared
    fast = parse_file(DATA / f"{case}.log")
    monkeypatch.setattr(bootlog, "FAST_RE", re.compile(r"(?!x)x"))  # never matches: general path only
    assert parse_file(DATA / f"{case}.log") == fast


def test_times_field_for_the_timeline_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The optional `times` field (the guest's clocks, shown by env_timeline): strictly parsed on both paths
    (garbage in it makes the line malformed), and never part of the boot event vet() and the host list see."""
    import re

    from booted.discovery import bootlog

    expected = json.loads((DATA / "times.json").read_text())

    def entries() -> list[tuple[dict[str, object], dict[str, object] | None]]:
        out = []
        for raw in (DATA / "times.log").read_text().splitlines():
            try:
                event, times = bootlog.parse_entry(raw)
            except BadLine:
                continue
            out.append((asdict(event), None if times is None else asdict(times)))
        return out

    fast = entries()
    assert fast == list(zip(expected["events"], expected["times"]))
    assert [t for _, t in fast] == [
        {"wall": 1763712101.25, "uptime": 6.2, "init": 1.05, "boot": 1.31, "sshd": 2.4, "serving": 5.9},
        {"wall": 1763712101.998877, "uptime": 9876.54, "init": None, "boot": 9876.1, "sshd": 9876.3, "serving": None},
        {"wall": 1763712101.25, "uptime": 6.2, "init": 1.05, "boot": 1.31, "sshd": 2.4, "serving": None},
        None]
    monkeypatch.setattr(bootlog, "FAST_RE", re.compile(r"(?!x)x"))  # the general path decodes the same
    assert entries() == fast
