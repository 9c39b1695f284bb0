"""Comparison statistics over repeats: medians, spread, and whether a change
stands above the noise (bootstrap confidence interval of the median change).

Pure and deterministic (seeded resampling), so reports are reproducible.
"""
from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

MIN_REPEATS = 3
BOOTSTRAP_ROUNDS = 2000


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    minimum: float
    maximum: float


def summarize(values: list[float]) -> Summary:
    return Summary(len(values), statistics.median(values), min(values), max(values))


@dataclass(frozen=True)
class Comparison:
    metric: str
    a: Summary
    b: Summary
    change_pct: float | None  # (median b - median a) / median a
    ci_pct: tuple[float, float] | None  # 95% bootstrap CI of change_pct
    verdict: str  # "up", "down", "within noise", "not enough repeats", "n/a"
    noise_pct: float | None = None  # A/A noise floor for this metric, if measured


def _pct(a: float, b: float) -> float | None:
    if a == 0:
        return None if b != 0 else 0.0
    return (b - a) / abs(a) * 100.0


def compare(metric: str, a: list[float], b: list[float], *, noise_pct: float | None = None, seed: int = 1) -> Comparison:
    sa, sb = summarize(a), summarize(b)
    change = _pct(sa.median, sb.median)
    if change is None:
        return Comparison(metric, sa, sb, None, None, "n/a (baseline median is 0)", noise_pct)
    if min(len(a), len(b)) < MIN_REPEATS:
        # Too few repeats to tell a change from noise: report it, call nothing.
        return Comparison(metric, sa, sb, change, None, f"not enough repeats (need {MIN_REPEATS})", noise_pct)
    rng = random.Random(seed)
    deltas = []
    for _ in range(BOOTSTRAP_ROUNDS):
        ma = statistics.median(rng.choices(a, k=len(a)))
        mb = statistics.median(rng.choices(b, k=len(b)))
        d = _pct(ma, mb)
        if d is not None:
            deltas.append(d)
    if not deltas:
        return Comparison(metric, sa, sb, change, None, "n/a", noise_pct)
    deltas.sort()
    lo = deltas[int(0.025 * (len(deltas) - 1))]
    hi = deltas[int(0.975 * (len(deltas) - 1))]
    floor = noise_pct or 0.0
    if lo > floor:
        verdict = "up"
    elif hi < -floor:
        verdict = "down"
    else:
        verdict = "within noise"
    return Comparison(metric, sa, sb, change, (lo, hi), verdict, noise_pct)


def aa_noise_pct(values: list[float]) -> float | None:
    """Noise floor from A/A: the same variant's repeats split in two halves;
    the % difference between the halves' medians.  None with < 2 repeats."""
    if len(values) < 2:
        return None
    first, second = values[: len(values) // 2], values[len(values) // 2 :]
    d = _pct(statistics.median(first), statistics.median(second))
    return None if d is None else abs(d)
