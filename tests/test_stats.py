"""Comparison statistics: refusal with few repeats, detection of real shifts,
the A/A floor, and the library-backed test and interval."""
from __future__ import annotations

import pytest

from orchestrator.reports.stats import MIN_REPEATS, aa_noise_pct, compare, mann_whitney


def test_refuses_with_fewer_than_five_repeats():
    c = compare("m", [1.0, 1.1, 1.0, 1.0], [2.0, 2.1, 1.9, 1.9])
    assert MIN_REPEATS == 5
    assert c.verdict.startswith("not enough repeats") and round(c.change_pct) == 95 and not c.called


def test_clear_shift_is_called_with_interval_and_p():
    a = [100.0, 102.0, 98.0, 101.0, 99.0]
    b = [50.0, 52.0, 49.0, 51.0, 50.5]
    c = compare("m", a, b)
    assert c.verdict == "down" and c.ci_pct[1] < 0 and c.called
    # 5 v 5 fully separated: the exact two-sided Mann-Whitney p is 2/252.
    assert c.p_value == pytest.approx(2 / 252) and c.u_statistic == 25.0


def test_overlapping_spread_is_within_noise():
    a = [100.0, 130.0, 70.0, 110.0, 90.0]
    b = [105.0, 125.0, 75.0, 95.0, 100.0]
    assert compare("m", a, b).verdict == "within noise"


def test_noise_floor_raises_the_bar():
    a = [100.0, 101.0, 99.0, 100.5, 99.5]
    b = [104.0, 105.0, 103.0, 104.5, 103.5]
    assert compare("m", a, b).verdict == "up"
    assert compare("m", a, b, noise_pct=10.0).verdict == "within noise"


def test_interval_alone_does_not_call_a_change():
    # One outlier pair: the bootstrap interval of the median excludes zero, but
    # the rank test does not reject (p > 0.05), so nothing is called.
    a = [10.0, 10.1, 10.2, 10.3, 30.0]
    b = [10.25, 10.35, 10.45, 10.55, 1.0]
    c = compare("m", a, b)
    assert c.ci_pct is not None and c.p_value > 0.05 and c.verdict == "within noise"


def test_identical_constant_samples():
    assert mann_whitney([3.0] * 5, [3.0] * 5) == (12.5, 1.0)
    c = compare("m", [3.0] * 5, [3.0] * 5)
    assert c.verdict == "within noise" and c.change_pct == 0.0


def test_zero_baseline_is_not_divided():
    assert compare("m", [0.0] * 5, [5.0, 6.0, 7.0, 6.0, 5.0]).verdict.startswith("n/a")


def test_seeded_interval_is_reproducible():
    a = [1.66, 1.70, 1.61, 1.68, 1.64]
    b = [0.31, 0.35, 0.29, 0.33, 0.30]
    assert compare("m", a, b).ci_pct == compare("m", a, b).ci_pct


def test_aa_noise():
    assert aa_noise_pct([100.0]) is None
    assert round(aa_noise_pct([100.0, 110.0])) == 10
