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

# The suite runs in parallel (pytest-xdist: pyproject's addopts, `-n 3 --dist loadgroup`; most tests wait on
# hosts, not on the CPU). The tests of one group run one after another in one worker: a test file is a group
# (its tests may share a lab network); each benchmark smoke is a group of its own (each has its own network);
# the tests whose hosts install packages share one group (their labs' apt-cacher-ngs share one cache folder,
# BOOTED_CACHE_DIR's), and so do the libvirt ones (the daemons' QEMUs are the heaviest VMs).
GROUPS = {"test_containment.py": "apt", "test_golden_patched.py": "apt", "test_tools.py": "apt",
          "test_qemu_lab.py": "apt", "test_libvirt_lab.py": "libvirt", "test_libvirt_smoke": "libvirt",
          "test_libvirt_snapshots.py": "libvirt"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            key = item.name if item.path.name == "test_bench_smoke.py" else item.path.name
            item.add_marker(pytest.mark.xdist_group(GROUPS.get(key, key)))
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests start namespaces and VMs: run as root")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    """In a worker: every test carries its group in its node id, or the groups were lost (tests of one group
    would run at once, on one lab network): stop before any test runs."""
    if getattr(session.config.option, "loadgroup", False) and any("@" not in i.nodeid for i in session.items):
        raise pytest.UsageError("pytest-xdist's test groups were not applied (pyproject.toml pins pytest 8 for "
                                "pytest-xdist 3.8; run setup.sh), or run one test at a time: -n 0")


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
