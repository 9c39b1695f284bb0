"""Run order of a matrix's repeats: a Williams design, so every variant runs
in every position and directly after every other variant equally often
(first-order carry-over balanced), instead of a rotation where, with three
variants, the same variant always follows the same other one.

Williams (1949): the first sequence is 0, 1, t-1, 2, t-2, ...; sequence i adds
i to each entry (mod t).  With an even number of variants these t sequences
are balanced; with an odd number the t mirrored sequences are added (2t in
all).  Repeat r runs sequence (r - 1) mod len(sequences): balance is exact
when the repeats are a multiple of that length, and the run's Order section
counts what actually preceded what.

How many repeats: a fixed count, or a target (`detect_pct`): a pilot, then
as many as the pilot's noise says detecting that change needs (more_repeats).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from orchestrator.errors import UserError
from orchestrator.reports.compare import group_of, measured
from orchestrator.reports.results import CellRecord
from orchestrator.reports.stats import ALPHA, choose_repeats, detectable_pct, noise_sd, plan_sd
from orchestrator.workload.definitions import load_workload

if TYPE_CHECKING:  # a type only: spec imports this module
    from orchestrator.matrix.spec import Cell


def williams(t: int) -> list[list[int]]:
    """The sequences of a Williams design for t treatments (indices 0..t-1)."""
    if t <= 1:
        return [[0]] if t == 1 else []
    first, low, high = [0], 1, t - 1
    while len(first) < t:
        first.append(low)
        low += 1
        if len(first) < t:
            first.append(high)
            high -= 1
    rows = [[(x + i) % t for x in first] for i in range(t)]
    if t % 2:
        rows += [list(reversed(r)) for r in rows]
    return rows


def position(variant_index: int, t: int, repeat: int) -> int:
    """Where a variant runs within its group in a repeat (1-based repeat)."""
    rows = williams(t)
    return rows[(repeat - 1) % len(rows)].index(variant_index)


def balanced_after(t: int) -> int:
    """Repeats after which the design is balanced for t variants (t even: t, odd: 2t)."""
    return len(williams(t))


# ---- repeats from a target ------------------------------------------------------------

@dataclass(frozen=True)
class RepeatTarget:
    """`repeats: {CONFIG_SET: {detect_pct: N, pilot: P, max: M}}`: run P repeats, then as
    many as detecting an N% change with 80% power needs, at most M."""
    detect_pct: int
    pilot: int = 5
    cap: int = 30


def more_repeats(cells: list[Cell], targets: dict[str, RepeatTarget], records: list[CellRecord],
                 pairs: list[tuple[str, str]]) -> tuple[list[Cell], list[str]]:
    """The cells a target asks for beyond the pilot, and what the report says about it.

    The noise is each comparison's pooled within-side spread in the pilot
    (reports/stats.noise_sd: each side about its own mean, so the effect seen so
    far never enters the choice and cannot bias the test), raised to its 80%
    upper bound; the metrics that declare a `min_effect_pct` set the count (all
    compared metrics when none does); the level is alpha over the comparisons
    the headline will judge for that config set (Holm's first step)."""
    new: list[Cell] = []
    lines: list[str] = []
    have = {c.key for c in cells}
    for config_set, target in targets.items():
        sides: dict = defaultdict(lambda: defaultdict(list))
        for r in records:
            if r.cell.get("config_set") == config_set and measured(r):
                sides[group_of(r.cell)][str(r.cell.get("variant"))].append(r)
        spreads, family, n_pilot = [], 0, target.pilot
        for group, by_side in sides.items():
            try:
                declared = load_workload(group.workload).compared
            except UserError:
                continue
            key = [c for c in declared if c.min_effect_pct is not None] or list(declared)
            for a, b in pairs:
                if a not in by_side or b not in by_side:
                    continue
                for metric in declared:
                    va = [float(r.metrics[metric.metric]) for r in by_side[a] if metric.metric in r.metrics]
                    vb = [float(r.metrics[metric.metric]) for r in by_side[b] if metric.metric in r.metrics]
                    if min(len(va), len(vb)) < 2:
                        continue
                    family += 1
                    n_pilot = min(n_pilot, len(va), len(vb))
                    if metric in key and (sd := noise_sd(va, vb)) is not None and sd > 0:
                        spreads.append((sd, len(va) + len(vb) - 2, f"{group.label}: {metric.label} {a} → {b}"))
        if not spreads:
            lines.append(f"- `{config_set}`: target {target.detect_pct}% detectable, but the pilot measured no "
                         f"compared metric on both sides of a pair: {target.pilot} repeat(s) kept.")
            continue
        n, sd = choose_repeats([(s, df) for s, df, _ in spreads], target.detect_pct, family, target.cap, target.pilot)
        worst = max(spreads, key=lambda s: plan_sd(s[0], s[1]))
        capped = n == target.cap and detectable_pct(sd, n, n, ALPHA / family) > target.detect_pct
        lines.append(
            f"- `{config_set}`: target: a {target.detect_pct}% change detectable with 80% power in each of the "
            f"{family} comparison(s) of the headline (level alpha/{family}). Pilot: {n_pilot} repeat(s) per side; "
            f"noisiest comparison {worst[2]} (spread {worst[0] * 100:.1f}%, planned on its 80% upper bound "
            f"{sd * 100:.1f}%). Repeats: **{n}** per side" +
            (f" (the cap: {target.detect_pct}% needs more; with {n} this run detects "
             f"{detectable_pct(sd, n, n, ALPHA / family):.0f}%)." if capped else "."))
        for cell in [c for c in cells if c.config_set == config_set and c.repeat == 1]:
            for r in range(target.pilot + 1, n + 1):
                extra = replace(cell, repeat=r)
                if extra.key not in have:
                    new.append(extra)
                    have.add(extra.key)
    return new, lines
