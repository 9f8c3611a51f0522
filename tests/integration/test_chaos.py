"""Chaos runs on a real netns lab (an lb in front of a pool of 3 hello workers, HAProxy, sshd, the monitor):
refused without the monitor; a 60 s run with a kill every 15 s passes --max-failed 0, each kill healed and on
the monitor's page as a chaos event; a service's kill heals too; an SLO the lab cannot meet exits 1 and says
which; Ctrl-C ends a run, clears the link it impaired and still prints the report."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.conftest import FAB, LabRun, leftovers
from tests.integration.test_monitor import api, status, wait_for

pytestmark = pytest.mark.integration

ENV = '''ENVIRONMENTS = {"chx": {"provider": "netns", "network": "10.213.250.0/24", "hosts": {
    "lb01": {"role": "lb", "service": "lb", "version": "1.0"},
    "web[01:03]": {"role": "worker", "service": "hello", "version": "1.0"}},
    "min": {"lb": 1, "worker": 3}, "monitor": {"interval": 1}}}
'''


def impaired(lab_run: LabRun) -> list[str]:
    return [r["host"] for r in json.loads(lab_run.fab("net_status", "--json").stdout) if r["state"] == "applied"]


def test_chaos_runs_prove_the_lab_heals(lab_run: LabRun) -> None:
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV)
    assert "4 ok, 0 failed" in lab_run.fab("env_start_min").stdout
    refused = lab_run.fab("chaos", "--duration", "5", check=False)
    assert refused.returncode == 2 and "monitor of 'chx' is not running" in refused.stderr, refused.stderr
    lab_run.fab("monitor_start")
    wait_for("three healthy workers", lambda: len(status(lab_run)["last_pass"].get(  # type: ignore[union-attr]
        "roles", {}).get("worker", {}).get("healthy", [])) == 3, timeout=60)

    # 60 s at 20 req/s, a worker killed (-9, the whole host) every 15 s: no request fails, every kill heals
    run = lab_run.fab("chaos", "--duration", "60", "--kill-every", "15", "--max-failed", "0", "--json",
                      timeout=400)
    report = json.loads(run.stdout)
    assert report["failed"] == 0 and report["sent"] >= 1000, {k: report[k] for k in ("sent", "failed", "errors")}
    kills = [f for f in report["failures"] if f["what"] == "kill -9 host"]
    skipped = [e for e in report["timeline"] if "skipped" in e["event"]]
    assert len(kills) + len(skipped) == 3 and kills, report["timeline"]  # at 15, 30 and 45 s
    assert all(f["role"] == "worker" and f["heal_s"] is not None and f["heal_s"] > 0 for f in kills), kills
    assert report["phases"][0]["name"] == "before" and report["phases"][0]["sent"] > 0
    assert sum(p["sent"] for p in report["phases"]) == report["sent"]
    assert report["slo"] == {"max_failed": 0, "max_p99_ms": None, "broken": [], "met": True}
    # the kills are events of the monitor (its API and page), each closed with its heal time
    url = (Path(lab_run.env["BOOTED_STATE_DIR"]) / "monitor" / "chx.url").read_text().strip()
    code, body = api(url, "/api/events", url.split("token=")[1])
    chaos = [e for e in json.loads(body) if e["kind"] == "chaos"]
    assert code == 200 and len(chaos) == len(kills), chaos
    assert all(e["status"] == "done" and e["detail"].startswith("healed in ") for e in chaos), chaos
    chromium = shutil.which("chromium")
    if chromium is not None:  # the status page in a real headless browser (CI installs Debian's chromium)
        dom = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                              "--virtual-time-budget=5000", "--dump-dom", url], capture_output=True, text=True,
                             timeout=120).stdout
        assert 'class="event chaos"' in dom and "chaos: kill -9 of web0" in dom, dom[-2000:]
    wait_for("three healthy workers again", lambda: len(status(lab_run)["last_pass"][  # type: ignore[index]
        "roles"]["worker"]["healthy"]) == 3, timeout=60)

    # kill -9 of a worker's service process (its supervisor starts it again): healed, no request failed
    svc = json.loads(lab_run.fab("chaos", "--duration", "10", "--kill-every", "4", "--kill",
                                 "role=worker,what=service", "--max-failed", "0", "--json").stdout)
    kills = svc["failures"]
    assert svc["failed"] == 0 and kills and all(f["what"] == "kill -9 service" and f["heal_s"] is not None
                                                and f["detail"].startswith("hello pid ") for f in kills), svc

    # an SLO the lab cannot meet: exit 1, and the report and the message say which
    slow = lab_run.fab("chaos", "--duration", "8", "--kill-every", "0", "--max-p99", "0.001", check=False)
    assert slow.returncode == 1, (slow.stdout, slow.stderr)
    assert "SLO NOT MET: --max-p99 0.001 ms: p99 was" in slow.stdout
    assert "booted: SLO not met: --max-p99 0.001 ms" in slow.stderr

    # Ctrl-C: the run ends early, the link it impaired is cleared, the report is still printed
    proc = subprocess.Popen([FAB, "chaos", "--duration", "60", "--kill", "none", "--load", "5",
                             "--impair", "host=web02,delay=100ms,for=50,at=1"], cwd=REPO, env=lab_run.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("web02's link impaired", lambda: impaired(lab_run) == ["web02"], timeout=60)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "(interrupted)" in out and "impair delay=100ms" in out and "link cleared" in out, out
    assert impaired(lab_run) == []
    lab_run.fab("env_stop")
    assert leftovers(lab_run) == []
