#!/usr/bin/env python3
"""Publishing benchmark (issue 25): the dead time between cells and the final
reports of the default matrix, through the scheduler's publishing path.  Not a
test: results go to bench/README.md.

    .venv/bin/python bench/publish_bench.py [--matrix default] [--runs 3]

The cells are the matrix's own (matrices/default.yaml: 25 cells); each cell's
record is a real one from tests/fixtures/report/smoke2/ (a recorded run of the
same page-idle workload on baseline and v4-fixed, machines default and smp4),
re-keyed to the matrix cell it stands for, with its metrics scaled by a small
per-repeat factor so the statistics see spread.  For every cell, in run order,
it does what matrix/scheduler.py does when a cell finishes (save cell.json,
append the record, reports.publish.publish_progress) and times that; then
reports.publish.publish_final once, as at the end of a run.  Both are the
functions the scheduler calls, so the figures are the run's dead time.

`before` is the publishing of 5ec5dcd, kept here to measure against in the
same run: after every cell junit.xml and the human reports (write_reports).
Runs alternate before/after so both see the same machine.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.matrix.spec import load_matrix  # noqa: E402
from orchestrator.reports.publish import publish_final, publish_progress  # noqa: E402
from orchestrator.reports.results import CellRecord  # noqa: E402
from orchestrator.judge.steps import Step  # noqa: E402
from orchestrator.reports.junit import write_junit  # noqa: E402
from orchestrator.reports.summary import write_reports  # noqa: E402

RECORDED = ROOT / "tests" / "fixtures" / "report" / "smoke2" / "cells"


def recorded() -> dict[tuple[str, str], dict]:
    """(variant, machine) -> a real cell record (as JSON)."""
    out = {}
    for path in sorted(RECORDED.glob("*/cell.json")):
        data = json.loads(path.read_text())
        out[(data["cell"]["variant"], data["cell"]["machine"])] = data
    return out


def record_for(cell, pool: dict) -> CellRecord:
    variant = cell.variant if (cell.variant, cell.machine) in pool else "v4-fixed"  # v4: the patched record
    data = copy.deepcopy(pool[(variant, cell.machine)])
    factor = 1.0 + 0.013 * cell.repeat + (0.021 if cell.variant == "v4" else 0.0)
    data["metrics"] = {k: (v * factor if isinstance(v, (int, float)) else v) for k, v in data["metrics"].items()}
    data["key"] = cell.key
    data["cell"] = cell.to_json()
    steps = [Step(**s) for s in data.pop("steps")]
    data.pop("crashes", None)
    return CellRecord(steps=steps, **data)


def publish_progress_before(matrix, records, out: Path) -> None:
    """publish_progress as it was before issue 25."""
    write_junit(records, out / "junit.xml")
    write_reports(matrix, records, out)


def one_run(matrix, pool: dict, out: Path, progress) -> tuple[list[float], float]:
    (out / "cells").mkdir(parents=True)
    records: list = []
    between = []
    for cell in matrix.cells:
        rec = record_for(cell, pool)
        t0 = time.perf_counter()
        # what scheduler.run_cells' finished() does after run_cell returns
        rec.complete = True
        rec.save(out / "cells" / cell.key)
        records.append((rec, out / "cells" / cell.key))
        progress(matrix, records, out)
        between.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    publish_final(matrix, records, {}, out, None)
    final = time.perf_counter() - t0
    for name in ("junit.xml", "summary.md", "report.html", "kcidb.json"):
        if not (out / name).is_file():
            raise SystemExit(f"publish_final did not write {name}")
    return between, final


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", default="default")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    matrix = load_matrix(args.matrix)
    pool = recorded()
    print(f"matrix {matrix.name}: {len(matrix.cells)} cells; {args.runs} run(s)")
    figures: dict[str, tuple[list[float], list[float]]] = {"before": ([], []), "after": ([], [])}
    for run in range(1, args.runs + 1):
        order = [("before", publish_progress_before), ("after", publish_progress)]
        for name, progress in order if run % 2 else order[::-1]:
            with tempfile.TemporaryDirectory(prefix="publish-bench-") as tmp:
                between, final = one_run(matrix, pool, Path(tmp) / matrix.name, progress)
            figures[name][0].extend(between)
            figures[name][1].append(final)
            print(f"run {run} {name:6}: between cells median {statistics.median(between):.3f} s, "
                  f"max {max(between):.3f} s, sum {sum(between):.1f} s; final reports {final:.2f} s", flush=True)
    (b_between, b_final), (a_between, a_final) = figures["before"], figures["after"]
    print(f"between cells (median of all cells): before {statistics.median(b_between):.3f} s, "
          f"after {statistics.median(a_between):.3f} s, ratio {statistics.median(a_between) / statistics.median(b_between):.3f}")
    print(f"between cells (max): before {max(b_between):.3f} s, after {max(a_between):.3f} s")
    print(f"final reports (median of runs): before {statistics.median(b_final):.2f} s, "
          f"after {statistics.median(a_final):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
