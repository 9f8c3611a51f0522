"""The host scripts' health probe under bash (booted/remote/scripts/probe.sh: svc_healthy over /dev/tcp, which
replaced one curl -f): real bash against a real loopback socket; it takes what curl -f took (any status below
400) and fails otherwise."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from booted.remote import scripts
from tests.test_phone_home import serve_once


@pytest.mark.parametrize(("status", "healthy"), [("200 OK", True), ("204 No Content", True),
                                                 ("500 Internal Server Error", False)])
def test_svc_healthy_takes_what_curl_f_took(tmp_path: Path, status: str, healthy: bool) -> None:
    port, got = serve_once(status)  # answers once; later tries are refused until the probe's 10 s are up
    values = {"base": str(tmp_path), "service": "hello", "url": f"http://127.0.0.1:{port}/health", "port": str(port),
              "port_hex": f"{port:04X}", "reuse_port": "", "on_backends": ""}
    script = scripts.assignments(values) + scripts.text("lib") + scripts.text("probe") + "svc_healthy\n"
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert (run.returncode == 0) is healthy, run.stderr
    assert got and got[0].startswith(b"GET /health HTTP/1.0\r\n")
