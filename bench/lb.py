"""Load balancer benchmark (netns): the lb service (HAProxy, driven through its runtime API) against booted's
first lb (bench/pylb: a round-robin proxy in Python), side by side in one lab, in front of the same three
hello workers.

    sudo .venv/bin/python bench/lb.py            # ~2 min
    sudo .venv/bin/python bench/lb.py --smoke    # shorter phases (what the tests run)

For each proxy, in turns (`--runs` rounds):
  throughput  `--clients` threads send requests for `--seconds`, each on one HTTP/1.1 connection kept
              open where the proxy allows it (HAProxy does; the Python lb closes after each answer, so
              its clients reconnect): requests per second, median and 99th percentile latency, failures;
  kill        a bounded load (40 req/s) while one worker's whole host is killed (kill -9 of its netns
              host) and started again by booted: requests failed;
  change      a bounded load while booted takes a worker out of the proxy's backend list and puts it back
              (over SSH, the path the monitor uses: the live list and, for HAProxy, its runtime API),
              `--changes` times: requests failed.
The load generator sends only to the lab addresses of the two proxies. Always stops what it started.
Last line: `haproxy_over_pylb_rps=.. haproxy_p99_ms=.. pylb_p99_ms=.. failed_kill=H/P failed_change=H/P`.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import sys
import threading
import time
from pathlib import Path

import _benchlib as lib
from _benchlib import BenchError, run_in_tmp, say

from booted.config import Settings
from booted.context import Booted
from booted.remote import deploy

NET = "10.213.239"
ENV = f'''ENVIRONMENTS = {{"lbb": {{"provider": "netns", "network": "{NET}.0/24", "hosts": {{
    "lb01": {{"role": "lb", "service": "lb", "version": "1.0"}},
    "lb02": {{"role": "pylb", "service": "pylb", "version": "1.0"}},
    "web[01:03]": {{"role": "worker", "service": "hello", "version": "1.0"}}}}}}}}
'''
PROXIES = {"haproxy": ("lb01", "lb", f"{NET}.2"), "pylb": ("lb02", "pylb", f"{NET}.3")}
WORKERS = {"web01": f"{NET}.4:8000", "web02": f"{NET}.5:8000", "web03": f"{NET}.6:8000"}


def get(ip: str) -> bool:
    conn = http.client.HTTPConnection(ip, 8080, timeout=10)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            say(f"{ip}: HTTP {resp.status}")
        return resp.status == 200
    except (OSError, http.client.HTTPException) as exc:
        say(f"{ip}: {exc}")
        return False
    finally:
        conn.close()


def throughput(ip: str, clients: int, seconds: float) -> tuple[float, float, float, int]:
    """(requests/s, median ms, p99 ms, failed) with `clients` threads as fast as they go."""
    times: list[float] = []
    failed = [0]
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client() -> None:
        mine, bad = [], 0
        conn = http.client.HTTPConnection(ip, 8080, timeout=5)  # kept open where the proxy allows it
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                ok = False
            if ok:
                mine.append(time.perf_counter() - start)
            else:
                bad += 1
        conn.close()
        with lock:
            times.extend(mine)
            failed[0] += bad
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times.sort()
    if not times:
        raise BenchError(f"no request to {ip} succeeded")
    return (len(times) / seconds, 1000 * times[len(times) // 2], 1000 * times[int(len(times) * 0.99)], failed[0])


class Load(threading.Thread):
    """A bounded load (requests per second) against one proxy; counts failures."""

    def __init__(self, ip: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.ip, self.rate, self.ok, self.failed, self.stop = ip, rate, 0, 0, threading.Event()

    def run(self) -> None:
        due = time.monotonic()
        while not self.stop.is_set():
            if get(self.ip):
                self.ok += 1
            else:
                self.failed += 1
            due += 1 / self.rate
            time.sleep(max(0.0, due - time.monotonic()))

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join()


def set_backends(ctx: Booted, proxy: str, backends: list[str]) -> None:
    """What the monitor does: rewrite the proxy's list over SSH and apply it live."""
    host, service, _ = PROXIES[proxy]
    svc = ctx.service(service)
    target = ctx.targets([host])[0]
    with ctx.fleet() as fleet:
        result = fleet.run([target], lambda t: fleet.sh(t, deploy.backends_script(svc, t, ",".join(backends))),
                           progress=False, timeout=15)[0]
    if not result.ok:
        raise BenchError(f"{host}: backends change failed: {result.detail}")


