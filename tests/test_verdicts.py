"""Verdicts and expectations: judged only from what a cell measured.

Metrics are those of real cells: a baseline page-idle evidence cell of the
default matrix (docs/example-run, Debian 6.12 `evidence` set) and the same
workload on the `timing` set, where no collector is armed.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.workload.outcome import WorkloadRun
from orchestrator.paths import PATCHES_DIR
from orchestrator.reports.results import ERROR, FAILED, PASSED, SKIPPED
from orchestrator.judge.verdicts import NotMeasured, evaluate, load_all_expectations, load_expectations, verdict_steps

# baseline.evidence.default.page-idle~1dff46.r1 of docs/example-run/junit.xml (its properties, abridged)
EVIDENCE_BASELINE = {"kprobe.age_gfn.hits": 536649.0, "kprobe.test_age_gfn.hits": 0.0,
                     "lock.mmu_lock.write.acquisitions": 536662.0, "lock.mmu_lock.read.acquisitions": 8230.0,
                     "lock.mmu_lock.write.contentions": 0.0, "trace.events_written": 544886.0,
                     "workload.seconds": 48.064, "phase.mark_memory_idle_total_s": 42.148453616}
# What a timed cell of the same workload has: its own output and the run's wall time, no collector figures.
TIMING_BASELINE = {k: v for k, v in EVIDENCE_BASELINE.items() if k.startswith(("phase.", "workload."))}


def run(metrics: dict, timed: bool = False) -> WorkloadRun:
    return WorkloadRun("page-idle", "/opt/orch/selftests/access_tracking_perf_test", 0, 20.0, "", False,
                       metrics=dict(metrics), timed=timed)


def by_name(steps) -> dict:
    return {s.name: s for s in steps}


def test_evidence_cell_passes_the_project_expectations():
    steps = by_name(verdict_steps(run(EVIDENCE_BASELINE), load_expectations(PATCHES_DIR / "expectations.yaml", "baseline")))
    assert steps["verdict page-idle: path exercised"].status == PASSED
    assert steps["expect page-idle: aging takes mmu_lock for write"].status == PASSED


def test_timed_cell_is_not_applicable_never_failed():
    steps = by_name(verdict_steps(run(TIMING_BASELINE, timed=True),
                                  load_expectations(PATCHES_DIR / "expectations.yaml", "v4-fixed")))
    path = steps["verdict page-idle: path exercised"]
    assert path.status == SKIPPED and "evidence cells" in path.message
    for name in ("expect page-idle: aging takes mmu_lock for read", "expect page-idle: aging takes no write lock"):
        assert steps[name].status == SKIPPED and "not applicable in a timed cell" in steps[name].message
        assert "lock.mmu_lock" in steps[name].message


def test_missing_metric_outside_timing_is_an_error_not_zero():
    metrics = {k: v for k, v in EVIDENCE_BASELINE.items() if not k.startswith("lock.")}
    metrics["kprobe.unmap_gfn_range.hits"] = 0.0
    steps = by_name(verdict_steps(run(metrics), load_expectations(PATCHES_DIR / "expectations.yaml", "v4")))
    assert steps["expect page-idle: aging takes no write lock"].status == ERROR
    assert "not measured" in steps["expect page-idle: aging takes no write lock"].message
    # "0 < 0.1 * ..." would have passed with missing metrics read as 0.
    with pytest.raises(NotMeasured):
        evaluate("lock.mmu_lock.write.acquisitions < 1", metrics)


def test_messages_do_not_contradict_themselves():
    aged_no_lock = dict(EVIDENCE_BASELINE, **{"lock.mmu_lock.write.acquisitions": 0.0, "lock.mmu_lock.read.acquisitions": 0.0})
    step = by_name(verdict_steps(run(aged_no_lock), []))["verdict page-idle: path exercised"]
    assert step.status == FAILED and "never aged" not in step.message and "mmu_lock was never taken" in step.message
    never = dict(EVIDENCE_BASELINE, **{"kprobe.age_gfn.hits": 0.0})
    step = by_name(verdict_steps(run(never), []))["verdict page-idle: path exercised"]
    assert step.status == FAILED and "never aged KVM memory" in step.message and "calls=0" in step.message


def test_unknown_metric_is_a_load_error_with_line_and_suggestion(tmp_path: Path):
    f = tmp_path / "expectations.yaml"
    f.write_text("baseline:\n  - name: ok\n    check: lock.mmu_lock.write.acquisitions >= 1\n"
                 "  - name: typo\n    why: x\n    check: lock.mmu_lock.write.aquisitions >= 1\n")
    with pytest.raises(UserError) as exc:
        load_all_expectations(f)
    text = str(exc.value)
    assert f"{f}:6:" in text and "unknown metric 'lock.mmu_lock.write.aquisitions'" in text
    assert "did you mean 'lock.mmu_lock.write.acquisitions'" in text and "known metrics:" in text


def test_workload_metric_families_are_known(tmp_path: Path):
    f = tmp_path / "expectations.yaml"
    f.write_text("v4:\n  - {name: a, check: mglru.aging_passes >= 10}\n  - {name: b, check: kprobe.age_gfn.hits > 0}\n")
    assert [e.name for e in load_all_expectations(f)["v4"]] == ["a", "b"]
    f.write_text("v4:\n  - {name: c, check: kprobe.no_such_probe.hits > 0}\n")
    with pytest.raises(UserError):
        load_all_expectations(f)


def test_workload_that_does_not_age_kvm_is_not_judged_on_aging():
    r = run({"workload.seconds": 3.0})
    r.ages_kvm = False  # e.g. workloads/crash-zoo.yaml
    steps = by_name(verdict_steps(r, load_expectations(PATCHES_DIR / "expectations.yaml", "baseline")))
    assert steps["verdict page-idle: path exercised"].status == SKIPPED
    assert steps["expect page-idle: aging takes mmu_lock for write"].status == SKIPPED
    assert "does not age KVM memory" in steps["verdict page-idle: path exercised"].message


def test_crash_zoo_declares_it_does_not_age_kvm():
    from orchestrator.workload.definitions import load_workload
    assert load_workload("crash-zoo").ages_kvm is False and load_workload("mglru-aging").ages_kvm is True
