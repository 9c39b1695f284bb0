"""Between runs: do the same comparisons in independent runs (other boots,
other days) agree, and what survives the variance between them?

For each comparison (group, pair A -> B, declared metric) found in at least
two runs, every run gives its own estimate of the change: the Hodges-Lehmann
shift (log scale when every value of every run is positive, else relative to
A's median) and its own 95% Moses interval.  The run's standard error is read
back from that interval: its width over 2 z, z at the interval's exact
coverage (stats.moses_coverage: 96.8% at 5 v 5), so a run counts in the pool
exactly as much as its printed interval says, never more.  (It was once taken
from the within-side spread, on values scaled twice: the log values were
divided by their own log median, which shrank a count's standard error by
~10 and produced pooled intervals far narrower than either run's.)  When an
interval has zero width (tied counts), the run's spread stands in; a run with
neither carries no noise estimate and is left out of that comparison.

The runs are then pooled as a random-effects meta-analysis (DerSimonian-
Laird): the between-run variance tau^2 is what the runs differ by beyond
their own noise, and the pooled interval is widened by it.  The pooled
estimate is referred to a t distribution with the runs' within-run degrees
of freedom (sum of n1 + n2 - 2): the standard errors are themselves
estimated from few repeats, and a normal reference calls 8-10% of two-run
A/A reports of 26-46 comparisons at 5 v 5 (tests/test_between_runs.py keeps
it at or below 5%).  A change is called only when the pooled estimate clears
zero after Holm over the family (every pooled comparison of this report) and
every run's own estimate points the same way.  With two runs tau is
estimated from a single difference and is often 0 when the runs really do
differ: the report says so, and a reader should want a third run before
trusting a call.
"""
from __future__ import annotations

import functools
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats as sps

from orchestrator.errors import UserError
from orchestrator.reports.compare import Group, default_pairs, group_of, measured
from orchestrator.reports.results import RunResults, load_run
from orchestrator.reports.stats import (ALPHA, CONFIDENCE, INCONCLUSIVE, MIN_REPEATS, POWER, RANK_EFFICIENCY,
                                        RULED_OUT, holm, moses_coverage, shift_interval)
from orchestrator.workload.definitions import ComparedMetric, load_workload

FAMILY = "between-run report (every comparison pooled over the runs)"


@dataclass(frozen=True)
class RunEffect:
    run: str
    shift: float  # Hodges-Lehmann shift on the pooled scale
    se: float  # its within-run standard error, from the run's own interval
    ci_pct: tuple[float, float] | None  # the run's own 95% Moses interval, %
    n: tuple[int, int]

    @property
    def df(self) -> int:
        return self.n[0] + self.n[1] - 2


@dataclass(frozen=True)
class Pooled:
    group: Group
    a: str
    b: str
    metric: ComparedMetric
    logged: bool
    runs: tuple[RunEffect, ...]
    tau: float  # between-run standard deviation of the change (pooled scale)
    shift: float  # random-effects estimate
    se: float  # its standard error, between-run variance included
    p_value: float
    p_adjusted: float = 1.0
    verdict: str = ""

    @property
    def df(self) -> int:
        """Degrees of freedom of the pooled estimate's reference t: the runs' own."""
        return sum(e.df for e in self.runs)

    @property
    def overlap(self) -> bool:
        """Every two runs' own 95% intervals share a point."""
        cis = [r.ci_pct for r in self.runs if r.ci_pct]
        return len(cis) == len(self.runs) and max(lo for lo, _ in cis) <= min(hi for _, hi in cis)

    def pct(self, x: float) -> float:
        return (math.expm1(x) if self.logged else x) * 100.0

    @property
    def ci_pct(self) -> tuple[float, float]:
        q = t_quantile(0.5 + CONFIDENCE / 2, self.df)
        return self.pct(self.shift - q * self.se), self.pct(self.shift + q * self.se)

    @property
    def tau_pct(self) -> float:
        return self.pct(self.tau) if self.logged else self.tau * 100.0

    @property
    def called(self) -> bool:
        return self.verdict in ("up", "down")


@functools.lru_cache(maxsize=256)
def t_quantile(q: float, df: int) -> float:
    return float(sps.t.ppf(q, df))


def interval_se(lo: np.ndarray, hi: np.ndarray, n1: int, n2: int) -> np.ndarray:
    """The standard error a Moses interval [lo, hi] of sides n1, n2 stands for: its
    width over 2 z at the interval's exact coverage (normal approximation)."""
    z = sps.norm.ppf(0.5 + moses_coverage(n1, n2) / 2)
    return (np.asarray(hi, float) - np.asarray(lo, float)) / (2 * z)


