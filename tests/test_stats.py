"""Comparison statistics on seeded synthetic samples: the exact test (ties
included), the family-wise false-call rate of one report's family, the power
the planner's repeat count buys, the interval's coverage, and the verdicts
(called / ruled out / inconclusive with what could have been detected)."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as sps

from orchestrator.reports import stats as st
from orchestrator.reports.stats import MIN_REPEATS, compare, judge, measure


def _exact_permutation_p(a: list[float], b: list[float]) -> float:
    """scipy's own exact permutation test of the rank sum (midranks), for reference."""
    r = sps.rankdata(list(a) + list(b))
    res = sps.permutation_test((r[:len(a)], r[len(a):]), lambda x, y, axis: np.sum(x, axis=axis),
                               permutation_type="independent", n_resamples=np.inf, alternative="two-sided",
                               vectorized=True)
    return float(res.pvalue)


def test_refuses_with_fewer_than_five_repeats():
    c = compare("m", [1.0, 1.1, 1.0, 1.0], [2.0, 2.1, 1.9, 1.9])
    assert MIN_REPEATS == 5
    assert c.verdict.startswith("not enough repeats") and round(c.change_pct) == 95 and not c.called
    assert c.p_value is None and c.family_size == 0


def test_clear_shift_is_called_with_interval_and_exact_p():
    a = [100.0, 102.0, 98.0, 101.0, 99.0]
    b = [50.0, 52.0, 49.0, 51.0, 50.5]
    c = compare("m", a, b)
    assert c.verdict == "down" and c.ci_pct[1] < 0 and c.called
    # 5 v 5 fully separated: the exact two-sided p is 2/252, and alone it is its own Holm p.
    assert c.p_value == pytest.approx(2 / 252) and c.p_adjusted == c.p_value


def test_ties_give_exact_p_values_never_below_the_exact_minimum():
    rng = np.random.default_rng(7)
    cases = [([3, 3, 3, 3, 4], [5, 5, 5, 6, 6]), ([3, 3, 3, 3, 4], [3, 4, 4, 5, 5, 6])]
    cases += [(list(rng.integers(0, 4, n1)), list(rng.integers(0, 5, n2))) for n1, n2 in [(5, 5), (6, 6), (4, 7), (7, 5)]]
    for a, b in cases:
        p = float(st.rank_sum_p(np.array([a], float), np.array([b], float))[0])
        assert p == pytest.approx(_exact_permutation_p(a, b), abs=1e-12), (a, b)
        assert p >= st.min_p(len(a), len(b)) - 1e-12
    # Integer counts, fully separated: exactly the 5 v 5 minimum 2/252 = 0.0079.
    assert compare("m", [3, 3, 3, 3, 4], [5, 5, 5, 6, 6]).p_value == pytest.approx(2 / 252)
    # Tied counts where Mann-Whitney's method="auto" (a normal approximation once values tie)
    # says 0.044, a call at 0.05; the exact distribution says 20/252 = 0.079.
    a, b = [54, 53, 54, 54, 53], [54, 54, 59, 56, 57]
    assert sps.mannwhitneyu(a, b, method="auto").pvalue < 0.05
    assert compare("m", a, b).p_value == pytest.approx(20 / 252) == _exact_permutation_p(a, b)


def test_monte_carlo_p_beyond_the_exact_limit_is_seeded_and_bounded():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 12), rng.normal(0.3, 1, 12)  # C(24, 12) > EXACT_LIMIT
    assert math.comb(24, 12) > st.EXACT_LIMIT
    p1, p2 = st.rank_sum_p(a[None], b[None], seed=1)[0], st.rank_sum_p(a[None], b[None], seed=1)[0]
    assert p1 == p2 and p1 >= 2 / (st.MC_DRAWS + 1)
    assert st.rank_sum_p(np.arange(12.0)[None], np.arange(12.0, 24)[None])[0] == pytest.approx(2 / (st.MC_DRAWS + 1))


def test_holm_adjusted_p_values():
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert st.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_family_wise_false_call_rate_over_1000_aa_trials_is_at_most_5_percent():
    # One report's family: 12 comparisons (e.g. 3 questions x 4 metrics), 6 v 6 each, identical distributions.
    rng = np.random.default_rng(11)
    trials, family, n = 1000, 12, 6
    a = np.exp(rng.normal(0, 0.1, (trials, family, n)))
    b = np.exp(rng.normal(0, 0.1, (trials, family, n)))
    p = st.rank_sum_p(a, b)
    corrected = np.mean([min(st.holm(list(row))) < st.ALPHA for row in p])
    uncorrected = np.mean((p < st.ALPHA).any(-1))
    assert corrected <= 0.05
    assert uncorrected > 0.25  # what the report did before: a false call somewhere is the likely case


def test_a_true_20_percent_shift_is_called_with_the_repeats_chosen_for_detect_pct_20():
    rng = np.random.default_rng(21)
    shift = math.log(1.2)
    # A pilot of 5 per side at 10% noise, noise from the spread only (each side about its own mean).
    pilot_a, pilot_b = np.exp(rng.normal(0, 0.1, 5)), np.exp(rng.normal(shift, 0.1, 5))
    sd = st.noise_sd(list(pilot_a), list(pilot_b))
    assert sd == pytest.approx(st.noise_sd(list(pilot_a), list(pilot_b / 1.2)))  # the effect does not enter it
    n, planned = st.choose_repeats([(sd, 8)], detect_pct=20, family_size=1, cap=40, pilot=5)
    assert 5 < n < 40 and planned > sd
    # The run those repeats make: 1000 seeded trials with the true +20% shift.
    a = np.exp(rng.normal(0, 0.1, (1000, n)))
    b = np.exp(rng.normal(shift, 0.1, (1000, n)))
    power = np.mean(st.rank_sum_p(a, b) < st.ALPHA)
    assert power >= 0.80, (n, power)
    # And the detectable change the report would print for such a run is at most the target.
    assert st.detectable_pct(0.1, n, n, st.ALPHA) <= 20


