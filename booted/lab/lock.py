"""The lab's lifecycle lock: one lifecycle operation per lab at a time, across runs and the monitor,
re-entrant within one handle (start_worker -> stop + start_hosts -> start)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar, cast

from booted.state.locks import Locks


class LabLock:
    def __init__(self, locks: Locks, env: str) -> None:
        self.locks, self.env = locks, env
        self._depth = 0

    @contextmanager
    def held(self, what: str) -> Iterator[None]:
        """Hold it ("another booted run (pid N) is starting lab 'x'" while another has it)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self.locks.lab(self.env, what):
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0


class HasLock(Protocol):
    def locked(self, what: str) -> Any: ...


F = TypeVar("F", bound=Callable[..., Any])


def under_lab_lock(what: str) -> Callable[[F], F]:
    """A method run under its object's lab lock."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(self: HasLock, *args: Any, **kwargs: Any) -> Any:
            with self.locked(what):
                return fn(self, *args, **kwargs)
        return cast(F, inner)
    return wrap
