"""Plain-text tables a person can read, and the per-host summary every task prints."""

from __future__ import annotations

import time
from collections.abc import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def host_results(title: str, rows: Sequence[tuple[str, bool, str, float | None]]) -> str:
    """A per-host result table with a closing count line."""
    body = table(["host", "result", "seconds", "detail"],
                 [(h, "ok" if ok else "FAILED", f"{s:.2f}" if s is not None else "-", d) for h, ok, d, s in rows])
    failed = sum(1 for _, ok, _, _ in rows if not ok)
    return f"{title}\n{body}\n{len(rows) - failed} ok, {failed} failed"
