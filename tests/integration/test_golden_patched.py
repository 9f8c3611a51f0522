"""The golden image is patched: its apt sources name bookworm-updates and bookworm-security, nothing the
suites had at build time is pending in a host, and a refresh builds a new generation beside the one running
hosts use, which goes only once nothing uses it. Asks the real Debian mirrors (this machine's apt sources)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from booted.config import Settings
from booted.images import generations as gen
from booted.images.golden import ensure_golden, rootfs_key
from booted.images.suites import Mirrors, built_state, mirror_state, native_arch
from tests.integration.conftest import LabRun

pytestmark = pytest.mark.integration

ENV = '''ENVIRONMENTS = {{"patched": {{"provider": "netns", "network": "{net}", "hosts": {{"{name}": {{}}}}}}}}\n'''


def run_on(lab_run: LabRun, command: str) -> str:
    rows = json.loads(lab_run.fab("hosts_run", command, "--json", "--timeout", "600").stdout)
    assert len(rows) == 1 and rows[0]["ok"], rows
    return str(rows[0]["output"])


def test_a_host_has_the_security_suite_and_nothing_pending(lab_run: LabRun) -> None:
    settings = Settings.from_env(lab_run.env)
    image = ensure_golden(settings, lambda line: None)
    mirrors = Mirrors.of(settings)
    sources = (image.rootfs / "etc/apt/sources.list").read_text()
    assert f"deb {mirrors.security} bookworm-security main" in sources, sources
    assert f"deb {mirrors.main} bookworm-updates main" in sources, sources

    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(net="10.213.117.0/24", name="sec01"))
    assert "1 ok, 0 failed" in lab_run.fab("env_start_all").stdout
    # with the lists the image was built from: the build upgraded everything the three suites had
    pending = run_on(lab_run, "apt-get -s -o Debug::NoLocking=1 dist-upgrade")
    assert "0 upgraded, 0 newly installed" in pending and "\nInst " not in pending, pending
    # with today's lists, through booted's apt proxy: no security update from before the build is pending
    # (one published since shows only if the suite moved on, which the next daily check rebuilds for)
    fresh = run_on(lab_run, "apt-get update -q >/dev/null && apt-get -s dist-upgrade")
    security = [line for line in fresh.splitlines() if line.startswith("Inst ") and "-security" in line]
    built, served = built_state(image.rootfs, native_arch()), mirror_state(mirrors, native_arch())
    if built["bookworm-security"] == served["bookworm-security"]:
        assert security == [], fresh
    else:
        assert gen.moved_on(built, served), "the security suite moved on: the daily check must see it"
    log = Path(lab_run.env["BOOTED_STATE_DIR"]) / "apt-cacher-ng" / "log" / "apt-cacher.log"
    assert "bookworm-security" in log.read_text()  # the host asked the security suite through the proxy


def test_refresh_keeps_the_generation_running_hosts_use(lab_run: LabRun) -> None:
    """In a private cache seeded with the shared image (hard links, instant), so the refresh disturbs no one."""
    shared = Settings.from_env(lab_run.env)
    image = ensure_golden(shared, lambda line: None)
    cache = lab_run.tmp / "cache"
    cache.mkdir()
    key = rootfs_key(Mirrors.of(shared))
    subprocess.run(["cp", "-al", str(image.rootfs), str(image.layer), str(cache)], check=True)
    record = gen.Record.load(gen.Record.path(shared.cache_dir, key))
    assert record is not None
    record.checked = time.time()
    record.save(gen.Record.path(cache, key))
    lab_run.env["BOOTED_CACHE_DIR"] = str(cache)
    Path(lab_run.env["BOOTED_ENVIRONMENTS"]).write_text(ENV.format(net="10.213.118.0/24", name="old01"))
    assert "1 ok, 0 failed" in lab_run.fab("env_start_all").stdout
    old = cache / image.rootfs.name

    refreshed = lab_run.fab("image_golden", "--refresh", timeout=900)
    assert f"older  {old.name} (kept until no host uses it)" in refreshed.stdout, refreshed.stdout
    current = gen.Record.load(gen.Record.path(cache, key))
    assert current is not None and current.current != old.name and (cache / current.current).is_dir()
    assert (old / ".booted-complete").exists()  # replaced a moment ago, and old01's overlay is on it
    later = time.time() + gen.GRACE + 1  # past the grace period: only the running host keeps it
    said = gen.prune(cache, later, gen.process_refs() + gen.disk_refs([Path(lab_run.env["BOOTED_STATE_DIR"])]))
    assert len(said) == 1 and said[0].startswith(f"older golden image {old.name} kept: pid "), said
    assert old.is_dir()
    sources = (cache / current.current / "etc/apt/sources.list").read_text()
    assert "bookworm-security" in sources

    lab_run.fab("env_stop")
    said = gen.prune(cache, later, gen.process_refs() + gen.disk_refs([Path(lab_run.env["BOOTED_STATE_DIR"])]))
    assert said == [f"older golden image {old.name} removed: nothing uses it"] and not old.exists()
    assert (cache / current.current / ".booted-complete").exists()
    assert os.listdir(cache / current.current / "etc/apt")
