"""The same crash across two runs is the same fingerprint: real LKDTM console
logs of the project's 6.12 kernel (tests/fixtures/crashes/, crash-zoo set)."""
from __future__ import annotations

from pathlib import Path

from orchestrator.reports.crashes import crash_lines, crash_record
from orchestrator.parsers.crashlog import find_crashes
from orchestrator.reports.results import CellRecord

CRASHES = Path(__file__).parent / "fixtures" / "crashes"


def cell(key: str, *logs: str) -> CellRecord:
    rec = CellRecord(key, {"key": key}, "", "")
    for log in logs:
        rec.crashes += [crash_record(c) for c in find_crashes((CRASHES / log).read_text(errors="replace"))]
    return rec


def test_same_warning_in_two_runs_is_one_crash_and_a_new_one_is_named():
    a = [cell("baseline.r1", "WARNING.log")]
    b = [cell("baseline.r1", "WARNING.log"), cell("baseline.r2", "BUG.log")]
    lines = crash_lines(a, b, "last-week", "today")
    warning = next(c for c in a[0].crashes if c["title"].startswith("WARNING"))
    same = [ln for ln in lines if ln.startswith("- same crash in both:")]
    assert len(same) == 1 and warning["title"] in same[0] and warning["fingerprint"] in same[0]
    assert any(ln.startswith("- new in today: ") for ln in lines)
    assert not any(ln.startswith("- only in last-week") for ln in lines)


def test_records_keep_title_kind_fingerprint():
    rec = cell("x", "WARNING.log")
    assert rec.crashes and set(rec.crashes[0]) == {"title", "kind", "fingerprint", "corrupted"}
    assert len(rec.crashes[0]["fingerprint"]) == 16


def test_no_reports_no_lines():
    assert crash_lines([cell("a")], [cell("b")], "A", "B") == []


def test_report_section_lists_each_crash_once_with_its_cells():
    from orchestrator.reports.crashes import crash_section
    text = crash_section([cell("v4.r1", "WARNING.log"), cell("v4.r2", "WARNING.log")])
    assert text.count("WARNING") >= 1 and "2 cell(s): `v4.r1`, `v4.r2`" in text
    assert crash_section([cell("a")]) is None
