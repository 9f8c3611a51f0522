"""Boot-log parser driven by recorded lines (tests/data/bootlog/*.log + expected *.json), and the
incremental reader's cursor (no re-reading, partial lines, rotation)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from booted.discovery.bootlog import BadLine, parse_line, read_new
from booted.state.inventory import Inventory

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


def test_cases_exist() -> None:
    assert {"valid", "garbage", "hostile"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_reader_matches_parser(tmp_path: Path, case: str) -> None:
    inv = Inventory(tmp_path / "state.db")
    log = tmp_path / "boot.log"
    log.write_bytes((DATA / f"{case}.log").read_bytes())
    result = read_new(inv, log)
    expected = json.loads((DATA / f"{case}.json").read_text())
    assert [asdict(e) for e in result.new_events] == expected["events"]
    assert result.skipped == expected["skipped"]
    latest = {e["host"]: e for e in expected["events"]}
    assert {h.name: h.ip for h in inv.hosts()} == {n: e["ip"] for n, e in latest.items()}


def test_incremental_read(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "state.db")
    log = tmp_path / "boot.log"
    lines = (DATA / "valid.log").read_text().splitlines(keepends=True)
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
    log.write_text((DATA / "valid.log").read_text())
    assert len(read_new(inv, log).new_events) == 3
    log.rename(tmp_path / "boot.log.old")
    log.write_text((DATA / "hostile.log").read_text())  # a new file (new inode): read from its start
    result = read_new(inv, log)
    assert [e.host for e in result.new_events] == ["web02"]


def test_missing_log_is_empty(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "state.db")
    assert read_new(inv, tmp_path / "nope.log").lines == 0


@pytest.mark.parametrize("case", CASES)
def test_fast_path_agrees_with_general_path(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast regex for the boot script's own lines accepts and decodes exactly what the general path does."""
    import re

    from booted.discovery import bootlog

    fast = parse_file(DATA / f"{case}.log")
    monkeypatch.setattr(bootlog, "FAST_RE", re.compile(r"(?!x)x"))  # never matches: general path only
    assert parse_file(DATA / f"{case}.log") == fast
