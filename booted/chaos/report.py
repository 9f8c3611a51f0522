"""A chaos run's report: requests sent and failed per phase (before, during and after each failure), p50/p99
latency, each failure with its heal time, the hosts' timeline, and the SLO's verdict. Pure: built from the
samples and the failures the run recorded."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from booted.chaos.load import Sample
from booted.chaos.spec import Slo
from booted.report import table, when


@dataclass
class Failure:
    """One injected failure: what, on which host (of which role), when, and when the role was whole again."""

    what: str  # "kill -9 host", "kill -9 service", "impair delay=100ms"
    host: str
    role: str
    at: float
    healed_at: float | None = None
    detail: str = ""

    @property
    def label(self) -> str:
        return f"{self.what} {self.host}"

    @property
    def heal_s(self) -> float | None:
        return None if self.healed_at is None else max(0.0, self.healed_at - self.at)


@dataclass
class Phase:
    name: str
    start: float
    end: float
    samples: list[Sample] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for s in self.samples if not s.ok)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile (q in 0..100) of `values`; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def phases(samples: Sequence[Sample], failures: Sequence[Failure], start: float, end: float) -> list[Phase]:
    """The run cut at every failure and every heal: "before" the first failure, "during X" while failure X
    is not healed (several at once: all named), "after X" once the last one healed; each with its samples."""
    cuts = sorted({start, end, *(t for f in failures for t in (f.at, f.healed_at) if t is not None
                                 and start < t < end)})
    out: list[Phase] = []
    for a, b in itertools.pairwise(cuts):
        active = [f for f in failures if f.at <= a and (f.healed_at is None or f.healed_at > a)]
        healed = [f for f in failures if f.healed_at is not None and f.healed_at <= a]
        if active:
            name = "during " + ", ".join(f.label for f in active)
        elif healed:
            name = "after " + max(healed, key=lambda f: f.healed_at or 0.0).label
        else:
            name = "before"
        if out and out[-1].name == name:
            out[-1].end = b
        else:
            out.append(Phase(name, a, b))
    for s in samples:
        home = next((p for p in out if p.start <= s.at < p.end), out[-1] if out and s.at >= out[-1].end else None)
        if home is not None:
            home.samples.append(s)
    return [p for p in out if p.samples or p.end - p.start >= 0.5]  # not a blink between two steps


@dataclass
class Report:
    env: str
    lb: str  # the lb's address:port the load went to
    start: float
    end: float
    rate: float
    samples: list[Sample]
    failures: list[Failure]
    timeline: list[tuple[float, str, str]]  # (when, host, what happened)
    slo: Slo
    interrupted: bool = False

    def latency(self) -> tuple[float | None, float | None]:
        ms = [s.ms for s in self.samples if s.ok]
        return percentile(ms, 50), percentile(ms, 99)

    def broken(self) -> list[str]:
        """The SLOs not met, each as a sentence (empty: met, or none given)."""
        out = []
        failed = sum(1 for s in self.samples if not s.ok)
        if self.slo.max_failed is not None and failed > self.slo.max_failed:
            out.append(f"--max-failed {self.slo.max_failed}: {failed} requests failed")
        p99 = self.latency()[1]
        if self.slo.max_p99_ms is not None and (p99 is None or p99 > self.slo.max_p99_ms):
            out.append(f"--max-p99 {self.slo.max_p99_ms:g} ms: p99 was "
                       + ("not measured (no request answered)" if p99 is None else f"{p99:.1f} ms"))
        return out

    def as_json(self) -> dict[str, Any]:
        p50, p99 = self.latency()
        return {"env": self.env, "lb": self.lb, "started": self.start, "ended": self.end, "rate": self.rate,
                "interrupted": self.interrupted, "sent": len(self.samples),
                "failed": sum(1 for s in self.samples if not s.ok), "p50_ms": rnd(p50), "p99_ms": rnd(p99),
                "phases": [{"name": p.name, "start": p.start, "end": p.end, "sent": len(p.samples),
                            "failed": p.failed, "p50_ms": rnd(percentile([s.ms for s in p.samples if s.ok], 50)),
                            "p99_ms": rnd(percentile([s.ms for s in p.samples if s.ok], 99))}
                           for p in phases(self.samples, self.failures, self.start, self.end)],
                "failures": [{"what": f.what, "host": f.host, "role": f.role, "at": f.at, "healed_at": f.healed_at,
                              "heal_s": rnd(f.heal_s), "detail": f.detail} for f in self.failures],
                "timeline": [{"at": t, "host": h, "event": e} for t, h, e in sorted(self.timeline)],
                "errors": errors(self.samples),
                "slo": {"max_failed": self.slo.max_failed, "max_p99_ms": self.slo.max_p99_ms,
                        "broken": self.broken(), "met": not self.broken()}}

    def text(self) -> str:
        p50, p99 = self.latency()
        failed = sum(1 for s in self.samples if not s.ok)
        lines = [f"chaos run on {self.env}: {self.end - self.start:.0f} s, {self.rate:g} req/s to {self.lb}"
                 + (" (interrupted)" if self.interrupted else ""),
                 f"requests: {len(self.samples)} sent, {failed} failed; latency p50 {ms(p50)}, p99 {ms(p99)}", ""]
        lines.append(table(["phase", "from s", "to s", "sent", "failed", "p50 ms", "p99 ms"],
                           [(p.name, f"{p.start - self.start:.1f}", f"{p.end - self.start:.1f}", len(p.samples),
                             p.failed, rnd(percentile([s.ms for s in p.samples if s.ok], 50)),
                             rnd(percentile([s.ms for s in p.samples if s.ok], 99)))
                            for p in phases(self.samples, self.failures, self.start, self.end)]))
        if self.failures:
            lines += ["", table(["failure", "host", "role", "at s", "healed after s", "detail"],
                                [(f.what, f.host, f.role, f"{f.at - self.start:.1f}",
                                  "not healed" if f.heal_s is None else f"{f.heal_s:.1f}", f.detail[:60])
                                 for f in self.failures])]
        if self.timeline:
            lines += ["", table(["time", "at s", "host", "event"],
                                [(when(t), f"{t - self.start:.1f}", h, e) for t, h, e in sorted(self.timeline)])]
        for error, n in errors(self.samples).items():
            lines.append(f"failed requests: {n} x {error}")
        broken = self.broken()
        lines += ["", "SLO NOT MET: " + "; ".join(broken) if broken else
                  "SLO met" if self.slo.max_failed is not None or self.slo.max_p99_ms is not None else "no SLO given"]
        return "\n".join(lines)


def errors(samples: Sequence[Sample]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            out[s.error] = out.get(s.error, 0) + 1
    return out


def rnd(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"
