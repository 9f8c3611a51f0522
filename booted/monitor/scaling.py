"""The scaling rule (Kubernetes' horizontal pod autoscaler): desired = ceil(current x load / target), no
change within a tolerance, scale-up at once, scale-down only to the highest recommendation of the last
`window` seconds (so a short dip never shrinks a role, and nothing flaps)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


def desired(current: int, load: float, target: float, tolerance: float) -> int:
    """Hosts needed for `load` requests/s at `target` per host, given `current` serving hosts."""
    if current <= 0:
        return math.ceil(load / target) if load > 0 else 0
    ratio = (load / current) / target
    if abs(ratio - 1.0) <= tolerance:
        return current
    return math.ceil(current * ratio)


@dataclass
class Scaler:
    """One role's recommendations over time (kept by the daemon, one per role)."""

    low: int
    high: int
    target: float
    tolerance: float = 0.1
    window: float = 300.0
    history: deque[tuple[float, int]] = field(default_factory=deque)
    since: float | None = None  # its first recommendation: no scale-down before one window has passed

    def recommend(self, now: float, current: int, load: float) -> int:
        """How many hosts the role should have now."""
        rec = min(self.high, max(self.low, desired(current, load, self.target, self.tolerance)))
        if self.since is None:
            self.since = now
        self.history.append((now, rec))
        while self.history and self.history[0][0] < now - self.window:
            self.history.popleft()
        if rec >= current:
            return rec  # up at once (or stay)
        if now - self.since < self.window:
            return current  # a monitor that just started has not seen a window of load yet: no shrinking
        return min(current, max(r for _, r in self.history))  # down only as far as the window allows
