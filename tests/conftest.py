"""Shared fixtures. Unit tests need no root and no network; integration tests are marked and need root."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from booted.config import Settings  # noqa: E402 (after the path is set)
from booted.remote.releases import discard  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests start namespaces and VMs: run as root")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def settings_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """BOOTED_* variables pointing every piece of state into a temp dir (golden cache shared). Afterwards
    the releases folder such a private state dir gets under /run (as root) is removed."""
    env = {
        "BOOTED_STATE_DIR": str(tmp_path / "state"),
        "BOOTED_ENVIRONMENTS": str(tmp_path / "environments.py"),
        "BOOTED_CACHE_DIR": os.environ.get("BOOTED_CACHE_DIR", str(REPO / ".booted" / "cache")),
        "PATH": os.environ["PATH"],
    }
    yield env
    discard(Settings.from_env(env, REPO))


@pytest.fixture(autouse=True)
def _machine_networks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests do not read this machine's addresses and routes (what they find depends on the labs other
    runs have up); integration tests do, as a user's run does."""
    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setattr("booted.lab.preflight.claims", lambda env, ip_tool=None: [])
