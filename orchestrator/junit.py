"""JUnit XML from cell records: one testsuite per cell, one testcase per step.

Failures carry the message and the relevant excerpt; each failing testcase
carries the command that re-runs just its cell; metrics become properties.
"""
from __future__ import annotations

from pathlib import Path

from junit_xml import TestCase, TestSuite, to_xml_report_string

from .results import ERROR, FAILED, SKIPPED, CellRecord

MAX_TEXT = 20000  # bound what one testcase carries; the full logs are on disk


def _clip(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    return text[: MAX_TEXT // 2] + "\n[... clipped; see the cell's files ...]\n" + text[-MAX_TEXT // 2 :]


def suite_for(record: CellRecord, cell_dir: Path | None = None) -> TestSuite:
    cases = []
    for step in record.steps:
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
    props = {k: v for k, v in sorted(record.metrics.items())}
    props["reproducer"] = record.reproducer
    if cell_dir is not None:
        props["results_dir"] = str(cell_dir)
    return TestSuite(record.key, cases, properties=props)


def write_junit(records: list[tuple[CellRecord, Path | None]], path: Path) -> None:
    suites = [suite_for(r, d) for r, d in records]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_xml_report_string(suites, prettyprint=True))
    tmp.replace(path)
