"""Run order of a matrix: interleaved repeats (drift hits every variant alike)
and repeats per config set (timing cells repeated, evidence cells once)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.matrix.order import williams
from orchestrator.matrix.spec import load_matrix


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text("name: t\nseries: patches\nworkloads: [{name: mglru-aging, params: {vcpus: 2}}]\n" + body)
    return p


def order(m) -> list[tuple[str, int]]:
    return [(c.variant, c.repeat) for c in m.cells]


def test_two_variants_alternate_abba(tmp_path):
    m = load_matrix(write(tmp_path, "variants: [baseline, v4-fixed]\nrepeats: 4\n"))
    assert m.order == "interleaved"
    assert order(m) == [("baseline", 1), ("v4-fixed", 1), ("v4-fixed", 2), ("baseline", 2),
                        ("baseline", 3), ("v4-fixed", 3), ("v4-fixed", 4), ("baseline", 4)]


def test_three_variants_follow_a_williams_design(tmp_path):
    m = load_matrix(write(tmp_path, "variants: [baseline, v4-fixed, baseline-aa]\nrepeats: 6\n"))
    seqs = [[v for v, r in order(m) if r == rep] for rep in range(1, 7)]
    assert seqs[:3] == [["baseline", "v4-fixed", "baseline-aa"], ["v4-fixed", "baseline-aa", "baseline"],
                        ["baseline-aa", "baseline", "v4-fixed"]]
    # every variant runs first, second and third equally often ...
    assert all(sorted(col) == sorted(seqs[0] * 2) for col in zip(*seqs))
    # ... and directly after every other variant equally often (the cyclic rotation had
    # baseline-aa after v4-fixed in every repeat and never after baseline)
    after = Counter((s[i - 1], s[i]) for s in seqs for i in range(1, 3))
    assert set(after.values()) == {2} and len(after) == 6


def test_williams_sequences_are_balanced():
    for t in range(2, 8):
        rows = williams(t)
        assert len(rows) == (t if t % 2 == 0 else 2 * t)
        pairs = Counter((r[i - 1], r[i]) for r in rows for i in range(1, t))
        assert len(pairs) == t * (t - 1) and len(set(pairs.values())) == 1, t
        assert all(sorted(col) == sorted(rows[0] * (len(rows) // t)) for col in zip(*rows))


def test_blocked_order_is_the_product(tmp_path):
    m = load_matrix(write(tmp_path, "variants: [baseline, v4-fixed]\nrepeats: 2\norder: blocked\n"))
    assert order(m) == [("baseline", 1), ("baseline", 2), ("v4-fixed", 1), ("v4-fixed", 2)]


def test_groups_interleave_inside_each_repeat(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("name: t\nvariants: [baseline, v4-fixed]\nrepeats: 2\nworkloads:\n"
                 "  - {name: mglru-aging, params: {vcpus: 1}}\n  - {name: mglru-aging, params: {vcpus: 2}}\n")
    cells = load_matrix(p).cells
    assert [(c.repeat, c.workload.params_dict()["vcpus"], c.variant) for c in cells] == [
        (1, 1, "baseline"), (1, 1, "v4-fixed"), (1, 2, "baseline"), (1, 2, "v4-fixed"),
        (2, 1, "v4-fixed"), (2, 1, "baseline"), (2, 2, "v4-fixed"), (2, 2, "baseline")]


def test_repeats_per_config_set(tmp_path):
    m = load_matrix(write(tmp_path, "variants: [baseline, v4-fixed]\nconfig_sets: [timing, evidence]\n"
                                    "repeats: {timing: 5, evidence: 1}\n"))
    count = {cs: sum(1 for c in m.cells if c.config_set == cs) for cs in ("timing", "evidence")}
    assert count == {"timing": 10, "evidence": 2}
    with pytest.raises(UserError, match=r"m.yaml:\d+: repeats.timng: not a config set of this matrix"):
        load_matrix(write(tmp_path, "config_sets: [timing]\nrepeats: {timng: 5}\n"))
    with pytest.raises(UserError, match="no count for config set"):
        load_matrix(write(tmp_path, "config_sets: [timing, evidence]\nrepeats: {timing: 5}\n"))


def test_bad_order_names_the_choices(tmp_path):
    with pytest.raises(UserError, match="order: got 'shuffled', expected one of: interleaved, blocked"):
        load_matrix(write(tmp_path, "order: shuffled\n"))


def test_rotation_is_within_the_variants_a_group_has(tmp_path):
    # The default matrix: an included smp4 group with two of the three variants alternates ABBA too.
    cells = [c for c in load_matrix("default").cells if c.machine == "smp4"]
    assert [c.variant for c in cells] == ["baseline", "v4-fixed", "v4-fixed", "baseline", "baseline",
                                          "v4-fixed", "v4-fixed", "baseline", "baseline", "v4-fixed"]


def test_unknown_variant_and_config_set_are_refused_at_load_with_suggestion(tmp_path):
    with pytest.raises(UserError, match=r"m.yaml:\d+: variants: unknown variant 'v4-fixd' \(did you mean 'v4-fixed'\?\)"):
        load_matrix(write(tmp_path, "variants: [baseline, v4-fixd]\n"))
    with pytest.raises(UserError, match=r"m.yaml:\d+: config_sets: unknown config set 'timng'.*did you mean 'timing'"):
        load_matrix(write(tmp_path, "config_sets: [timng]\n"))
    with pytest.raises(UserError, match=r"m.yaml:\d+: variants: unknown variant 'v5'"):
        load_matrix(write(tmp_path, "variants: [baseline]\ninclude:\n  - {variant: v5, workload: page-idle}\n"))