def spread_se(la: np.ndarray, lb: np.ndarray) -> np.ndarray:
    """The shift's standard error from the pooled within-side spread of values already
    on the comparison's scale (each side about its own mean), for the rank estimate."""
    n1, n2 = la.shape[-1], lb.shape[-1]
    ss = ((la - la.mean(-1, keepdims=True)) ** 2).sum(-1) + ((lb - lb.mean(-1, keepdims=True)) ** 2).sum(-1)
    return np.sqrt(ss / (n1 + n2 - 2) * (1 / n1 + 1 / n2) / RANK_EFFICIENCY)


def run_effects(la: np.ndarray, lb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(shift, standard error, interval low, high) of B against A per run, values on the
    pooled scale, vectorised over leading axes; the error from the interval, from the
    spread where the interval has zero width (tied values)."""
    bounds = shift_interval(la, lb)
    if bounds is None:
        return None
    shift, lo, hi = bounds
    se = interval_se(lo, hi, la.shape[-1], lb.shape[-1])
    return shift, np.where(se > 0, se, spread_se(la, lb)), lo, hi


def _effect(run: str, va: list[float], vb: list[float], logged: bool) -> RunEffect | None:
    a, b = np.asarray(va, float), np.asarray(vb, float)
    if logged:
        la, lb = np.log(a), np.log(b)
    else:
        ma = float(np.median(a))
        if ma == 0:
            return None
        la, lb = a / abs(ma), b / abs(ma)
    got = run_effects(la, lb)
    if got is None or not float(got[1]) > 0:
        return None  # no interval, or no spread at all: this run carries no noise estimate
    shift, se, lo, hi = (float(x) for x in got)
    pct = (lambda x: math.expm1(x) * 100.0) if logged else (lambda x: x * 100.0)
    return RunEffect(run, shift, se, (pct(lo), pct(hi)), (len(a), len(b)))


def dersimonian_laird(y, se) -> tuple:
    """(pooled estimate, its standard error, tau) of a random-effects meta-analysis of
    estimates y with standard errors se (runs on the last axis, vectorised over the
    leading ones): floats for 1-d input, arrays otherwise."""
    yv, sv = np.asarray(y, float), np.asarray(se, float)
    w = 1 / sv ** 2
    fixed = (w * yv).sum(-1, keepdims=True) / w.sum(-1, keepdims=True)
    q = (w * (yv - fixed) ** 2).sum(-1)
    denom = w.sum(-1) - (w ** 2).sum(-1) / w.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau2 = np.where(denom > 0, np.maximum(0.0, (q - (yv.shape[-1] - 1)) / denom), 0.0)
    ws = 1 / (sv ** 2 + tau2[..., None])
    est, pse, tau = (ws * yv).sum(-1) / ws.sum(-1), np.sqrt(1 / ws.sum(-1)), np.sqrt(tau2)
    if yv.ndim == 1:
        return float(est), float(pse), float(tau)
    return est, pse, tau


def pooled_p(shift, se, df) -> np.ndarray:
    """Two-sided p of the pooled estimate against a t with the runs' degrees of freedom."""
    return 2 * sps.t.sf(np.abs(shift) / se, df)


def _sides(run: RunResults) -> dict[Group, dict[str, list]]:
    sides: dict = defaultdict(lambda: defaultdict(list))
    for rec, _ in run.records:
        if measured(rec):
            sides[group_of(rec.cell)][str(rec.cell.get("variant"))].append(rec)
    return sides


def pool_runs(runs: list[RunResults], labels: list[str]) -> list[Pooled]:
    """Every comparison found in at least two runs, pooled and judged as one family."""
    per: dict[tuple, list[tuple[str, list[float], list[float]]]] = defaultdict(list)
    metrics: dict[tuple, ComparedMetric] = {}
    pair_rank: dict[tuple[str, str], int] = {}
    for run, label in zip(runs, labels):
        pairs = run.compare or default_pairs(run.variants)
        for pair in pairs:
            pair_rank.setdefault(tuple(pair), len(pair_rank))
        for group, by_side in _sides(run).items():
            try:
                declared = load_workload(group.workload).compared
            except UserError:
                continue
            for a, b in pairs:
                if a not in by_side or b not in by_side:
                    continue
                for m in declared:
                    va = [float(r.metrics[m.metric]) for r in by_side[a] if m.metric in r.metrics]
                    vb = [float(r.metrics[m.metric]) for r in by_side[b] if m.metric in r.metrics]
                    if min(len(va), len(vb)) >= MIN_REPEATS:
                        per[(group, a, b, m.metric)].append((label, va, vb))
                        metrics[(group, a, b, m.metric)] = m
    pooled: list[Pooled] = []
    # One order whatever order the records came in: group, pair as the matrix lists it, metric as declared.
    def rank(key: tuple) -> tuple:
        group, a, b, metric = key
        declared = [m.metric for m in load_workload(group.workload).compared]
        return group.label, pair_rank[(a, b)], declared.index(metric)
    for key in sorted(per, key=rank):
        entries = per[key]
        if len(entries) < 2:
            continue
        logged = all(min(va + vb) > 0 for _, va, vb in entries)
        effects = [e for label, va, vb in entries if (e := _effect(label, va, vb, logged)) is not None]
        if len(effects) < 2:
            continue
        shift, se, tau = dersimonian_laird([e.shift for e in effects], [e.se for e in effects])
        p = float(pooled_p(shift, se, sum(e.df for e in effects)))
        group, a, b, _ = key
        pooled.append(Pooled(group, a, b, metrics[key], logged, tuple(effects), tau, shift, se, p))
    return judge_pooled(pooled)


def judge_pooled(pooled: list[Pooled], alpha: float = ALPHA) -> list[Pooled]:
    adjusted = holm([c.p_value for c in pooled])
    out = []
    level = alpha / max(1, len(pooled))  # Holm's first step
    for c, p_adj in zip(pooled, adjusted):
        same_way = all(e.shift > 0 for e in c.runs) or all(e.shift < 0 for e in c.runs)
        lo, hi = c.ci_pct
        effect = c.metric.min_effect_pct
        if p_adj < alpha and same_way:
            verdict = "up" if c.shift > 0 else "down"
        elif effect is not None and -effect < lo and hi < effect:
            verdict = f"{RULED_OUT} {effect:g}%"
        elif p_adj < alpha:
            verdict = f"{INCONCLUSIVE}: the runs disagree in direction"
        else:
            q = t_quantile(1 - level / 2, c.df) + t_quantile(POWER, c.df)
            verdict = f"{INCONCLUSIVE}: these runs together can detect only >= {c.pct(q * c.se):.0f}%"
        out.append(replace(c, p_adjusted=p_adj, verdict=verdict))
    return out


def between_runs_markdown(pooled: list[Pooled], labels: list[str]) -> str:
    lines = ["## Between runs", "",
             f"Runs: {', '.join(f'`{x}`' for x in labels)}. Per run: the change (Hodges-Lehmann) with its own 95% "
             "interval; the run's standard error is read back from that interval's width (at its exact coverage), "
             "so no run weighs more in the pool than its interval says. Pooled: random-effects (DerSimonian-Laird): "
             "tau is the spread of the change between runs beyond each run's own noise, and the pooled 95% interval "
             "includes it (t with the runs' degrees of freedom). A change is called when the pooled estimate is "
             f"significant after Holm over the {len(pooled)} pooled comparison(s) and every run points the same way."
             + (" With two runs tau rests on one difference: a tau of 0 is weak evidence of no between-run variance, "
                "and a call wants a third run." if len(labels) == 2 else ""), ""]
    if not pooled:
        return "\n".join(lines + ["No comparison was measured with enough repeats in two or more runs."]) + "\n"
    disagree = [c for c in pooled if not c.overlap]
    lines.append(f"**{len(pooled) - len(disagree)} of {len(pooled)} comparison(s) have overlapping per-run intervals; "
                 f"{len(disagree)} do not** (between-run variance beyond what a single run's interval shows)."
                 if disagree else f"All {len(pooled)} comparison(s) have overlapping per-run intervals.")
    lines += ["", "| group | pair | metric | " + " | ".join(f"`{x}`" for x in labels) +
              " | overlap | tau | pooled (95%) | verdict |", "|" + "---|" * (len(labels) + 7)]
    for c in pooled:
        cells = []
        for label in labels:
            e = next((e for e in c.runs if e.run == label), None)
            cells.append("–" if e is None or e.ci_pct is None else
                         f"{c.pct(e.shift):+.1f}% ({e.ci_pct[0]:+.1f}..{e.ci_pct[1]:+.1f})")
        lo, hi = c.ci_pct
        lines.append(f"| {c.group.label} | {c.a} → {c.b} | {c.metric.label} | " + " | ".join(cells) +
                     f" | {'yes' if c.overlap else '**no**'} | {c.tau_pct:.1f}% | {c.pct(c.shift):+.1f}% "
                     f"({lo:+.1f}..{hi:+.1f}) | {c.verdict} |")
    return "\n".join(lines) + "\n"


def between_runs(dirs: list[Path]) -> str:
    """`orchestrator between-runs RUN1 RUN2 ...`: the markdown report."""
    if len(dirs) < 2:
        raise UserError("between-runs needs at least two results directories", hint="pass RUN1 RUN2 [RUN3 ...]")
    runs = [load_run(d) for d in dirs]
    labels = [d.name or str(d) for d in dirs]
    if len(set(labels)) < len(labels):
        labels = [str(d) for d in dirs]
    return between_runs_markdown(pool_runs(runs, labels), labels)
