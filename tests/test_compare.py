"""`orchestrator compare RESULTS_A RESULTS_B`: cells of two result directories
matched by their inputs except the named axis, on real cell records
(tests/fixtures/race/run: race matrix, evidence, smp4, 3 repeats per variant)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.reports.compare import two_run_headline
from orchestrator.errors import UserError
from orchestrator.reports.summary import headline_markdown
from orchestrator.reports.results import CellRecord, load_run

ROOT = Path(__file__).resolve().parents[1]
RACE = ROOT / "tests" / "fixtures" / "race" / "run"


def _records(variant: str | None = None) -> list[CellRecord]:
    recs = [CellRecord.load(d) for d in sorted((RACE / "cells").iterdir())]
    return [r for r in recs if variant is None or r.cell["variant"] == variant]


def _results(tmp: Path, records: list[CellRecord]) -> Path:
    (tmp / "cells").mkdir(parents=True)
    (tmp / "matrix.json").write_text(json.dumps({"name": "race", "cells": [r.cell for r in records], "compare": []}))
    for r in records:
        r.save(tmp / "cells" / r.key)
    return tmp


def test_by_kernel_matches_the_same_cells_of_two_runs(tmp_path):
    # "Last week" = v4 cells, "today" = the same cells (inputs) measured again: the v4-fixed records
    # relabelled as v4 stand for a rebuilt kernel of the same variant.
    a = _results(tmp_path / "lastweek", _records("v4"))
    today = []
    for r in _records("v4-fixed"):
        r.cell = dict(r.cell, variant="v4", key=r.key.replace("v4-fixed.", "v4."))
        r.key = r.cell["key"]
        today.append(r)
    b = _results(tmp_path / "today", today)
    h = two_run_headline(load_run(a), load_run(b), "kernel")
    assert {(r.a, r.b) for r in h.rows} == {("lastweek", "today")}
    assert {r.group.get("variant") for r in h.rows} == {"v4"}
    row = next(r for r in h.rows if r.metric.metric == "kprobe.age_gfn.hits")
    assert row.comparison.a.n == row.comparison.b.n == 3
    md = headline_markdown(h)
    assert "### lastweek → today · variant v4 · config set evidence · machine smp4 · race (" in md


def test_by_variant_pairs_the_variants_of_the_two_runs(tmp_path):
    a = _results(tmp_path / "a", _records("baseline"))
    b = _results(tmp_path / "b", _records("v4"))
    h = two_run_headline(load_run(a), load_run(b), "variant")
    assert {(r.a, r.b) for r in h.rows} == {("baseline (a)", "v4 (b)")}
    write = next(r for r in h.rows if r.metric.metric == "lock.mmu_lock.write.acquisitions")
    assert write.comparison.b.median < 0.05 * write.comparison.a.median  # v4 takes the read lock


def test_no_common_cells_is_a_clear_error(tmp_path):
    a = _results(tmp_path / "a", _records("baseline"))
    b = _results(tmp_path / "b", _records("v4"))
    with pytest.raises(UserError) as exc:
        two_run_headline(load_run(a), load_run(b), "kernel")
    assert "share their inputs except kernel" in exc.value.message
    assert "variant baseline" in exc.value.hint and "--by" in exc.value.hint


def test_cli_prints_the_headline(tmp_path):
    a = _results(tmp_path / "a", _records("baseline"))
    b = _results(tmp_path / "b", _records("v4"))
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "compare", str(a), str(b), "--by", "variant"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("## Verdict") and "baseline (a) → v4 (b)" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "orchestrator.cli", "compare", str(a), str(b)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "how to fix" in bad.stderr


def test_cells_without_a_counterpart_are_left_out_and_counted(tmp_path):
    # A: every v4 cell; B: the same three v4 cells plus the baseline ones, which A cannot match.
    a = _results(tmp_path / "a", _records("v4"))
    b = _results(tmp_path / "b", _records("v4") + _records("baseline"))
    h = two_run_headline(load_run(a), load_run(b), "kernel")
    assert sum(h.counts.values()) == 6 and {r.group.get("variant") for r in h.rows} == {"v4"}
    assert "3 cell(s) of b have no counterpart in the other run (other inputs) and are left out." in h.notes
    assert "### Expectations per run" in headline_markdown(h)
