"""Where a start's time goes, on real hosts: `fab env_timeline` after `fab env_start_all` on netns hosts (and
one QEMU VM) gives each host's phases in order, adding up to the start as env_start_all reported it; its
SVG parses with a bar per phase; the monitor's status page shows a heal's timeline in a real browser. The
VMs' timeline is checked on test_qemu_lab.py's lab (check_vm_timeline)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from booted.state.timelines import PHASES
from tests.integration.conftest import LabRun, leftovers

pytestmark = pytest.mark.integration

ENV = '''ENVIRONMENTS = {"tl": {"provider": "netns", "network": "10.213.115.0/24", "hosts": {
    "lb01": {"role": "lb", "service": "lb", "version": "1.0"},
    "web[01:02]": {"role": "worker", "service": "hello", "version": "1.0"}},
    "min": {"lb": 1, "worker": 2}, "monitor": {"interval": 1}}}
'''
NAMES = [name for name, _, _ in PHASES]
SVG = "{http://www.w3.org/2000/svg}"
# Both sides of each comparison are the same moments, rounded to the millisecond by --json (3 decimals):
# the tolerance is that rounding, never how fast anything ran.
ROUNDING = 0.0015


def timed(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in row["phases"] if p["seconds"] is not None]


def check_in_order(row: dict[str, Any]) -> None:
    """The phases follow each other from the start (0) to the last moment and add up to it."""
    spans = timed(row)
    assert [p["phase"] for p in row["phases"]] == NAMES
    assert spans[0]["from"] == 0 and all(p["from"] <= p["to"] for p in spans), row
    assert all(a["to"] == b["from"] for a, b in itertools.pairwise(spans)), row
    assert abs(sum(p["seconds"] for p in spans) - spans[-1]["to"]) <= ROUNDING * len(spans), row
    assert abs(spans[-1]["to"] - row["seconds"]) <= ROUNDING and row["ok"], row
    moments = [row["moments"][m] for _, m, _ in PHASES if row["moments"][m] is not None]
    assert moments == sorted(moments), row


def check_adds_up(rows: list[dict[str, Any]], started: list[dict[str, Any]], elapsed: float) -> None:
    """Each host's timeline ends where env_start_all's own measure of its boot ended (verified: the boot step's
    seconds), and its boot-log line where that step's "booted in X.Xs" says (rounded to 0.1 s there)."""
    boot = {r["name"]: r["boot"] for r in started}
    assert sorted(r["name"] for r in rows) == sorted(boot)
    for row in rows:
        check_in_order(row)
        assert abs(timed(row)[-1]["to"] - boot[row["name"]]["seconds"]) <= ROUNDING, (row, boot[row["name"]])
        said = re.fullmatch(r"booted in ([0-9.]+)s", boot[row["name"]]["detail"])
        assert said is not None and abs(row["moments"]["logged"] - float(said.group(1))) <= 0.05 + ROUNDING, row
        assert timed(row)[-1]["to"] < elapsed  # the start happened inside the command that made it
        assert "out of order" not in row["note"], row  # no guest moment had to be moved into order


def check_svg(path: Path, rows: list[dict[str, Any]]) -> None:
    root = ET.parse(path).getroot()  # well-formed, one document
    assert root.tag == f"{SVG}svg" and "href" not in path.read_text()
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    for row in rows:
        mine = [b for b in bars if b.get("data-host") == row["name"]]
        assert [b.get("data-phase") for b in mine] == [p["phase"] for p in timed(row)]
        xs = [float(b.get("x", "")) for b in mine]
        assert xs == sorted(xs)


