"""One step on every host at once, for the providers' snapshot hooks (pause, resume, save, drop)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def each(names: list[str], one: Callable[[str], str], most: int = 16) -> dict[str, str]:
    """one(name) -> error or "" for every host at once (at most `most` at a time); host -> error."""
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(most, len(names))) as pool:
        said = dict(zip(names, pool.map(one, names)))
    return {n: e for n, e in said.items() if e}
