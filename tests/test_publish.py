"""What the scheduler publishes after each cell and at the end (issue 25): after
a cell only junit.xml (cheap: no statistics, no plots), the human reports and
KCIDB once at the end.  On the cell records of a real run (tests/fixtures/report/smoke2)."""
from __future__ import annotations

import time
from pathlib import Path

from junitparser import JUnitXml

from orchestrator.matrix.spec import load_matrix
from orchestrator.reports.publish import publish_final, publish_progress
from orchestrator.reports.results import CellRecord

SMOKE2 = Path(__file__).resolve().parent / "fixtures" / "report" / "smoke2"


def _records() -> list[tuple[CellRecord, Path]]:
    return [(CellRecord.load(d), d) for d in sorted((SMOKE2 / "cells").iterdir())]


def test_after_a_cell_only_junit_is_written_and_it_holds_every_cell_so_far(tmp_path):
    matrix = load_matrix(SMOKE2 / "matrix.yaml")
    records = _records()
    for n in range(1, len(records) + 1):
        publish_progress(matrix, records[:n], tmp_path)
        assert len(list(JUnitXml.fromfile(str(tmp_path / "junit.xml")))) == n
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junit.xml"]


def test_publishing_a_cell_takes_well_under_half_a_second(tmp_path):
    matrix = load_matrix(SMOKE2 / "matrix.yaml")
    records = _records()
    publish_progress(matrix, records, tmp_path)  # first call: imports, data files read
    # CPU time, not wall time: a CI machine shared with builds must not make this flaky.
    t0 = time.process_time()
    publish_progress(matrix, records, tmp_path)
    assert time.process_time() - t0 < 0.5


def test_the_end_of_a_run_writes_every_report(tmp_path):
    matrix = load_matrix(SMOKE2 / "matrix.yaml")
    records = _records()
    headline = publish_final(matrix, records, {}, tmp_path, None)
    assert {"junit.xml", "summary.md", "report.html", "kcidb.json"} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "summary.md").read_text().startswith("# Matrix `smoke2`: 4 cell(s)")
    assert sum(headline.counts.values()) == 4