def api(url: str, path: str, method: str = "GET") -> tuple[int, str]:
    base, token = url.split("/?token=")
    req = urllib.request.Request(base + path, method=method, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(what: str, check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_netns_timeline_adds_up_and_the_status_page_shows_a_heal(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV)
    t0 = time.monotonic()
    started = json.loads(lab_run.fab("env_start_all", "--json").stdout)
    elapsed = time.monotonic() - t0
    assert all(r["ok"] for r in started), started

    svg = lab_run.tmp / "t.svg"
    run = lab_run.fab("env_timeline", "--json", "--svg", str(svg))
    rows = json.loads(run.stdout)
    assert f"wrote {svg}" in run.stderr
    check_adds_up(rows, started, elapsed)
    for row in rows:  # netns hosts: the machine's kernel and clock; every host served at boot
        assert row["clock"] == "machine" and abs(row["clock_offset"]) < 1.0 and row["note"] == "", row
        assert {p["phase"]: p["why"] for p in row["phases"]}["kernel"] == "n/a"
        assert [p["phase"] for p in timed(row)] == ["prepare", "init", "sshd", "service", "phone-home", "verify"]
    check_svg(svg, rows)
    table = lab_run.fab("env_timeline").stdout
    print(table)
    assert table.splitlines()[1].split() == ["host", *NAMES, "total", "clock"]
    assert "n/a: a netns host runs on the machine's kernel" in table

    # a heal (asked through the monitor's API): its start is the last one, and the status page shows it
    lab_run.fab("monitor_start")
    url_file = Path(lab_run.env["BOOTED_STATE_DIR"]) / "monitor" / "tl.url"
    wait_for("the monitor's API", url_file.exists)
    url = url_file.read_text().strip()
    assert api(url, "/api/timeline") == (200, "{}")  # no heal yet
    assert api(url, "/api/hosts/web02/reprovision", "POST")[0] == 202
    ctx = lab_run.ctx()
    wait_for("web02 healed", lambda: any(a["kind"] == "heal" and a["host"] == "web02" and a["status"] == "done"
                                         for a in ctx.inventory.actions("tl")))
    ctx.close()
    last = json.loads(lab_run.fab("env_timeline", "--json").stdout)
    assert [r["name"] for r in last] == ["web02"]
    check_in_order(last[0])
    code, body = api(url, "/api/timeline")
    heal = json.loads(body)
    assert code == 200 and heal["action"]["host"] == "web02" and heal["hosts"] == last, heal
    ET.fromstring(heal["svg"])
    chromium = shutil.which("chromium")
    if chromium is not None:
        dom = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                              "--virtual-time-budget=5000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120).stdout
        assert re.search(r'<p id="heal"[^>]*>heal web02 at [^<]*s from the start to verified</p>', dom), dom[-3000:]
        assert "<td>phone-home</td>" in dom
        assert len(re.findall(r'<rect class="bar" data-host="web02"', dom)) == len(timed(last[0])), dom[-3000:]
    assert "stopped the monitor" in lab_run.fab("env_stop").stderr
    assert leftovers(lab_run) == []


def check_vm_timeline(lab_run: LabRun, started: list[dict[str, Any]], elapsed: float) -> None:
    """The timeline of a start of QEMU VMs (`env_start_all --json` gave `started` in `elapsed` seconds): every
    phase, firmware and kernel too, on the guest's clock. Called by test_qemu_lab.py on its lab (booting a VM
    lab for this alone took a test of its own)."""
    rows = json.loads(lab_run.fab("env_timeline", "--json", "--svg", str(lab_run.tmp / "vm.svg")).stdout)
    check_adds_up(rows, started, elapsed)
    for row in rows:
        assert row["clock"] == "guest" and row["clock_offset"] is not None
        assert [p["phase"] for p in timed(row)] == NAMES  # a VM has every phase: firmware and kernel too
        spans = {p["phase"]: p["seconds"] for p in timed(row)}
        # (firmware may be 0: when the guest's clock ran at the wrong speed, its kernel's start comes from its
        # RTC, read to the second, and is not placed before QEMU started)
        assert spans["firmware"] >= 0 and spans["kernel"] > 0, row
    check_svg(lab_run.tmp / "vm.svg", rows)
    print(lab_run.fab("env_timeline").stdout)
