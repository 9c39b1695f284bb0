"""Between runs: do the same comparisons in independent runs (other boots,
other days) agree, and what survives the variance between them?

For each comparison (group, pair A -> B, declared metric) found in at least
two runs, every run gives its own estimate of the change: the Hodges-Lehmann
shift (log scale when every value is positive, else relative to A's median)
with its within-run standard error from that run's pooled spread
(stats.noise_sd * sqrt(1/n1 + 1/n2) / sqrt(3/pi)) and its own 95% Moses
interval.  The runs are then pooled as a random-effects meta-analysis
(DerSimonian-Laird): the between-run variance tau^2 is what the runs differ
by beyond their own noise, and the pooled interval is widened by it.  A
change is called only when the pooled estimate clears zero after Holm over
the family (every pooled comparison of this report) and every run's own
estimate points the same way.  With two runs tau is estimated from a single
difference: the report says so, and a reader should want a third run before
trusting a tau of 0.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

from orchestrator.errors import UserError
from orchestrator.reports.compare import Group, default_pairs, group_of, measured
from orchestrator.reports.results import RunResults, load_run
from orchestrator.reports.stats import (ALPHA, INCONCLUSIVE, MIN_REPEATS, POWER, RANK_EFFICIENCY, RULED_OUT,
                                        change_interval, holm, noise_sd)
from orchestrator.workload.definitions import ComparedMetric, load_workload

FAMILY = "between-run report (every comparison pooled over the runs)"


@dataclass(frozen=True)
class RunEffect:
    run: str
    shift: float  # Hodges-Lehmann shift on the pooled scale
    se: float  # its within-run standard error
    ci_pct: tuple[float, float] | None  # the run's own 95% Moses interval, %
    n: tuple[int, int]


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
    def overlap(self) -> bool:
        """Every two runs' own 95% intervals share a point."""
        cis = [r.ci_pct for r in self.runs if r.ci_pct]
        return len(cis) == len(self.runs) and max(lo for lo, _ in cis) <= min(hi for _, hi in cis)

    def pct(self, x: float) -> float:
        return (math.expm1(x) if self.logged else x) * 100.0

    @property
    def ci_pct(self) -> tuple[float, float]:
        z = sps.norm.ppf(0.975)
        return self.pct(self.shift - z * self.se), self.pct(self.shift + z * self.se)

    @property
    def tau_pct(self) -> float:
        return self.pct(self.tau) if self.logged else self.tau * 100.0

    @property
    def called(self) -> bool:
        return self.verdict in ("up", "down")


def _hl_shift(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.median((b[None, :] - a[:, None]).ravel()))


def _effect(run: str, va: list[float], vb: list[float], logged: bool) -> RunEffect | None:
    a, b = np.asarray(va, float), np.asarray(vb, float)
    if logged:
        la, lb = np.log(a), np.log(b)
    else:
        ma = float(np.median(a))
        if ma == 0:
            return None
        la, lb = a / abs(ma), b / abs(ma)
    sd = noise_sd(list(la), list(lb)) if logged else noise_sd(va, vb)
    if sd is None:
        return None
    se = sd * math.sqrt(1 / len(a) + 1 / len(b)) / math.sqrt(RANK_EFFICIENCY)
    return RunEffect(run, _hl_shift(la, lb), max(se, 1e-12), change_interval(va, vb), (len(a), len(b)))


def dersimonian_laird(y: list[float], se: list[float]) -> tuple[float, float, float]:
    """(pooled estimate, its standard error, tau) of a random-effects meta-analysis."""
    w = np.array([1 / s ** 2 for s in se])
    yv = np.array(y)
    fixed = float((w * yv).sum() / w.sum())
    q = float((w * (yv - fixed) ** 2).sum())
    denom = float(w.sum() - (w ** 2).sum() / w.sum())
    tau2 = max(0.0, (q - (len(y) - 1)) / denom) if denom > 0 else 0.0
    ws = 1 / (np.array(se) ** 2 + tau2)
    return float((ws * yv).sum() / ws.sum()), float(math.sqrt(1 / ws.sum())), math.sqrt(tau2)


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
    for run, label in zip(runs, labels):
        pairs = run.compare or default_pairs(run.variants)
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
    for key, entries in per.items():
        if len(entries) < 2:
            continue
        logged = all(min(va + vb) > 0 for _, va, vb in entries)
        effects = [e for label, va, vb in entries if (e := _effect(label, va, vb, logged)) is not None]
        if len(effects) < 2:
            continue
        shift, se, tau = dersimonian_laird([e.shift for e in effects], [e.se for e in effects])
        p = float(2 * sps.norm.sf(abs(shift) / se)) if se > 0 else 1.0
        group, a, b, _ = key
        pooled.append(Pooled(group, a, b, metrics[key], logged, tuple(effects), tau, shift, se, p))
    return judge_pooled(pooled)


def judge_pooled(pooled: list[Pooled], alpha: float = ALPHA) -> list[Pooled]:
    adjusted = holm([c.p_value for c in pooled])
    out = []
    z = sps.norm.ppf(1 - alpha / max(1, len(pooled)) / 2) + sps.norm.ppf(POWER)
    for c, p_adj in zip(pooled, adjusted):
        same_way = all(e.shift > 0 for e in c.runs) or all(e.shift < 0 for e in c.runs)
        lo, hi = c.ci_pct
        effect = c.metric.min_effect_pct
        if p_adj < alpha and same_way:
            verdict = "up" if c.shift > 0 else "down"
        elif effect is not None and -effect < lo and hi < effect:
            verdict = f"{RULED_OUT} {effect:g}%"
        else:
            verdict = f"{INCONCLUSIVE}: these runs together can detect only >= {c.pct(z * c.se):.0f}%"
            if p_adj < alpha:
                verdict = f"{INCONCLUSIVE}: the runs disagree in direction"
        out.append(Pooled(c.group, c.a, c.b, c.metric, c.logged, c.runs, c.tau, c.shift, c.se, c.p_value, p_adj, verdict))
    return out


def between_runs_markdown(pooled: list[Pooled], labels: list[str]) -> str:
    lines = ["## Between runs", "",
             f"Runs: {', '.join(f'`{x}`' for x in labels)}. Per run: the change (Hodges-Lehmann) with its own 95% "
             "interval. Pooled: random-effects (DerSimonian-Laird): tau is the spread of the change between runs "
             "beyond each run's own noise, and the pooled 95% interval includes it. A change is called when the "
             f"pooled estimate is significant after Holm over the {len(pooled)} pooled comparison(s) and every run "
             "points the same way." + (" With two runs tau rests on one difference: a tau of 0 is weak evidence of "
                                       "no between-run variance." if len(labels) == 2 else ""), ""]
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
