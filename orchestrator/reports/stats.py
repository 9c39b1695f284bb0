"""Comparison statistics over repeats: what changed, what was ruled out, and
what this run could not have seen.

One comparison (side A against side B of one metric) gets:
- the % change of the median (what the tables show);
- a two-sided exact permutation test of the Wilcoxon rank sum with midranks,
  so tied values (integer counts) keep an exact p-value: every split of the
  pooled values is enumerated up to EXACT_LIMIT splits, beyond that a seeded
  Monte Carlo with (hits + 1) / (draws + 1), never below its own minimum;
- the 95% distribution-free interval of the change (Hodges-Lehmann shift with
  the Moses interval from the rank-sum's exact null), on log values when all
  are positive (a ratio, shown as %), else on values relative to A's median;
- the measured noise: the pooled within-side standard deviation (log scale,
  each side about its own mean, so the effect itself never enters it);
- the minimum detectable effect: the change this run would call with 80%
  power at that noise and the family's per-comparison level (alpha / m, the
  level Holm's first step uses), by the t approximation scaled by the rank
  test's efficiency 3/pi; infinite when even a complete separation of the
  sides could not reach that level with these repeats.

Comparisons are judged as a family (one report section, or a run's
headline): Holm's step-down correction keeps the chance of any false call in
the family at ALPHA.  A verdict is then one of
- "up" / "down": Holm-adjusted p < ALPHA;
- "no change larger than X%": the whole interval lies inside +-X, X the
  metric's declared minimum effect of interest (`min_effect_pct`);
- "inconclusive: this run can detect only >= Y%": neither.
Every random draw is seeded: a report re-rendered from the same values says
the same thing.
"""
from __future__ import annotations

import functools
import itertools
import math
import statistics
import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as sps

MIN_REPEATS = 5  # below this the noise estimate is a guess: nothing is judged
ALPHA = 0.05
POWER = 0.80
CONFIDENCE = 0.95
EXACT_LIMIT = 200_000  # enumerate every split up to this many (10 v 10 is 184756)
MC_DRAWS = 19_999
RANK_EFFICIENCY = 3 / math.pi  # Wilcoxon vs t at normal data (Pitman efficiency)
METHOD = ("two-sided exact permutation test of the rank sum (midranks; exact with ties), Holm-corrected over the "
          "family; 95% Hodges-Lehmann/Moses interval of the change (log scale); detectable change at 80% power "
          "from the pooled within-side spread at level alpha/m (t approximation, rank-test efficiency 3/pi); "
          f"alpha {ALPHA}; n >= {MIN_REPEATS} per side")
NOT_ENOUGH = "not enough repeats"
INCONCLUSIVE = "inconclusive"
RULED_OUT = "no change larger than"


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
    ci_pct: tuple[float, float] | None  # 95% Moses interval of the change
    verdict: str  # "up", "down", "no change larger than X%", "inconclusive: ...", "not enough repeats ...", "n/a ..."
    noise_pct: float | None = None  # pooled within-side spread (one standard deviation, %)
    p_value: float | None = None  # exact two-sided permutation p (uncorrected)
    p_adjusted: float | None = None  # Holm-adjusted over the family
    detectable_pct: float | None = None  # smallest change called with 80% power here (inf: none can be)
    min_effect_pct: float | None = None  # declared minimum effect of interest
    family: str = ""  # what the correction ran over
    family_size: int = 0
    method: str = METHOD

    @property
    def called(self) -> bool:
        return self.verdict in ("up", "down")

    @property
    def ruled_out(self) -> bool:
        return self.verdict.startswith(RULED_OUT)


def _pct(a: float, b: float) -> float | None:
    if a == 0:
        return None if b != 0 else 0.0
    return (b - a) / abs(a) * 100.0


# ---- the exact rank-sum test ----------------------------------------------------

@functools.lru_cache(maxsize=32)
def _splits(n: int, k: int) -> np.ndarray:
    """(C(n, k), n) 0/1 matrix: row c marks which pooled values side A gets in split c."""
    combos = np.array(list(itertools.combinations(range(n), k)), dtype=np.intp)
    m = np.zeros((len(combos), n))
    m[np.arange(len(combos))[:, None], combos] = 1.0
    return m


