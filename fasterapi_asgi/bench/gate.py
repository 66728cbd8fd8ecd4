"""The CI regression gate: compare this run with a baseline JSON written by an earlier run."""

from __future__ import annotations

from dataclasses import dataclass

from .report import BenchResult


def parse_fraction(text: str) -> float:
    """``'5%'`` -> 0.05, ``'0.05'`` -> 0.05, ``'5'`` -> 0.05 (a bare number above 1 is a percentage)."""
    t = text.strip()
    try:
        if t.endswith("%"):
            value = float(t[:-1]) / 100.0
        else:
            value = float(t)
            if value >= 1.0:
                value /= 100.0
    except ValueError:
        raise ValueError(f"not a percentage: {text!r} (use e.g. 5% or 0.05)") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"regression threshold out of range: {text!r}")
    return value


@dataclass
class GateOutcome:
    passed: bool
    message: str
    baseline: float | None = None
    current: float | None = None
    change: float | None = None  # (current - baseline) / baseline


def check_regression(
    current: BenchResult,
    baseline: BenchResult,
    *,
    max_regression: float,
    server: str,
    metric: str = "rps",
) -> GateOutcome:
    """Fail when ``server``'s median rps (``metric='rps'``) or its ratio to the reference
    (``metric='ratio'``) is lower than the baseline's by more than ``max_regression``."""
    if metric not in ("rps", "ratio"):
        raise ValueError(f"unknown gate metric {metric!r}")
    cur = {s.server: s for s in current.summaries()}
    base = {s.server: s for s in baseline.summaries()}
    if server not in cur:
        return GateOutcome(False, f"regression gate: {server} was not measured in this run")
    if server not in base:
        return GateOutcome(
            False,
            f"regression gate: the baseline has no result for {server} (it has: {', '.join(base) or 'none'})",
        )
    now = getattr(cur[server], metric)
    then = getattr(base[server], metric)
    label = "req/s" if metric == "rps" else f"ratio to {current.reference}"
    if metric == "ratio" and current.reference != baseline.reference:
        return GateOutcome(
            False,
            f"regression gate: ratios are to {current.reference} now "
            f"but to {baseline.reference} in the baseline",
        )
    if not then or now is None:
        return GateOutcome(
            False, f"regression gate: no usable {label} for {server} in the baseline or this run"
        )
    change = (now - then) / then
    desc = f"{server} {label}: {now:,.2f} now vs {then:,.2f} in the baseline ({change:+.1%})"
    if -change > max_regression:
        return GateOutcome(
            False, f"REGRESSION: {desc}, more than the allowed {max_regression:.1%} slower", then, now, change
        )
    return GateOutcome(
        True, f"regression gate passed: {desc}, allowed {max_regression:.1%}", then, now, change
    )
