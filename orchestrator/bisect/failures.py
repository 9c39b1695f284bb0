"""`orchestrator bisect RESULTS`: bisect every failing cell of a finished run
on the check it failed first, each in RESULTS/bisect/<cell>/, and link the
answers from the run's summary.md (RESULTS/bisect/index.md holds the lines)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from orchestrator.atomic import write_text_atomic
from orchestrator.bisect.checks import check_for_failure
from orchestrator.bisect.report import summary_line
from orchestrator.bisect.run import BisectRequest, Bisection
from orchestrator.bisect.runner import Target
from orchestrator.errors import UserError
from orchestrator.matrix.spec import load_matrix
from orchestrator.reports.results import FAILED, CellRecord, load_run
from orchestrator.reports.suite_tests import path_prefix

SECTION = "## Bisections"


def bisect_failures(results: Path, *, repeats: int = 1, mode: str = "majority", verify: bool = True) -> list[Path]:
    run = load_run(results)
    meta = json.loads((results / "matrix.json").read_text())
    matrix = load_matrix(meta.get("matrix"))
    failing = [(rec, d) for rec, d in run.records if rec.status == FAILED]
    if not failing:
        raise UserError(f"{results}: no failing cell to bisect", hint="bisect a run with a failed cell, or use --check")
    done: dict[tuple, Path] = {}
    lines: list[str] = []
    for rec, _ in failing:
        check = check_for_failure(rec, passed_elsewhere=passed_elsewhere(rec, [r for r, _ in run.records]))
        if check is None:
            continue
        c = rec.cell
        target = Target(matrix.source, matrix.series, c.get("variant"), c.get("config_set"), c.get("machine"),
                        c.get("workload"), tuple(sorted((c.get("params") or {}).items())))
        key = (json.dumps(target.identity(), sort_keys=True), check.text)
        if key in done:  # repeats of one cell failing the same way: one bisection
            continue
        out = results / "bisect" / f"{c.get('variant')}.{c.get('config_set')}.{c.get('machine')}.{c.get('workload')}"
        b = Bisection(BisectRequest(target, check, out, repeats=repeats, mode=mode, verify=verify))
        result = b.run()
        done[key] = b.dir
        rel = (b.dir / "bisect.md").relative_to(results).as_posix()
        lines.append(summary_line(asdict(result), rel))
    link_from_summary(results, lines)
    return list(done.values())


def passed_elsewhere(rec: CellRecord, records: list[CellRecord]) -> set[str]:
    """The suite tests (JUnit paths) that passed in another variant's cell of
    the same workload, parameters, config set and machine: a failing test among
    them is a regression, the one worth bisecting (a test failing everywhere
    fails on the base too)."""
    same = ("workload", "params", "config_set", "machine")
    out: set[str] = set()
    for other in records:
        if other.cell.get("variant") == rec.cell.get("variant") or any(
                other.cell.get(k) != rec.cell.get(k) for k in same):
            continue
        prefix = path_prefix(other.cell)
        out.update(f"{prefix}.{c.get('name')}" for c in other.testcases if c.get("status") == "pass")
    return out


def link_from_summary(results: Path, lines: list[str]) -> None:
    """bisect/index.md, and the same lines as a section at the end of summary.md."""
    text = "\n".join([SECTION, "", *lines, ""])
    write_text_atomic(results / "bisect" / "index.md", text)
    summary = results / "summary.md"
    old = summary.read_text() if summary.is_file() else ""
    old = old.split("\n" + SECTION + "\n", 1)[0].rstrip("\n")
    write_text_atomic(summary, (old + "\n\n" if old else "") + text)