@functools.lru_cache(maxsize=32)
def _random_splits(n: int, k: int, seed: int) -> np.ndarray:
    """(MC_DRAWS, n) 0/1 matrix of seeded random splits, for sizes too large to enumerate."""
    picks = np.random.default_rng(seed).random((MC_DRAWS, n)).argsort(-1)[:, :k]
    m = np.zeros((MC_DRAWS, n))
    m[np.arange(MC_DRAWS)[:, None], picks] = 1.0
    return m


def rank_sum_p(a: np.ndarray, b: np.ndarray, seed: int = 1) -> np.ndarray:
    """Two-sided permutation p of A's rank sum, vectorised over leading axes.

    a: (..., n1), b: (..., n2).  Midranks make ties exact: the null
    distribution is that of the tied ranks themselves.  Two-sided as
    scipy.stats.permutation_test does it: twice the smaller one-sided p, at most 1.
    Beyond EXACT_LIMIT splits, MC_DRAWS seeded random splits with (hits + 1) / (draws + 1).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    n1, n2 = a.shape[-1], b.shape[-1]
    x = np.concatenate([a, b], axis=-1)
    lead = x.shape[:-1]
    ranks = sps.rankdata(x.reshape(-1, n1 + n2), axis=-1)
    observed = ranks[:, :n1].sum(-1)
    exact = math.comb(n1 + n2, n1) <= EXACT_LIMIT
    m = _splits(n1 + n2, n1) if exact else _random_splits(n1 + n2, n1, seed)
    eps = 1e-9  # rank sums are multiples of 0.5: compare with a margin, not exactly
    out = np.empty(len(ranks))
    step = max(1, 4_000_000 // len(m))  # rows per chunk: bounded memory
    for s in range(0, len(ranks), step):
        null = ranks[s:s + step] @ m.T
        obs = observed[s:s + step, None]
        greater, less = (null >= obs - eps).sum(-1), (null <= obs + eps).sum(-1)
        if exact:
            out[s:s + step] = np.minimum(1.0, 2 * np.minimum(greater, less) / len(m))
        else:
            out[s:s + step] = np.minimum(1.0, 2 * (np.minimum(greater, less) + 1) / (len(m) + 1))
    return out.reshape(lead)


def min_p(n1: int, n2: int) -> float:
    """The smallest two-sided p the test can give with these sizes (complete separation, no ties)."""
    c = math.comb(n1 + n2, n1)
    return 2 / c if c <= EXACT_LIMIT else 2 / (MC_DRAWS + 1)


@functools.lru_cache(maxsize=64)
def _u_cdf(n1: int, n2: int) -> np.ndarray | None:
    """P(U <= u) for u = 0 .. n1 n2 under the rank sum's exact null (no ties); None
    when the sizes are too large to enumerate."""
    if math.comb(n1 + n2, n1) > EXACT_LIMIT:
        return None
    u = (_splits(n1 + n2, n1) @ np.arange(1, n1 + n2 + 1)) - n1 * (n1 + 1) / 2
    counts = np.bincount(u.astype(int), minlength=n1 * n2 + 1)
    return np.cumsum(counts) / counts.sum()


def _u_cdf_normal(n1: int, n2: int, u: float) -> float:
    mean, sd = n1 * n2 / 2, math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    return float(sps.norm.cdf((u + 0.5 - mean) / sd))


@functools.lru_cache(maxsize=64)
def _moses_rank(n1: int, n2: int, confidence: float = CONFIDENCE) -> int:
    """k such that [d_(k), d_(n1 n2 + 1 - k)] of the sorted pairwise differences
    covers the shift with at least `confidence` (0: no such interval)."""
    tail = (1 - confidence) / 2
    cdf = _u_cdf(n1, n2)
    if cdf is not None:
        ok = np.nonzero(cdf <= tail)[0]
        return int(ok[-1]) + 1 if len(ok) else 0
    mean, sd = n1 * n2 / 2, math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    return max(0, int(math.floor(mean - sps.norm.ppf(1 - tail) * sd)))


@functools.lru_cache(maxsize=64)
def moses_coverage(n1: int, n2: int, confidence: float = CONFIDENCE) -> float:
    """The Moses interval's actual coverage, 1 - 2 P(U <= k - 1): at least `confidence`
    and above it for small sides (5 v 5: 0.968), which matters when its width is read
    back as a standard error (reports/replication.py); 0 when there is no interval."""
    k = _moses_rank(n1, n2, confidence)
    if k == 0:
        return 0.0
    cdf = _u_cdf(n1, n2)
    below = float(cdf[k - 1]) if cdf is not None else _u_cdf_normal(n1, n2, k - 1)
    return 1.0 - 2.0 * below


def shift_interval(la: np.ndarray, lb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(Hodges-Lehmann shift, Moses lower, upper bound) of B against A on values already
    on the comparison's scale, vectorised over leading axes; None when the sides are too
    small for a 95% interval."""
    la, lb = np.asarray(la, float), np.asarray(lb, float)
    n1, n2 = la.shape[-1], lb.shape[-1]
    k = _moses_rank(n1, n2)
    if k == 0:
        return None
    d = np.sort((lb[..., None, :] - la[..., :, None]).reshape(*la.shape[:-1], n1 * n2), axis=-1)
    return np.median(d, axis=-1), d[..., k - 1], d[..., n1 * n2 - k]


