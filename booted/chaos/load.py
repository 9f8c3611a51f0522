"""A bounded load generator: GETs at a fixed rate from a few threads, one new connection each (http.client:
never a proxy, whatever http_proxy says; lab addresses are on this machine), each with a timeout. Bounded in
count (rate x limit) and time (`limit` seconds, then no new request; one in flight ends by its timeout).
Every request's start, latency and outcome are kept."""

from __future__ import annotations

import http.client
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_THREADS = 32


@dataclass(frozen=True)
class Sample:
    at: float  # wall clock when it was sent
    ms: float  # until the whole answer was read, or the error
    ok: bool
    error: str = ""


def http_get(host: str, port: int, path: str, timeout: float) -> str:
    """One GET on a new connection; "" when it answered 2xx/3xx, else what went wrong."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return "" if 200 <= resp.status < 400 else f"HTTP {resp.status}"
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"[:120]
    finally:
        conn.close()


class Load:
    """`rate` requests/s for at most `limit` seconds; `send()` returns "" or an error (tests pass a fake)."""

    def __init__(self, send: Callable[[], str], rate: float, limit: float, timeout: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.send, self.rate, self.limit, self.clock = send, rate, limit, clock
        self.total = max(1, math.ceil(rate * limit))  # the most requests this run may send
        # enough threads that the rate holds while each request may take up to its timeout, within a bound
        self.threads = [threading.Thread(target=self._run, daemon=True, name=f"chaos-load-{i}")
                        for i in range(min(MAX_THREADS, max(2, math.ceil(rate * min(timeout, 1.0)))))]
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.samples: list[Sample] = []
        self.issued = 0
        self.start_mono = 0.0

    def start(self) -> Load:
        self.start_mono = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def stop(self, wait: float = 10.0) -> list[Sample]:
        """No new request; wait (bounded) for those in flight; every sample so far, in send order."""
        self.stopped.set()
        deadline = time.monotonic() + wait
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            return sorted(self.samples, key=lambda s: s.at)

    def _ticket(self) -> float | None:
        """The monotonic time the next request is due at, or None when the run's bound is reached."""
        with self.lock:
            if self.issued >= self.total:
                return None
            due = self.start_mono + self.issued / self.rate
            self.issued += 1
        return due if due - self.start_mono < self.limit else None

    def _run(self) -> None:
        while not self.stopped.is_set():
            due = self._ticket()
            if due is None:
                return
            if self.stopped.wait(max(0.0, due - time.monotonic())):
                return
            at, began = self.clock(), time.monotonic()
            error = self.send()
            sample = Sample(at, (time.monotonic() - began) * 1000, not error, error)
            with self.lock:
                self.samples.append(sample)
