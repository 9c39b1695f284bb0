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


def test_aa_control_is_within_noise(records):
    study = ar.collect(records)
    for m in ar._metrics_for("Q1", ar.TIMING_METRICS)[:4]:
        c = ar._compare(study, ("Q1", 2), m, ar.CONTROL, ar.AA)
        assert c is not None and c.a.n == c.b.n == MIN_REPEATS and not c.called, (m.key, c)
    section = ar.aging_section(records)
    assert "within noise, as it must be" in section and "FAILED: a change was called" not in section


def test_section_has_tables_comparisons_and_conclusions(records):
    text = ar.aging_section(records)
    for q in ("Q1", "Q2", "Q3"):
        assert f"### {q}:" in text
    assert text.count("| inner vCPUs | variant |") == 3
    assert "Conclusion:" in text and "What this machine cannot show" in text
    assert "n=5/5" in text and "Mann-Whitney" in text
    assert "Host: 2 cores" in text


def test_figure_is_a_png(records):
    name, png = ar.aging_figure(records)
    assert name == ar.FIGURE and png.startswith(b"\x89PNG")
