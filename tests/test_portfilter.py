"""Issue 19 items 2 and 3 without hosts: the port filter's nft transaction, the boot log's size budget and
dropped-line count, BOOTED_BOOT_LOG_MAX, and the state directory's permissions."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest

from booted.config import Settings
from booted.discovery.bootlog import dropped_lines, read_new, tally_of
from booted.discovery.nginx import file_limit
from booted.errors import ConfigError, ProviderError
from booted.providers.lab import Lab
from booted.providers.portfilter import script
from booted.state.inventory import Inventory
from booted.state.private import make_private

LAB = Lab("lab", "abc123", ipaddress.IPv4Network("10.213.93.0/24"), Path("/nonexistent"))


def test_each_port_accepts_only_its_lease() -> None:
    text = script(LAB, [("bvabc1232", "52:54:0A:00:00:02", "10.213.93.2")])
    t = "bridge booted_abc123"
    # before the bridge learns a source MAC, for frames to other hosts and to the gateway alike
    assert f"add chain {t} prerouting {{ type filter hook prerouting priority filter; policy accept; }}" in text
    assert f"flush chain {t} prerouting\nadd rule {t} prerouting iifname vmap @ports\n" in text
    rules = [line.split(" p_bvabc1232 ", 1)[1] for line in text.splitlines()
             if line.startswith(f"add rule {t} p_bvabc1232 ")]
    assert rules == ["ether saddr != 52:54:0a:00:00:02 drop", "ether type != { ip, arp } drop",
                     "ether type ip ip saddr != 10.213.93.2 drop", "ether type arp arp hlen != 6 drop",
                     "ether type arp arp plen != 4 drop", "ether type arp arp saddr ether != 52:54:0a:00:00:02 drop",
                     "ether type arp arp saddr ip != 10.213.93.2 drop"]
    assert text.endswith(f'add element {t} ports {{ "bvabc1232" : goto p_bvabc1232 }}\n')
    assert text.count("flush chain") == 2  # a re-plugged port's old rules go in the same transaction


@pytest.mark.parametrize("port,mac,ip", [("bv1; flush ruleset", "52:54:00:00:00:01", "10.0.0.1"),
                                         ("bv1", "52:54:00:00:00:01 drop", "10.0.0.1"),
                                         ("bv1", "52:54:00:00:00:01", "x")])
def test_nothing_odd_reaches_nft(port: str, mac: str, ip: str) -> None:
    with pytest.raises(ProviderError):
        script(LAB, [(port, mac, ip)])


def test_boot_log_budget(tmp_path: Path) -> None:
    log = tmp_path / "boot.log"
    assert file_limit(log, 1000) == 500  # nothing kept: the live log and its tally get half each
    for stamp, size in (("20250101-000000", 300), ("20250102-000000", 200), ("20250103-000000", 100)):
        (tmp_path / f"boot.log.{stamp}").write_bytes(b"x" * size)
    tally_of(log).write_bytes(b"\n" * 50)
    assert file_limit(log, 1000) == 350  # the oldest kept copy goes (kept copies: at most half)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boot.log.20250102-000000", "boot.log.20250103-000000",
                                                          "boot.log.tally"]


def test_dropped_lines_are_counted(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "state" / "state.db")
    log = tmp_path / "boot.log"
    log.write_bytes(b"junk line\n" * 3 + b"cut off by the file-size lim")
    tally_of(log).write_bytes(b"\n" * 10)  # 10 calls answered: 3 whole lines, one cut, 6 never written
    result = read_new(inv, log)
    assert (result.lines, result.skipped, result.dropped) == (3, 3, 7)
    assert dropped_lines(2, 5) == 0  # a line written before its tally byte: never negative
    assert read_new(inv, tmp_path / "none.log").dropped == 0


@pytest.mark.parametrize("raw,value", [("", 64 << 20), ("65536", 65536), ("64k", 64 << 10), ("2G", 2 << 30)])
def test_boot_log_max(raw: str, value: int) -> None:
    assert Settings.from_env({"BOOTED_BOOT_LOG_MAX": raw}).boot_log_max == value


@pytest.mark.parametrize("raw", ["lots", "1K", "-5M", "1.5M"])
def test_boot_log_max_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="BOOTED_BOOT_LOG_MAX"):
        Settings.from_env({"BOOTED_BOOT_LOG_MAX": raw})


def test_state_is_private_and_tightened(tmp_path: Path) -> None:
    db = tmp_path / "state" / "state.db"
    Inventory(db).close()
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(db.parent) == 0o700 and mode(db) == 0o600
    wal = db.with_name("state.db-wal")
    db.parent.chmod(0o755)
    db.chmod(0o644)
    wal.write_text("")
    wal.chmod(0o664)
    make_private(db)
    assert (mode(db.parent), mode(db), mode(wal)) == (0o700, 0o600, 0o600)
