"""The aging study's report section on the recorded cells of a real
`./run-matrix --matrix aging-study` run (tests/fixtures/aging-study/: Debian
6.12 + patches/, `timing` and `evidence` sets, TCG on a 2-core x86 host;
docs/aging-study/ holds that run's section)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.reports import aging as ar
from orchestrator.reports.results import CellRecord, Step
from orchestrator.reports.stats import MIN_REPEATS

FIXTURE = Path(__file__).parent / "fixtures" / "aging-study" / "cells.json"


@pytest.fixture(scope="module")
def records() -> list[CellRecord]:
    out = []
    for data in json.loads(FIXTURE.read_text()):
        steps = [Step(**s) for s in data.pop("steps")]
        out.append(CellRecord(steps=steps, **data))
    return out


def test_cells_fall_into_the_three_questions_and_vcpu_counts(records):
    study = ar.collect(records)
    assert {k for k in study.timing} == {(q, v) for q in ("Q1", "Q2", "Q3") for v in (1, 2, 4)}
    for key, by_variant in study.timing.items():
        assert len(by_variant[ar.CONTROL]) == len(by_variant[ar.TREATED]) == MIN_REPEATS, key
        assert (ar.AA in by_variant) == (key == ("Q1", 2)), key
    for key, by_variant in study.evidence.items():
        assert {v: len(r) for v, r in by_variant.items()} == {ar.CONTROL: 1, ar.TREATED: 1}, key


def test_timed_cells_carry_no_probe_figures_and_evidence_cells_prove_the_path(records):
    study = ar.collect(records)
    for by_variant in study.timing.values():
        for recs in by_variant.values():
            for r in recs:
                assert not [k for k in r.metrics if k.startswith(("lock.", "kprobe.", "trace."))], r.key
                assert "host.before_load1" in r.metrics and r.metrics["mglru.aging_passes"] >= 20
    for by_variant in study.evidence.values():
        for recs in by_variant.values():
            for r in recs:
                path = next(s for s in r.steps if s.name.endswith("path exercised"))
                assert path.status == "passed" and r.metrics["kprobe.age_gfn.hits"] > 0, r.key


def test_q2_evidence_shows_the_access_faults_it_is_about(records):
    study = ar.collect(records)
    for (q, _), by_variant in study.evidence.items():
        faults = [r.metrics.get("trace.kvm_access_fault.count", 0) for recs in by_variant.values() for r in recs]
        if q == "Q2":
            assert min(faults) > 1000
        else:
            assert max(faults) < 1000  # hardware AF: (almost) no access-flag faults


def test_aa_control_calls_nothing_with_the_same_rule_and_no_floor(records):
    study = ar.collect(records)
    for m in ar._metrics_for("Q1", ar.TIMING_METRICS):
        c = ar._compare(study, ("Q1", 2), m, ar.CONTROL, ar.AA)
        assert c is not None and c.a.n == c.b.n == MIN_REPEATS and not c.called, (m.key, c)
        # judged in the section's family, like the treatment comparisons
        assert c.family == ar.FAMILY and c.family_size == len(ar.judge_study(study)) and c.p_adjusted >= c.p_value
    section = ar.aging_section(records)
    assert ar.AA_PASSED in section and ar.AA_FAILED not in section
    assert "but vacuously: with these repeats no call was possible" in section  # 5 v 5 at alpha/46
    assert "floor" not in section and "within noise" not in section


def test_a_called_aa_pair_is_flagged_loudly(records):
    # Q1 at 2 vCPUs, baseline and baseline-aa only, each record twice (10 v 10, so a call is
    # possible at all) and baseline-aa's avg aging pass scaled by 2: the same rule now calls
    # the A/A pair, and the section says the run cannot be trusted.
    study = ar.collect(records)
    picked = [r for v in (ar.CONTROL, ar.AA) for r in study.timing[("Q1", 2)][v]]

    def twice(aa_scale: float) -> list[CellRecord]:
        out = []
        for copy in (1, 2):
            for r in picked:
                scale = aa_scale if r.cell["variant"] == ar.AA else 1
                out.append(CellRecord(f"{r.key}.{copy}", r.cell, r.inputs_key, r.reproducer, r.steps,
                                      {**r.metrics, "mglru.aging_avg_s": r.metrics["mglru.aging_avg_s"] * scale}, True))
        return out

    section = ar.aging_section(twice(2.0))
    assert ar.AA_FAILED in section and "too noisy" in section
    assert ar.AA_PASSED not in section


def test_every_comparison_says_what_it_could_detect(records):
    study = ar.collect(records)
    judged = ar.judge_study(study)
    assert len(judged) == 46 and all(c.family_size == 46 for c in judged.values())
    for c in judged.values():
        assert c.ci_pct is not None and c.noise_pct is not None and c.detectable_pct is not None
        assert c.called or c.ruled_out or c.verdict.startswith("inconclusive"), c.verdict
    # 5 v 5 cannot reach alpha/46 (the exact minimum p is 2/252): nothing is callable, and the section says so
    assert all(c.detectable_pct == float("inf") for c in judged.values())
    text = ar.aging_section(records)
    assert "a call needs >= 7 per side" in text and "Holm" in text
    # Q1 at 1 vCPU: the wall-time interval lies inside +-10%: ruled out, said in plain words
    c = ar._compare(study, ("Q1", 1), ar.TIMING_METRICS[0], ar.CONTROL, ar.TREATED)
    assert c.ruled_out and -10 < c.ci_pct[0] < c.ci_pct[1] < 10
    assert "a change beyond ±10% is ruled out on this host" in text


def test_section_has_tables_comparisons_and_conclusions(records):
    text = ar.aging_section(records)
    for q in ("Q1", "Q2", "Q3"):
        assert f"### {q}:" in text
    assert text.count("| inner vCPUs | variant |") == 3
    assert "Conclusion:" in text and "What this machine cannot show" in text
    assert "n=5/5" in text and "rank sum" in text
    assert "Host: 2 cores" in text


def test_figure_is_a_png(records):
    name, png = ar.aging_figure(records)
    assert name == ar.FIGURE and png.startswith(b"\x89PNG")