def kill_and_restart(ctx: Booted, ip: str, smoke: bool) -> tuple[int, int]:
    with Load(ip, 40) as load:
        time.sleep(1.0)
        os.kill(ctx.lab().running()["web03"], signal.SIGKILL)
        time.sleep(1.0 if smoke else 3.0)
        report = ctx.runs().start_worker("web03")
        if report.failed():
            raise BenchError(f"web03 did not come back: {report.failed()}")
        time.sleep(1.0 if smoke else 3.0)  # the proxy takes it back
    return load.failed, load.ok + load.failed


def changes(ctx: Booted, proxy: str, count: int) -> tuple[int, int]:
    everyone = sorted(WORKERS.values())
    with Load(PROXIES[proxy][2], 40) as load:
        for _ in range(count):
            set_backends(ctx, proxy, [b for b in everyone if b != WORKERS["web01"]])
            time.sleep(0.3)
            set_backends(ctx, proxy, everyone)
            time.sleep(0.3)
    return load.failed, load.ok + load.failed


def run(tmp: Path, args: argparse.Namespace) -> int:
    services = tmp / "services"
    services.mkdir()
    for name, folder in (("hello", lib.ROOT / "service" / "hello"), ("lb", lib.ROOT / "service" / "lb"),
                         ("pylb", lib.ROOT / "bench" / "pylb")):
        (services / name).symlink_to(folder)
    (tmp / "environments.py").write_text(ENV)
    env = lib.booted_env(tmp / "state", tmp / "environments.py", BOOTED_SERVICES=str(services))
    ctx = Booted(Settings.from_env(env), say=lambda line: None)
    rows: dict[str, dict[str, list[float]]] = {p: {} for p in PROXIES}
    try:
        seconds, _ = lib.timed([lib.FAB, "env_start_all"], env=env)
        say(f"lab up in {seconds:.1f}s: lb01 (HAProxy), lb02 (Python lb), web01-03 (hello)")
        for n in range(args.runs):
            for proxy, (_, _, ip) in PROXIES.items():
                rps, p50, p99, failed = throughput(ip, args.clients, args.seconds)
                killed = kill_and_restart(ctx, ip, args.smoke)
                changed = changes(ctx, proxy, args.changes)
                say(f"run {n + 1} {proxy}: {rps:.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, {failed} failed; "
                    f"kill: {killed[0]} of {killed[1]} failed; changes: {changed[0]} of {changed[1]} failed")
                for key, value in (("rps", rps), ("p50", p50), ("p99", p99), ("failed", failed),
                                   ("kill", killed[0]), ("kill_sent", killed[1]), ("change", changed[0]),
                                   ("change_sent", changed[1])):
                    rows[proxy].setdefault(key, []).append(value)
    finally:
        lib.timed([lib.FAB, "env_stop"], env=env, check=False)
        ctx.close()
    med = {p: {k: lib.median(v) for k, v in r.items()} for p, r in rows.items()}
    tot = {p: {k: int(sum(v)) for k, v in r.items()} for p, r in rows.items()}
    print(lib.machine())
    print(f"{args.runs} run(s); throughput: {args.clients} clients for {args.seconds:g}s, keep-alive where the "
          f"proxy allows it; kill and change phases under 40 req/s; medians over runs, failures summed")
    print(lib.table(["proxy", "req/s", "p50 ms", "p99 ms", "failed (throughput)", "failed (worker killed)",
                     f"failed ({args.changes} list changes x2)"], [
        (p, f"{med[p]['rps']:.0f}", f"{med[p]['p50']:.1f}", f"{med[p]['p99']:.1f}", tot[p]["failed"],
         f"{tot[p]['kill']} of {tot[p]['kill_sent']}", f"{tot[p]['change']} of {tot[p]['change_sent']}")
        for p in PROXIES]))
    print(f"haproxy_over_pylb_rps={med['haproxy']['rps'] / med['pylb']['rps']:.2f} "
          f"haproxy_p99_ms={med['haproxy']['p99']:.1f} pylb_p99_ms={med['pylb']['p99']:.1f} "
          f"failed_kill={tot['haproxy']['kill']}/{tot['pylb']['kill']} "
          f"failed_change={tot['haproxy']['change']}/{tot['pylb']['change']}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="HAProxy lb vs the Python lb, in one netns lab")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="1 run, short phases")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.clients, args.seconds, args.changes = 1, 4, 1.0, 2
    if os.geteuid() != 0:
        print("bench/lb.py needs root (netns hosts)", file=sys.stderr)
        return 2
    return run_in_tmp("lb", lambda tmp: run(tmp, args))


if __name__ == "__main__":
    sys.exit(main())
