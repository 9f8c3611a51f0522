"""What an impairment is: delay, jitter, loss and rate of one link, as the user writes them ("100ms",
"10ms", "1%", "10mbit"), parsed and checked here once (environments.py's `impair` key and net_impair's
flags share it). Pure: no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

KEYS = ("delay", "jitter", "loss", "rate")
DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)\Z")
PERCENT_RE = re.compile(r"^(\d+(?:\.\d+)?)%\Z")
RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)\Z")
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "bit": 1, "kbit": 1000, "mbit": 1000**2, "gbit": 1000**3}
MAX_DELAY_MS = 60_000.0
MIN_RATE, MAX_RATE = 8_000, 100 * 1000**3  # 1 kB/s .. 100 Gbit/s


@dataclass(frozen=True)
class Impairment:
    """One link's impairment, towards the host: delay and jitter in ms, loss in percent, rate in bit/s
    (0: not impaired that way)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_bits: int = 0

    def __bool__(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms or self.loss_pct or self.rate_bits)

    def as_dict(self) -> dict[str, str]:
        """The user's spelling back ("100ms", "1%", "10mbit"), only the keys that are set."""
        out = {"delay": ms_text(self.delay_ms), "jitter": ms_text(self.jitter_ms),
               "loss": f"{self.loss_pct:g}%", "rate": rate_text(self.rate_bits)}
        return {k: v for k, v, on in zip(out, out.values(), (self.delay_ms, self.jitter_ms, self.loss_pct,
                                                           self.rate_bits)) if on}


def ms_text(ms: float) -> str:
    return f"{ms:g}ms"


def rate_text(bits: int) -> str:
    for unit in ("gbit", "mbit", "kbit"):
        if bits >= UNITS[unit] and bits % UNITS[unit] == 0:
            return f"{bits // UNITS[unit]}{unit}"
    return f"{bits}bit"


def parse_duration(text: str) -> float:
    """'100ms' / '1.5s' / '500us' -> milliseconds."""
    match = DURATION_RE.match(text.strip().lower()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a duration: write it like 100ms, 1.5s or 500us")
    ms = float(match.group(1)) * UNITS[match.group(2)]
    if ms > MAX_DELAY_MS:
        raise ValueError(f"{text!r}: at most {MAX_DELAY_MS / 1000:g}s")
    return ms


def parse_percent(text: str) -> float:
    """'1%' / '0.5%' -> percent, 0..100, at most two decimals (nftables draws from 0..9999)."""
    match = PERCENT_RE.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a percentage: write it like 1% or 0.5%")
    pct = float(match.group(1))
    if pct > 100 or round(pct * 100) != pct * 100:
        raise ValueError(f"{text!r}: a percentage from 0% to 100%, at most two decimals")
    return pct


def parse_rate(text: str) -> int:
    """'10mbit' / '512kbit' / '1gbit' -> bit/s (tc's units: k, m, g are powers of 1000)."""
    match = RATE_RE.match(text.strip().lower()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a rate: write it like 10mbit, 512kbit or 1gbit")
    bits = int(float(match.group(1)) * UNITS[match.group(2)])
    if not MIN_RATE <= bits <= MAX_RATE:
        raise ValueError(f"{text!r}: a rate from 8kbit to 100gbit")
    return bits


def impairment(raw: Any) -> Impairment:
    """environments.py's `impair` dict (or net_impair's flags as one) -> Impairment; ValueError saying what
    is wrong and what is allowed."""
    if not isinstance(raw, dict):
        raise ValueError(f"must be a dict with keys {', '.join(KEYS)}, e.g. "
                         "{'delay': '100ms', 'loss': '1%', 'rate': '10mbit'}")
    unknown = sorted(map(str, set(raw) - set(KEYS)))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} (allowed: {', '.join(KEYS)})")
    for key, value in raw.items():
        if not isinstance(value, str):
            raise ValueError(f"{key}: {value!r} must be a string like "
                             f"{ {'delay': '100ms', 'jitter': '10ms', 'loss': '1%', 'rate': '10mbit'}[key]!r}")
    try:
        spec = Impairment(parse_duration(raw["delay"]) if "delay" in raw else 0.0,
                          parse_duration(raw["jitter"]) if "jitter" in raw else 0.0,
                          parse_percent(raw["loss"]) if "loss" in raw else 0.0,
                          parse_rate(raw["rate"]) if "rate" in raw else 0)
    except ValueError as exc:
        key = next(k for k in KEYS if k in raw and repr(raw[k]) in str(exc))
        raise ValueError(f"{key}: {exc}") from None
    if spec.jitter_ms > spec.delay_ms:
        raise ValueError(f"jitter {raw['jitter']} is larger than delay {raw.get('delay', '0ms')}: "
                         "a jitter needs a delay at least as large")
    return spec
