"""Between runs (reports/replication.py) on seeded synthetic runs written as
results directories: runs that agree pool to a narrower interval; runs that
differ by more than their own noise get a named between-run variance, a
widened interval, and no call; the family-wise false-call rate of pooled
A/A comparisons stays at alpha."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from orchestrator.reports import replication as rep
from orchestrator.reports.results import PASSED, CellRecord, Step

PARAMS = {"vcpus": 2}


def write_run(directory: Path, rng: np.random.Generator, shift: float, noise: float = 0.05, n: int = 6) -> Path:
    """A results directory: baseline and v4-fixed timing cells of mglru-aging with the
    workload's avg aging pass, v4-fixed's multiplied by exp(shift)."""
    cells = []
    for variant, factor in (("baseline", 1.0), ("v4-fixed", math.exp(shift))):
        for r in range(1, n + 1):
            cell = {"key": f"{variant}.timing.default.mglru-aging.r{r}", "variant": variant, "config_set": "timing",
                    "machine": "default", "workload": "mglru-aging", "params": PARAMS, "repeat": r}
            rec = CellRecord(cell["key"], cell, "k", "", [Step("workload mglru-aging", PASSED, 1.0)],
                             {"mglru.aging_avg_s": 0.03 * factor * math.exp(rng.normal(0, noise))}, True)
            rec.save(directory / "cells" / cell["key"])
            cells.append(cell)
    (directory / "matrix.json").write_text(json.dumps({"name": "t", "cells": cells, "compare": [["baseline", "v4-fixed"]]}))
    return directory


def test_runs_that_agree_pool_and_call_a_shared_change(tmp_path):
    rng = np.random.default_rng(1)
    dirs = [write_run(tmp_path / f"run{i}", rng, shift=math.log(1.15)) for i in (1, 2)]
    [c] = rep.pool_runs([rep.load_run(d) for d in dirs], ["run1", "run2"])
    assert c.overlap and c.called and c.verdict == "up"
    assert c.tau < 0.02  # no between-run variance to speak of
    assert c.se <= math.hypot(min(e.se for e in c.runs), c.tau) + 1e-12  # widened by tau, never more
    text = rep.between_runs(dirs)
    assert "All 1 comparison(s) have overlapping per-run intervals" in text and "| up |" in text


def test_runs_that_differ_name_the_between_run_variance_and_call_nothing(tmp_path):
    # The same kernels, but run 2's v4-fixed was 25% slower (another boot, another host state).
    rng = np.random.default_rng(2)
    dirs = [write_run(tmp_path / "run1", rng, shift=0.0), write_run(tmp_path / "run2", rng, shift=math.log(1.25))]
    [c] = rep.pool_runs([rep.load_run(d) for d in dirs], ["run1", "run2"])
    assert not c.overlap
    assert c.tau_pct > 10  # named: the runs differ by more than their own noise
    lo, hi = c.ci_pct
    assert lo < 0 < hi and not c.called  # widened by it: the second run's change does not survive
    text = rep.between_runs(dirs)
    assert "**0 of 1 comparison(s) have overlapping per-run intervals; 1 do not**" in text
    assert "With two runs tau rests on one difference" in text


def test_pooled_aa_family_wise_false_call_rate_is_at_most_alpha():
    # 500 reports of 6 A/A comparisons over 3 runs each (no between-run variance): Holm over the family.
    rng = np.random.default_rng(3)
    false_reports = 0
    for _ in range(500):
        pooled = []
        for _ in range(6):
            effects = []
            for run in range(3):
                y = float(rng.normal(0, 0.02))
                effects.append(rep.RunEffect(str(run), y, 0.02, (-1.0, 1.0), (6, 6)))
            shift, se, tau = rep.dersimonian_laird([e.shift for e in effects], [e.se for e in effects])
            p = float(2 * rep.sps.norm.sf(abs(shift) / se))
            pooled.append(rep.Pooled(None, "a", "b", _metric(), True, tuple(effects), tau, shift, se, p))
        false_reports += any(c.called for c in rep.judge_pooled(pooled))
    assert false_reports / 500 <= 0.05


def _metric():
    from orchestrator.workload.definitions import ComparedMetric
    return ComparedMetric("m", "m", "", "lower", 10)


def test_cli_between_runs(tmp_path, capsys):
    from orchestrator.cli import main
    rng = np.random.default_rng(4)
    dirs = [write_run(tmp_path / f"r{i}", rng, 0.0) for i in (1, 2)]
    assert main(["between-runs", *map(str, dirs), "--markdown", str(tmp_path / "b.md")]) == 0
    out = capsys.readouterr().out
    assert "## Between runs" in out and "MGLRU aging pass average" in out and (tmp_path / "b.md").read_text() in out
    assert main(["between-runs", str(dirs[0])]) != 0
    assert "at least two results directories" in capsys.readouterr().err
