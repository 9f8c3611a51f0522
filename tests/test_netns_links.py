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
