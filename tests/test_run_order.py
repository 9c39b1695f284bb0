"""Run order as it happened: timed cells start alone whatever --jobs says
(matrix/scheduler.run_in_order, real threads), and the report's Order section checks the
recorded start order against the plan (reports/run_order.py) on the records
of a real aging-study run (tests/fixtures/aging-study/)."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.matrix.scheduler import run_in_order
from orchestrator.reports import run_order
from orchestrator.reports.results import CellRecord, Step

FIXTURE = Path(__file__).parent / "fixtures" / "aging-study" / "cells.json"


def _run(jobs: list[tuple[str, bool]], width: int, seconds: float = 0.3) -> dict[str, tuple[float, float]]:
    """Each job sleeps `seconds` in a pool thread; returns name -> (start, end)."""
    spans: dict[str, tuple[float, float]] = {}
    lock = threading.Lock()
    order: list[str] = []

    def work(job: tuple[str, bool]) -> tuple[float, float]:
        start = time.monotonic()
        time.sleep(seconds)
        return start, time.monotonic()

    def finished(job: tuple[str, bool], span: tuple[float, float]) -> None:
        with lock:
            spans[job[0]] = span
            order.append(job[0])

    run_in_order(jobs, width, lambda job: job[1], work, finished, poll_s=0.05)
    assert threading.current_thread() is threading.main_thread()
    return spans


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_two_timed_cells_with_jobs_2_run_one_at_a_time():
    spans = _run([("timed-1", True), ("timed-2", True)], width=2)
    assert not _overlap(spans["timed-1"], spans["timed-2"])
    assert spans["timed-1"][1] <= spans["timed-2"][0]  # and in plan order


def test_untimed_cells_share_the_host_and_a_timed_cell_waits_for_them():
    spans = _run([("ev-1", False), ("ev-2", False), ("timed", True), ("ev-3", False), ("ev-4", False)], width=2)
    assert _overlap(spans["ev-1"], spans["ev-2"]) and _overlap(spans["ev-3"], spans["ev-4"])  # --jobs 2 is used
    for other in ("ev-1", "ev-2", "ev-3", "ev-4"):
        assert not _overlap(spans["timed"], spans[other]), other
    assert max(spans["ev-1"][1], spans["ev-2"][1]) <= spans["timed"][0] <= spans["timed"][1] <= spans["ev-3"][0]


def test_a_failing_job_stops_new_starts_and_is_raised():
    started: list[str] = []

    def work(job):
        started.append(job[0])
        if job[0] == "bad":
            raise RuntimeError("boom")
        return None

    with pytest.raises(RuntimeError, match="boom"):
        run_in_order([("bad", True), ("after", True)], 2, lambda j: j[1], work, lambda j, r: None, poll_s=0.05)
    assert started == ["bad"]


@pytest.fixture(scope="module")
def ran() -> list[CellRecord]:
    """The real run's records (run with --jobs 1), stamped as the scheduler stamps them now:
    plan position = start order, end = just before the next cell started."""
    out = []
    for data in json.loads(FIXTURE.read_text()):
        steps = [Step(**s) for s in data.pop("steps")]
        out.append(CellRecord(steps=steps, **data))
    out.sort(key=lambda r: r.started)
    return [replace(r, planned=i + 1, ended=(out[i + 1].started - 0.5 if i + 1 < len(out) else r.started + 30))
            for i, r in enumerate(out)]


def test_records_in_plan_order_pass_and_timed_cells_ran_alone(ran):
    text = run_order.order_section(ran)
    assert "started in the planned order" in text and run_order.MISMATCH not in text
    timed = sum(1 for r in ran if r.cell["config_set"] == "timing")
    assert f"All {timed} timed cell(s) with a recorded end ran alone" in text and run_order.OVERLAP not in text
    # the carry-over table counts, for each timed cell, the variant that started just before it
    pred = run_order.predecessors(ran)
    assert sum(pred.values()) == timed - (ran[0].cell["config_set"] == "timing")
    assert "| timed cell | after baseline | after baseline-aa | after v4-fixed |" in text


def test_reordered_records_are_flagged(ran):
    # Two timed cells swapped in the plan: the records show them starting the other way round.
    timed = [i for i, r in enumerate(ran) if r.cell["config_set"] == "timing"]
    i, j = timed[3], timed[10]
    swapped = list(ran)
    swapped[i], swapped[j] = replace(ran[i], planned=ran[j].planned), replace(ran[j], planned=ran[i].planned)
    text = run_order.order_section(swapped)
    assert run_order.MISMATCH in text
    # Every cell that started after the one moved up (planned later) but was planned before it is named.
    flagged = run_order.out_of_order(swapped)
    assert [r.key for r, _ in flagged] == [r.key for r in swapped[i + 1:j + 1]]
    assert all(e.key == swapped[i].key for _, e in flagged)
    assert f"`{swapped[j].key}` (planned #{ran[i].planned}) started after `{swapped[i].key}` (planned #{ran[j].planned})" in text


def test_an_overlapping_timed_cell_is_flagged(ran):
    timed = next(i for i, r in enumerate(ran) if r.cell["config_set"] == "timing")
    stretched = list(ran)
    stretched[timed] = replace(ran[timed], ended=ran[timed + 1].started + 5)  # still running when the next started
    text = run_order.order_section(stretched)
    assert run_order.OVERLAP in text and f"`{ran[timed].key}` with `{ran[timed + 1].key}`" in text


def test_records_without_a_plan_position_say_nothing(ran):
    assert run_order.order_section([replace(r, planned=0) for r in ran]) is None


def test_the_cells_the_scheduler_runs_alone_are_the_timed_config_sets(tmp_path):
    # run_cells hands run_in_order `cell.timed`: true for every cell of a config set listed under
    # `timed:` in kernel_configs/sets.yaml (timing), false for the others (evidence), whatever --jobs.
    from orchestrator.matrix.spec import load_matrix
    from orchestrator.workload.timing import timed_config_sets
    p = tmp_path / "m.yaml"
    p.write_text("name: t\nseries: patches\nvariants: [baseline, v4-fixed]\nconfig_sets: [timing, evidence]\n"
                 "workloads: [{name: page-idle, params: {vcpus: 1}}]\nrepeats: {timing: 2, evidence: 1}\n")
    cells = load_matrix(p).cells
    assert "timing" in timed_config_sets() and "evidence" not in timed_config_sets()
    assert {c.key for c in cells if c.timed} == {c.key for c in cells if c.config_set == "timing"} and len(cells) == 6
