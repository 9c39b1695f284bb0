"""Two real timed cells with --jobs 2 (./run-matrix, the baseline kernel of
the `timing` config set, page-idle): the records show they ran one at a time,
and the report's Run order section says so.  Slow tier: two boots."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.reports.results import load_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def test_two_timed_cells_with_jobs_2_ran_one_at_a_time(tmp_path):
    m = tmp_path / "timed.yaml"
    m.write_text("name: timed-alone\nseries: patches\nvariants: [baseline]\nconfig_sets: [timing]\n"
                 "workloads: [{name: page-idle, params: {vcpus: 1, bytes: 16M}}]\nrepeats: 2\n")
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run-matrix", "--matrix", str(m), "--results",
                          str(out), "--jobs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 timed cell(s) alone" in res.stderr
    recs = sorted((r for r, _ in load_run(out).records), key=lambda r: r.started)
    assert len(recs) == 2 and all(r.planned and r.ended > r.started for r in recs)
    assert recs[0].ended <= recs[1].started  # one at a time
    summary = (out / "summary.md").read_text()
    assert "All 2 timed cell(s) with a recorded end ran alone" in summary
    assert "started in the planned order" in summary
