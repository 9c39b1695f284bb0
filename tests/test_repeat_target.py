"""Repeats from a target (`repeats: {timing: {detect_pct: N}}`): the matrix
runs a pilot, the noise of the pilot (spread only) sets the count, with a
cap, and the count chosen buys the power it promises (seeded synthetic
records of the mglru-aging workload's declared metrics)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from orchestrator.errors import UserError
from orchestrator.matrix import scheduler
from orchestrator.matrix.spec import load_matrix
from orchestrator.reports import stats as st
from orchestrator.reports.results import PASSED, CellRecord, Step

WORKLOAD = "{name: mglru-aging, params: {vcpus: 2}}"


def write(tmp_path: Path, repeats: str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(f"name: t\nseries: patches\nvariants: [baseline, v4-fixed]\nconfig_sets: [timing, evidence]\n"
                 f"workloads: [{WORKLOAD}]\nrepeats: {repeats}\n")
    return p


def records(matrix, rng: np.random.Generator, noise: float, shift: float = 0.0, repeats=None) -> list[CellRecord]:
    """A finished record per timing cell: the two primary metrics the workload declares with
    min_effect_pct, lognormal with `noise`, v4-fixed's multiplied by 1 + shift."""
    out = []
    for c in matrix.cells:
        if c.config_set != "timing" or (repeats and c.repeat not in repeats):
            continue
        factor = (1 + shift) if c.variant == "v4-fixed" else 1.0
        metrics = {m: float(v * factor * math.exp(rng.normal(0, noise)))
                   for m, v in (("mglru.aging_avg_s", 0.03), ("mglru.vcpu_wall_s", 2.0))}
        out.append(CellRecord(c.key, c.to_json(), "k", "", [Step("workload mglru-aging", PASSED, 1.0)], metrics, True))
    return out


def test_a_target_runs_a_pilot_first(tmp_path):
    m = load_matrix(write(tmp_path, "{timing: {detect_pct: 20}, evidence: 1}"))
    assert m.targets["timing"].detect_pct == 20 and m.targets["timing"].pilot == 5 and m.targets["timing"].cap == 30
    assert sum(1 for c in m.cells if c.config_set == "timing") == 10  # 5 per variant: the pilot
    fixed = load_matrix(write(tmp_path, "{timing: 7, evidence: 1}"))  # a fixed count still works
    assert not fixed.targets and sum(1 for c in fixed.cells if c.config_set == "timing") == 14


@pytest.mark.parametrize("repeats, needle", [
    ("{timing: {detect_pc: 20}, evidence: 1}", r"m.yaml:\d+: repeats.timing.*detect_pc.*did you mean 'detect_pct'"),
    ("{timing: {detect_pct: 0}, evidence: 1}", r"m.yaml:\d+: repeats.timing.detect_pct: got 0, expected an integer from 1 to 1000"),
    ("{timing: {detect_pct: 10, pilot: 9, max: 6}, evidence: 1}", r"m.yaml:\d+: repeats.timing.pilot: 9 is more than max"),
    ("{timing: [5], evidence: 1}", r"m.yaml:\d+: repeats.timing.*an integer from 1 to 1000, or \{detect_pct"),
])
def test_a_bad_target_names_file_line_and_fix(tmp_path, repeats, needle):
    with pytest.raises(UserError, match=needle):
        load_matrix(write(tmp_path, repeats))


def test_the_pilots_noise_sets_the_count_and_the_count_buys_the_power(tmp_path):
    m = load_matrix(write(tmp_path, "{timing: {detect_pct: 20, max: 40}, evidence: 1}"))
    rng = np.random.default_rng(4)
    pilot = records(m, rng, noise=0.10, shift=0.20)
    new, lines = m.more_repeats(m.cells, pilot)
    n = max(c.repeat for c in new)
    assert 5 < n < 40 and {c.config_set for c in new} == {"timing"}
    assert sorted({c.repeat for c in new}) == list(range(6, n + 1))
    assert len(new) == 2 * (n - 5)  # both variants, interleaved in the Williams order, continuing the pilot's
    assert [c.variant for c in new[:4]] == (["baseline", "v4-fixed", "v4-fixed", "baseline"]
                                            if new[0].repeat % 2 else ["v4-fixed", "baseline", "baseline", "v4-fixed"])
    assert f"Repeats: **{n}** per side" in lines[0] and "2 comparison(s)" in lines[0]
    # The effect in the pilot does not enter the choice: the same pilot without the shift gives the same count.
    same = load_matrix(write(tmp_path, "{timing: {detect_pct: 20, max: 40}, evidence: 1}"))
    rng = np.random.default_rng(4)
    assert max(c.repeat for c in same.more_repeats(same.cells, records(same, rng, 0.10, 0.0))[0]) == n
    # What those repeats buy: a true +20% shift at 10% noise, 1000 seeded runs of the
    # family (the 2 comparisons, Holm), called in at least 80% of them.
    rng = np.random.default_rng(8)
    a = rng.normal(0, 0.10, (1000, 2, n))
    b = rng.normal(math.log(1.2), 0.10, (1000, 2, n))
    p = st.rank_sum_p(a, b)
    called = np.mean([st.holm(list(row))[0] < st.ALPHA for row in p])
    assert called >= 0.80, (n, called)


def test_a_noisy_pilot_stops_at_the_cap_and_says_so(tmp_path):
    m = load_matrix(write(tmp_path, "{timing: {detect_pct: 5, max: 12}, evidence: 1}"))
    new, lines = m.more_repeats(m.cells, records(m, np.random.default_rng(1), noise=0.3))
    assert max(c.repeat for c in new) == 12
    assert "the cap: 5% needs more; with 12 this run detects" in lines[0]


def test_the_run_grows_by_the_cells_the_target_asks_for_once():
    cells = [1, 2]
    asked = []

    def more():
        asked.append(len(cells))
        return [3, 4] if len(asked) == 1 else []

    assert list(scheduler._growing(cells, more)) == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert asked == [2, 4] and cells == [1, 2, 3, 4]


def test_over_many_pilots_the_chosen_counts_call_a_true_20_percent_at_least_80_percent(tmp_path):
    # The count depends on the pilot's noise, itself a draw: over 100 seeded pilots (10% noise,
    # +20% true shift) the tool's choices, each run 200 times (Holm over the family of 2),
    # call the shift in >= 80% of all runs, and no single choice falls far short.
    m = load_matrix(write(tmp_path, "{timing: {detect_pct: 20, max: 40}, evidence: 1}"))
    chosen = []
    for seed in range(100):
        new, _ = m.more_repeats(m.cells, records(m, np.random.default_rng(100 + seed), noise=0.10, shift=0.20))
        chosen.append(max([c.repeat for c in new], default=5))
    rng = np.random.default_rng(9)
    power = {}
    # Power grows with n: counts of 9 or more are credited with the power of 9 (a lower
    # bound), which keeps the test fast (10 v 10 alone enumerates 184 756 splits).
    for n in sorted({min(n, 9) for n in chosen}):
        a = rng.normal(0, 0.10, (200, 2, n))
        b = rng.normal(math.log(1.2), 0.10, (200, 2, n))
        power[n] = np.mean([st.holm(list(row))[0] < st.ALPHA for row in st.rank_sum_p(a, b)])
    overall = np.mean([power[min(n, 9)] for n in chosen])
    assert overall >= 0.80, (power, chosen)
    assert min(power.values()) >= 0.6, power