def _scale(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """The values on the scale the change is measured on: log when every value is
    positive (changes are ratios), else relative to A's median; None if undefined."""
    if (a > 0).all() and (b > 0).all():
        return np.log(a), np.log(b), True
    ma = float(np.median(a))
    if ma == 0:
        return None
    return a / abs(ma), b / abs(ma), False


def _to_pct(shift: float, logged: bool) -> float:
    return (math.expm1(shift) if logged else shift) * 100.0


def change_interval(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """95% Moses interval of the change of B against A, in %; None when too few values."""
    scaled = _scale(np.asarray(a, float), np.asarray(b, float))
    if scaled is None:
        return None
    la, lb, logged = scaled
    bounds = shift_interval(la, lb)
    if bounds is None:
        return None
    _, lo, hi = bounds
    return _to_pct(float(lo), logged), _to_pct(float(hi), logged)


def noise_sd(a: list[float], b: list[float]) -> float | None:
    """Pooled within-side standard deviation on the comparison's scale (log or
    relative): each side about its own mean, so the change never enters it."""
    scaled = _scale(np.asarray(a, float), np.asarray(b, float))
    if scaled is None or len(a) + len(b) < 3:
        return None
    la, lb, _ = scaled
    ss = ((la - la.mean()) ** 2).sum() + ((lb - lb.mean()) ** 2).sum()
    return math.sqrt(ss / (len(a) + len(b) - 2))


def detectable_shift(sd: float, n1: int, n2: int, level: float, power: float = POWER) -> float:
    """Smallest shift (on the comparison's scale) called with `power` at `level`; inf when
    no outcome of these sizes can reach `level`."""
    if min_p(n1, n2) >= level:
        return math.inf
    df = n1 + n2 - 2
    q = sps.t.ppf(1 - level / 2, df) + sps.t.ppf(power, df)
    return float(q * sd * math.sqrt(1 / n1 + 1 / n2) / math.sqrt(RANK_EFFICIENCY))


def detectable_pct(sd: float | None, n1: int, n2: int, level: float, logged: bool = True) -> float | None:
    if sd is None:
        return None
    shift = detectable_shift(sd, n1, n2, level)
    return math.inf if math.isinf(shift) else _to_pct(shift, logged)


def repeats_for(detect_pct: float, sd: float, level: float, cap: int, start: int = MIN_REPEATS) -> int:
    """Repeats per side for which a change of detect_pct is called with 80% power at
    `level` (equal sides, log scale); `cap` when more would be needed."""
    target = math.log1p(detect_pct / 100.0)
    for n in range(start, cap + 1):
        if detectable_shift(sd, n, n, level) <= target:
            return n
    return cap


def plan_sd(sd: float, df: int, confidence: float = 0.8) -> float:
    """An upper confidence bound of a standard deviation estimated with df degrees
    of freedom: a pilot's spread is itself uncertain, and planning on its point
    estimate leaves half of all studies underpowered."""
    return sd * math.sqrt(df / sps.chi2.ppf(1 - confidence, df))


def choose_repeats(spreads: list[tuple[float, int]], detect_pct: float, family_size: int, cap: int,
                   pilot: int) -> tuple[int, float]:
    """(repeats per side, planning sd) for a run that must detect `detect_pct` in every
    comparison: spreads are (pooled sd, degrees of freedom) of the pilot's comparisons,
    each raised to its 80% upper bound (plan_sd); the noisiest sets the count."""
    sd = max(plan_sd(s, df) for s, df in spreads)
    return max(pilot, repeats_for(detect_pct, sd, ALPHA / max(1, family_size), cap, start=pilot)), sd


# ---- one comparison, then its family ----------------------------------------------

def measure(metric: str, a: list[float], b: list[float], *, min_effect_pct: float | None = None,
            seed: int = 1) -> Comparison:
    """Everything about one comparison except its verdict, which needs the family (judge)."""
    sa, sb = summarize(a), summarize(b)
    change = _pct(sa.median, sb.median)
    if change is None:
        return Comparison(metric, sa, sb, None, None, "n/a (A's median is 0)", min_effect_pct=min_effect_pct)
    if min(len(a), len(b)) < MIN_REPEATS:
        # Too few repeats to tell a change from noise: report it, call nothing.
        return Comparison(metric, sa, sb, change, None, f"{NOT_ENOUGH} (need {MIN_REPEATS})",
                          min_effect_pct=min_effect_pct)
    if _scale(np.asarray(a, float), np.asarray(b, float)) is None:
        return Comparison(metric, sa, sb, change, None, "n/a (A's median is 0)", min_effect_pct=min_effect_pct)
    p = float(rank_sum_p(np.asarray([a]), np.asarray([b]), seed)[0])
    sd = noise_sd(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = change_interval(a, b)
    noise = None if sd is None else sd * 100.0
    return Comparison(metric, sa, sb, change, ci, "", noise, p, min_effect_pct=min_effect_pct)


def holm(p: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (monotone, capped at 1)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def judge(comps: list[Comparison], family: str, alpha: float = ALPHA) -> list[Comparison]:
    """Verdicts for one family: Holm over every comparison that was tested."""
    tested = [i for i, c in enumerate(comps) if c.p_value is not None]
    m = len(tested)
    adjusted = dict(zip(tested, holm([comps[i].p_value for i in tested])))  # type: ignore[misc]
    out = []
    for i, c in enumerate(comps):
        if i not in adjusted:
            out.append(replace(c, family=family, family_size=m))
            continue
        sd = None if c.noise_pct is None else c.noise_pct / 100.0
        logged = c.a.minimum > 0 and c.b.minimum > 0
        mde = detectable_pct(sd, c.a.n, c.b.n, alpha / m, logged)
        p_adj = adjusted[i]
        if p_adj < alpha:
            verdict = "up" if (c.change_pct or 0) > 0 or (c.ci_pct and c.ci_pct[0] > 0) else "down"
        elif c.min_effect_pct is not None and c.ci_pct and -c.min_effect_pct < c.ci_pct[0] and c.ci_pct[1] < c.min_effect_pct:
            verdict = f"{RULED_OUT} {c.min_effect_pct:g}%"
        elif mde is not None and math.isinf(mde):
            verdict = (f"{INCONCLUSIVE}: nothing is callable with {c.a.n}/{c.b.n} repeats at this family's level "
                       f"(alpha/{m}); a call needs >= {callable_repeats(alpha / m)} per side")
        else:
            verdict = f"{INCONCLUSIVE}: this run can detect only {detectable_text(mde)}"
        out.append(replace(c, verdict=verdict, p_adjusted=p_adj, detectable_pct=mde, family=family, family_size=m))
    return out


def detectable_text(mde: float | None) -> str:
    if mde is None:
        return "(unknown)"
    if math.isinf(mde):
        return "nothing at this family's level"
    return f">= {mde:.0f}%"


def callable_repeats(level: float) -> int:
    """Fewest repeats per side (equal sides) whose most extreme outcome reaches `level`."""
    n = 2
    while min_p(n, n) >= level:
        n += 1
    return n


def compare(metric: str, a: list[float], b: list[float], *, min_effect_pct: float | None = None,
            seed: int = 1) -> Comparison:
    """One comparison judged alone (a family of one)."""
    return judge([measure(metric, a, b, min_effect_pct=min_effect_pct, seed=seed)], "this comparison alone")[0]


def median_ci(values: list[float], seed: int = 1) -> tuple[float, float] | None:
    """95% distribution-free interval of one sample's median (order statistics,
    binomial); the sample's range when it has too few values for 95%."""
    if len(values) < 2:
        return None
    v = sorted(values)
    n = len(v)
    j = 0  # [v_(j), v_(n+1-j)] covers the median with 1 - 2 P(Bin(n, 1/2) <= j - 1)
    while sps.binom.cdf(j, n, 0.5) <= (1 - CONFIDENCE) / 2:
        j += 1
    return (v[0], v[-1]) if j == 0 else (v[j - 1], v[n - j])
