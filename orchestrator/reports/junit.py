"""JUnit XML from cell records: one testsuite per cell, one testcase per step.

Failures carry the message and the relevant excerpt; each failing testcase
carries the command that re-runs just its cell; metrics become properties.
A cell that started has the same testcases in every run: the steps an
earlier failure kept from running (verdicts and expectations included) are
skipped with "not run: STEP did not pass", so CI history lines up.
"""
from __future__ import annotations

from pathlib import Path

from junit_xml import TestCase, TestSuite, to_xml_report_string

from orchestrator.atomic import write_text_atomic
from orchestrator.errors import UserError
from orchestrator.paths import PATCHES_DIR
from orchestrator.reports.results import ERROR, FAILED, SKIPPED, CellRecord, Step
from orchestrator.reports.suite_tests import flat_cases

MAX_TEXT = 20000  # bound what one testcase carries; the full logs are on disk


def _clip(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    return text[: MAX_TEXT // 2] + "\n[... clipped; see the cell's files ...]\n" + text[-MAX_TEXT // 2 :]


def planned_steps(cell: dict, expectations: Path = PATCHES_DIR / "expectations.yaml") -> list[str]:
    """Testcase names every started cell has, after its build steps (the names
    matrix.cell.run_cell and verdicts.verdict_steps give them)."""
    from orchestrator.judge.verdicts import load_expectations  # verdicts imports evidence: keep junit light to import
    wl, variant = cell.get("workload", ""), str(cell.get("variant", ""))
    names = ["boot", "nested-kvm", f"workload {wl}", f"verdict {wl}: path exercised", f"verdict {wl}: no kernel warnings"]
    try:
        names += [f"expect {wl}: {e.name}" for e in load_expectations(expectations, variant)]
    except UserError:
        pass  # a broken expectations file is an error step of the run itself
    return names


def with_planned_steps(record: CellRecord) -> list[Step]:
    """The record's steps plus a skipped one for every planned testcase that is
    missing.  A cell that never started keeps its single "not run" testcase."""
    if not record.steps or all(s.name == "not run" for s in record.steps):
        return list(record.steps)
    have = {s.name for s in record.steps}
    stopper = next((s for s in record.steps if s.status in (FAILED, ERROR)), None)
    if stopper is None and record.complete:
        return list(record.steps)  # a finished cell with nothing failed: its steps are the record
    why = f"not run: {stopper.name} did not pass" if stopper else "not run: the cell did not finish"
    return list(record.steps) + [Step(n, SKIPPED, 0.0, why) for n in planned_steps(record.cell) if n not in have]


def suite_for(record: CellRecord, cell_dir: Path | None = None) -> TestSuite:
    cases = []
    for step in with_planned_steps(record):
        tc = TestCase(step.name, classname=record.key, elapsed_sec=round(step.seconds, 3),
                      stdout=_clip(step.output) or None)
        body = step.excerpt
        if step.status in (FAILED, ERROR):
            body = f"{step.excerpt}\n\nreproduce: {record.reproducer}".strip()
        if step.status == FAILED:
            tc.add_failure_info(message=step.message, output=_clip(body))
        elif step.status == ERROR:
            tc.add_error_info(message=step.message, output=_clip(body))
        elif step.status == SKIPPED:
            tc.add_skipped_info(message=step.message)
        cases.append(tc)
    for case in flat_cases(record):  # a suite workload: one testcase per test and subtest
        tc = TestCase(case.path, classname=record.key, elapsed_sec=round(case.seconds, 3), stdout=_clip(case.output) or None)
        if case.status == "fail":
            tc.add_failure_info(message=case.reason or "failed", output=f"reproduce: {record.reproducer}")
        elif case.status in ("skip", "not run"):
            tc.add_skipped_info(message=case.reason or case.status)
        cases.append(tc)
    props = {k: v for k, v in sorted(record.metrics.items())}
    props["reproducer"] = record.reproducer
    if cell_dir is not None:
        props["results_dir"] = str(cell_dir)
    return TestSuite(record.key, cases, properties=props)


def write_junit(records: list[tuple[CellRecord, Path | None]], path: Path) -> None:
    suites = [suite_for(r, d) for r, d in records]
    write_text_atomic(path, to_xml_report_string(suites, prettyprint=True))
