"""The warm pool's refill, in the background: a thread of the daemon boots, deploys, tests and pauses one pool
host (warmpool.fill) while passes go on, so a heal or a scale-up is never kept waiting behind a boot.

The thread works in a run context of its own (its own lab handle, database connection and lock files), so
it holds the lab's lifecycle lock as any run does: a user's start or stop waits for it, and it for them. The
daemon's own work on the lab meanwhile is ordered by `mutex`: the pass takes a warm host (warmpool.take)
under the refill's hold of the lab lock (they touch other hosts), and the refill lets go of the lab lock
only once such a take is done. Lab-locked work of a pass (a cold heal, a start, a stop) waits for a pass after
the refill (reconcile.Observed.filling: the host being filled counts as warm, never as spare or serving)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from booted.lab.handle import LabHandle

if TYPE_CHECKING:
    from booted.context import Booted

Fill = Callable[["Booted", str], tuple[bool, str]]  # (the refill's own context, host) -> (ok, detail)


class Refill:
    """At most one refill at a time; no state outside this object (one per daemon)."""

    def __init__(self, spawn: Callable[[], Booted]) -> None:
        self.spawn = spawn  # a run context of the refill's own, made anew for each refill
        self.mutex = threading.Lock()
        self.holding = False  # the refill thread holds the lab lock (for this daemon)
        self.host = ""
        self._thread: threading.Thread | None = None

    def filling(self) -> str | None:
        """The host being filled now (None: no refill runs)."""
        return self.host if self._thread is not None and self._thread.is_alive() else None

    def start(self, env: str, host: str, fill: Fill, done: Callable[[bool, str], None]) -> None:
        """Fill `host` in a thread; `done(ok, detail)` is called in it at the end (recording the action)."""
        if self.filling() is not None:
            raise RuntimeError(f"a refill of {self.host} runs already")
        self.host = host
        self._thread = threading.Thread(target=self._run, args=(env, host, fill, done), name=f"refill-{host}")
        self._thread.start()

    def _run(self, env: str, host: str, fill: Fill, done: Callable[[bool, str], None]) -> None:
        ok, detail = False, "the refill did not run"
        try:
            ctx = self.spawn()
            try:
                with self.hold(ctx.lab(env), "refilling the warm pool of"):
                    ok, detail = fill(ctx, host)
            finally:
                ctx.close()
        except Exception as exc:  # a failed refill is recorded; the pool refills in a later pass
            ok, detail = False, str(exc) or type(exc).__name__
        finally:
            done(ok, detail)

    @contextlib.contextmanager
    def hold(self, lab: LabHandle, what: str) -> Iterator[None]:
        """The refill's hold of the lab lock: taken and given back under `mutex` (not while a take runs)."""
        with contextlib.ExitStack() as stack:
            with self.mutex:
                stack.enter_context(lab.locked(what))
                self.holding = True
            try:
                yield
            finally:
                with self.mutex:
                    self.holding = False
                    stack.close()

    @contextlib.contextmanager
    def lab_lock(self, lab: LabHandle, what: str) -> Iterator[None]:
        """The daemon's hold of the lab lock for a take: the refill's if it holds it now, else its own."""
        with self.mutex:
            if self.holding:
                yield
            else:
                with lab.locked(what):
                    yield

    def join(self, timeout: float | None = None) -> None:
        """Wait for a running refill (the daemon stops after its current actions)."""
        if self._thread is not None:
            self._thread.join(timeout)
