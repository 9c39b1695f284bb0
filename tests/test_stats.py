"""Comparison statistics: refusal with few repeats, detection of real shifts."""
from __future__ import annotations

from orchestrator.stats import aa_noise_pct, compare


def test_refuses_with_fewer_than_three_repeats():
    c = compare("m", [1.0, 1.1], [2.0, 2.1])
    assert c.verdict.startswith("not enough repeats") and round(c.change_pct) == 95


def test_clear_shift_is_called():
    a = [100.0, 102.0, 98.0, 101.0, 99.0]
    b = [50.0, 52.0, 49.0, 51.0, 50.0]
    c = compare("m", a, b)
    assert c.verdict == "down" and c.ci_pct[1] < 0


def test_overlapping_spread_is_within_noise():
    a = [100.0, 130.0, 70.0, 110.0, 90.0]
    b = [105.0, 125.0, 75.0, 95.0, 100.0]
    assert compare("m", a, b).verdict == "within noise"


def test_noise_floor_raises_the_bar():
    a = [100.0, 101.0, 99.0]
    b = [104.0, 105.0, 103.0]
    assert compare("m", a, b).verdict == "up"
    assert compare("m", a, b, noise_pct=10.0).verdict == "within noise"


def test_zero_baseline_is_not_divided():
    assert compare("m", [0.0, 0.0, 0.0], [5.0, 6.0, 7.0]).verdict.startswith("n/a")


def test_aa_noise():
    assert aa_noise_pct([100.0]) is None
    assert round(aa_noise_pct([100.0, 110.0])) == 10
