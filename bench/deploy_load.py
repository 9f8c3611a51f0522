"""Requests failed during deploys under load (netns): two hello workers, a bounded load straight at each
worker's lab address (no lb to retry for it), and `fab hello_deploy --version V` of a new version again
and again; first with hello's `reuse_port = false` (a restart stops the old process, then starts the new
one), then with `reuse_port = true` (the new process starts beside the old one, which then finishes its
requests and goes).

    sudo .venv/bin/python bench/deploy_load.py              # ~1 min
    sudo .venv/bin/python bench/deploy_load.py --deploys 2  # the smoke

Last line: `failed_stop_start=.. failed_overlap=.. requests=..`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import _benchlib as lib
from _benchlib import run_in_tmp, say

NET = "10.213.236"
ENV = f'''ENVIRONMENTS = {{"dl": {{"provider": "netns", "network": "{NET}.0/24", "hosts": {{
    "web[01:02]": {{"role": "worker", "service": "hello"}}}}}}}}
'''
WORKERS = [f"http://{NET}.2:8000/", f"http://{NET}.3:8000/"]


class Load(threading.Thread):
    """`rate` requests per second, round robin over the workers; counts failures."""

    def __init__(self, rate: float) -> None:
        super().__init__(daemon=True)
        self.rate, self.ok, self.failed, self.stop = rate, 0, 0, threading.Event()

    def run(self) -> None:
        due, n = time.monotonic(), 0
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(WORKERS[n % len(WORKERS)], timeout=3) as resp:
                    resp.read()
                self.ok += 1
            except OSError:
                self.failed += 1
            n += 1
            due += 1 / self.rate
            time.sleep(max(0.0, due - time.monotonic()))


def make_repo(repo: Path, tags: list[str]) -> None:
    shutil.copytree(lib.ROOT / "service" / "hello", repo, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "hello"], *(["tag", t] for t in tags)):
        subprocess.run(git + cmd, check=True, capture_output=True)


def services(folder: Path, reuse_port: bool) -> Path:
    """A services folder whose hello says reuse_port = true/false."""
    shutil.copytree(lib.ROOT / "service" / "hello", folder / "hello",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    toml = folder / "hello" / "service.toml"
    toml.write_text(toml.read_text().replace("reuse_port = true", f"reuse_port = {str(reuse_port).lower()}"))
    return folder


def phase(env: dict[str, str], versions: list[str], rate: float) -> tuple[int, int, float]:
    """Deploy each version under load: (failed, sent, mean deploy seconds)."""
    load = Load(rate)
    load.start()
    time.sleep(1)
    took = []
    try:
        for version in versions:
            seconds, _ = lib.timed([lib.FAB, "hello_deploy", "--version", version], env=env)
            took.append(seconds)
            time.sleep(0.5)
    finally:
        load.stop.set()
        load.join()
    return load.failed, load.ok + load.failed, sum(took) / len(took)


def run(tmp: Path, args: argparse.Namespace) -> int:
    tags = [f"v{n}" for n in range(1, 2 * args.deploys + 2)]
    make_repo(tmp / "repo", tags)
    (tmp / "environments.py").write_text(ENV)
    base = lib.booted_env(tmp / "state", tmp / "environments.py", HELLO_REPO=str(tmp / "repo"))
    plain = {**base, "BOOTED_SERVICES": str(services(tmp / "plain", False))}
    overlap = {**base, "BOOTED_SERVICES": str(services(tmp / "overlap", True))}
    try:
        seconds, _ = lib.timed([lib.FAB, "env_start_all"], env=plain)
        lib.timed([lib.FAB, "hello_deploy", "--version", tags[0]], env=plain)
        say(f"lab up in {seconds:.1f}s; {args.rate:g} req/s at web01 and web02 while deploying")
        stop_start = phase(plain, tags[1:args.deploys + 1], args.rate)
        say(f"reuse_port = false: {stop_start[0]} of {stop_start[1]} requests failed over {args.deploys} deploys")
        overlapped = phase(overlap, tags[args.deploys + 1:], args.rate)
        say(f"reuse_port = true: {overlapped[0]} of {overlapped[1]} requests failed over {args.deploys} deploys")
    finally:
        lib.timed([lib.FAB, "env_stop"], env=plain, check=False)
    print(lib.machine())
    print(lib.table(["restart", "deploys", "requests failed", "of sent", "mean deploy s"], [
        ("stop, then start (reuse_port = false)", args.deploys, stop_start[0], stop_start[1], f"{stop_start[2]:.2f}"),
        ("overlapped (reuse_port = true)", args.deploys, overlapped[0], overlapped[1], f"{overlapped[2]:.2f}"),
    ]))
    print(f"failed_stop_start={stop_start[0]} failed_overlap={overlapped[0]} "
          f"requests={stop_start[1] + overlapped[1]}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="requests failed during deploys under load, with and without "
                                     "overlapped restarts")
    parser.add_argument("--deploys", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/deploy_load.py needs root (netns hosts)", file=sys.stderr)
        return 2
    return run_in_tmp("deploy_load", lambda tmp: run(tmp, args))


if __name__ == "__main__":
    sys.exit(main())