def test_planner_keeps_the_pilot_when_it_already_suffices_and_stops_at_the_cap():
    assert st.choose_repeats([(0.01, 8)], 20, 1, 30, pilot=5) == (5, pytest.approx(st.plan_sd(0.01, 8)))
    assert st.choose_repeats([(0.5, 8)], 5, 40, 30, pilot=5)[0] == 30


def test_interval_covers_the_true_change_at_least_95_percent():
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(400):
        a, b = np.exp(rng.normal(0, 0.1, 6)), np.exp(rng.normal(math.log(1.1), 0.1, 6))
        lo, hi = st.change_interval(list(a), list(b))
        hits += lo <= 10.0 <= hi
    assert hits / 400 >= 0.94  # nominal >= 95% (exact Moses interval); 400 trials: ~1 point of sampling error


def test_verdicts_say_ruled_out_or_what_could_be_detected():
    rng = np.random.default_rng(2)
    a, b = list(np.exp(rng.normal(0, 0.02, 10))), list(np.exp(rng.normal(0, 0.02, 10)))
    ruled = compare("m", a, b, min_effect_pct=10)
    assert ruled.ruled_out and ruled.verdict == "no change larger than 10%" and not ruled.called
    noisy_a, noisy_b = list(np.exp(rng.normal(0, 0.3, 6))), list(np.exp(rng.normal(0, 0.3, 6)))
    open_ = compare("m", noisy_a, noisy_b, min_effect_pct=10)
    assert open_.verdict.startswith("inconclusive: this run can detect only >= ") and 20 < open_.detectable_pct < 200
    # Without a declared minimum effect nothing can be ruled out.
    assert compare("m", a, b).verdict.startswith("inconclusive")


def test_a_family_too_large_for_its_repeats_says_no_call_was_possible():
    a = [100.0, 102.0, 98.0, 101.0, 99.0]
    comps = judge([measure("m", a, [x * 2 for x in a])] + [measure("m", a, a)] * 39, "test family")
    c = comps[0]
    assert c.family_size == 40 and not c.called and c.detectable_pct == math.inf
    assert c.verdict == "inconclusive: nothing is callable with 5/5 repeats at this family's level (alpha/40); " \
                        "a call needs >= 7 per side"


def test_overlapping_spread_is_not_called():
    a = [100.0, 130.0, 70.0, 110.0, 90.0]
    b = [105.0, 125.0, 75.0, 95.0, 100.0]
    c = compare("m", a, b)
    assert not c.called and c.verdict.startswith("inconclusive")


def test_identical_constant_samples():
    c = compare("m", [3.0] * 5, [3.0] * 5)
    assert c.p_value == 1.0 and c.change_pct == 0.0 and not c.called and c.ci_pct == (0.0, 0.0)


def test_zero_baseline_is_not_divided():
    assert compare("m", [0.0] * 5, [5.0, 6.0, 7.0, 6.0, 5.0]).verdict.startswith("n/a")


def test_counts_with_zeros_use_the_relative_scale():
    c = compare("m", [0.0, 2.0, 1.0, 1.0, 1.0], [1.0, 2.0, 2.0, 3.0, 2.0])
    assert c.ci_pct is not None and c.p_value is not None and c.noise_pct is not None


def test_same_values_give_the_same_report():
    a = [1.66, 1.70, 1.61, 1.68, 1.64]
    b = [0.31, 0.35, 0.29, 0.33, 0.30]
    assert compare("m", a, b) == compare("m", a, b)


def test_median_interval_is_order_statistics():
    assert st.median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) == (1.0, 5.0)  # n=5 is too small for 95%: the range
    lo, hi = st.median_ci([float(i) for i in range(20)])
    assert (lo, hi) == (5.0, 14.0)
    assert st.median_ci([1.0]) is None


def test_judged_aa_reports_with_tied_counts_call_at_most_5_percent():
    # The verdict path itself (judge: Holm, then up/down) over 1000 seeded A/A reports of 12
    # comparisons, 6 v 6 integer counts with ties (the kind aging-pass counts are).
    rng = np.random.default_rng(13)
    trials, family, n = 1000, 12, 6
    a = rng.poisson(20, (trials, family, n)).astype(float)
    b = rng.poisson(20, (trials, family, n)).astype(float)
    p = st.rank_sum_p(a, b)
    assert p.min() >= st.min_p(n, n) - 1e-12  # exact with ties: never below the exact minimum
    template = measure("m", list(a[0, 0]), list(b[0, 0]), min_effect_pct=10)
    # Only a report whose smallest p clears Holm's first step can call anything; judge those
    # (and as many others) with the report's own verdict code.
    could = [i for i, row in enumerate(p) if row.min() < st.ALPHA / family]
    others = [i for i in range(trials) if i not in could][:len(could) + 20]
    called = 0
    for i in could + others:
        comps = judge([replace(template, p_value=float(x)) for x in p[i]], "A/A report")
        called += any(c.called for c in comps)
        assert any(c.called for c in comps) == (i in could)
    assert 0 < called / trials <= 0.05
    assert (p < st.ALPHA).any(-1).mean() > 0.25  # uncorrected, a false call somewhere is the likely case
