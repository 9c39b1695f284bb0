"""Comparison statistics over repeats: medians, spread, and whether a change
stands above the noise.

A change of the median from A to B is called ("up"/"down") only when all of
these hold:
- each side has at least MIN_REPEATS values;
- the two-sided Mann-Whitney U test (scipy.stats.mannwhitneyu, exact for
  small samples without ties) rejects "same distribution" at ALPHA;
- the 95% percentile-bootstrap interval of the change (scipy.stats.bootstrap,
  A and B resampled independently) lies wholly beyond the A/A noise floor,
  i.e. excludes zero by more than the floor on the same side.
Otherwise it is "within noise".  Resampling is seeded, so a report re-rendered
from the same values says the same thing.
"""
from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

MIN_REPEATS = 5  # Mann-Whitney U cannot reach p < 0.05 with 3 v 3, and a 3-point bootstrap is coarse
ALPHA = 0.05
BOOTSTRAP_ROUNDS = 5000
METHOD = (f"median change; 95% percentile bootstrap CI ({BOOTSTRAP_ROUNDS} resamples); "
          f"two-sided Mann-Whitney U, alpha {ALPHA}; n >= {MIN_REPEATS} per side")


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    minimum: float
    maximum: float


def median(values: list[float]) -> float:
    """The one median used everywhere (tables, plots, headline)."""
    return statistics.median(values)


def summarize(values: list[float]) -> Summary:
    return Summary(len(values), median(values), min(values), max(values))


@dataclass(frozen=True)
class Comparison:
    metric: str
    a: Summary
    b: Summary
    change_pct: float | None  # (median b - median a) / |median a|
    ci_pct: tuple[float, float] | None  # 95% bootstrap CI of change_pct
    verdict: str  # "up", "down", "within noise", "not enough repeats ...", "n/a ..."
    noise_pct: float | None = None  # A/A noise floor for this metric, if measured
    p_value: float | None = None  # two-sided Mann-Whitney U
    u_statistic: float | None = None
    method: str = METHOD

    @property
    def called(self) -> bool:
        return self.verdict in ("up", "down")


def _pct(a: float, b: float) -> float | None:
    if a == 0:
        return None if b != 0 else 0.0
    return (b - a) / abs(a) * 100.0


def _median_change(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    ma = np.median(x, axis=axis)
    mb = np.median(y, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (mb - ma) / np.abs(ma) * 100.0


def bootstrap_ci(a: list[float], b: list[float], seed: int = 1) -> tuple[float, float] | None:
    """95% percentile-bootstrap CI of the % change of the median; None when undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate (all-equal) samples warn; their CI is a point
        res = sps.bootstrap((np.asarray(a, float), np.asarray(b, float)), _median_change, paired=False,
                            vectorized=True, n_resamples=BOOTSTRAP_ROUNDS, method="percentile",
                            rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return lo, hi


def median_ci(values: list[float], seed: int = 1) -> tuple[float, float] | None:
    """95% percentile-bootstrap CI of one sample's median; None below 2 values."""
    if len(values) < 2:
        return None
    if len(set(values)) == 1:
        return values[0], values[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.bootstrap((np.asarray(values, float),), np.median, vectorized=True, n_resamples=BOOTSTRAP_ROUNDS,
                            method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mann_whitney(a: list[float], b: list[float]) -> tuple[float, float]:
    """(U, two-sided p); p = 1 when both samples are the same constant."""
    if len(set(a) | set(b)) == 1:
        return float(len(a) * len(b) / 2), 1.0
    res = sps.mannwhitneyu(a, b, alternative="two-sided", method="auto")
    return float(res.statistic), float(res.pvalue)


def compare(metric: str, a: list[float], b: list[float], *, noise_pct: float | None = None, seed: int = 1) -> Comparison:
    sa, sb = summarize(a), summarize(b)
    change = _pct(sa.median, sb.median)
    if change is None:
        return Comparison(metric, sa, sb, None, None, "n/a (A's median is 0)", noise_pct)
    if min(len(a), len(b)) < MIN_REPEATS:
        # Too few repeats to tell a change from noise: report it, call nothing.
        return Comparison(metric, sa, sb, change, None, f"not enough repeats (need {MIN_REPEATS})", noise_pct)
    u, p = mann_whitney(a, b)
    ci = bootstrap_ci(a, b, seed)
    if ci is None:
        return Comparison(metric, sa, sb, change, None, "n/a (undefined interval)", noise_pct, p, u)
    lo, hi = ci
    floor = noise_pct or 0.0
    if p < ALPHA and lo > floor:
        verdict = "up"
    elif p < ALPHA and hi < -floor:
        verdict = "down"
    else:
        verdict = "within noise"
    return Comparison(metric, sa, sb, change, ci, verdict, noise_pct, p, u)


def aa_noise_pct(values: list[float]) -> float | None:
    """Noise floor from A/A: the same variant's repeats split in two halves;
    the % difference between the halves' medians.  None with < 2 repeats."""
    if len(values) < 2:
        return None
    first, second = values[: len(values) // 2], values[len(values) // 2 :]
    d = _pct(median(first), median(second))
    return None if d is None else abs(d)
