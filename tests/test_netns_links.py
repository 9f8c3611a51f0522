"""Making many network namespaces at once (providers/links.add_netns): the `ip` runs are faked (the process
boundary), each namespace is asked for exactly once and the first alone."""

from __future__ import annotations

import pytest

from booted.providers import links


@pytest.mark.parametrize("count", [1, 50, 127, 128, 130, 256, 500, 1000])
def test_every_namespace_is_added_once_the_first_alone(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    runs: list[list[str]] = []
    monkeypatch.setattr(links, "ip_batch", lambda lines: runs.append(lines) or "")
    names = [f"bt0-w{i:04d}" for i in range(count)]
    links.add_netns(names)
    assert sorted(line for run in runs for line in run) == sorted(f"netns add {n}" for n in names)
    assert len(runs) <= 5
    if len(runs) > 1:  # in parallel: the first (it may make /run/netns a shared mount) ran before, alone
        assert runs[0] == [f"netns add {names[0]}"]
        assert all(len(run) >= 32 for run in runs[1:])


@pytest.mark.integration
def test_kill_netns_pids_kills_only_the_processes_in_those_namespaces() -> None:
    """Real namespaces and processes (root): one scan of /proc finds every process of the given namespaces."""
    import os
    import subprocess
    import time

    from booted.providers.netns import _kill_netns_pids
    names = [f"bttest{os.getpid()}-{k}" for k in range(2)]
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True)
    inside = [subprocess.Popen(["ip", "netns", "exec", name, "sleep", "60"]) for name in names]
    outside = subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        def pids(name: str) -> str:
            return subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.strip()
        while time.monotonic() < deadline and not all(pids(n) for n in names):
            time.sleep(0.05)
        _kill_netns_pids([*names, "bttest-no-such-namespace"])
        assert [p.wait(timeout=10) for p in inside] == [-9, -9]
        assert outside.poll() is None
    finally:
        outside.kill()
        outside.wait()
        for p in inside:
            p.kill()
            p.wait()
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)
