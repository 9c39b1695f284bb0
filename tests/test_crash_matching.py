"""The same crash across two runs is the same fingerprint: real LKDTM console
logs of the project's 6.12 kernel (tests/fixtures/crashes/, crash-zoo set)."""
from __future__ import annotations

from pathlib import Path

from orchestrator.reports.crashes import crash_lines, crash_record
from orchestrator.parsers.crashlog import find_crashes
from orchestrator.reports.results import CellRecord

CRASHES = Path(__file__).parent / "fixtures" / "crashes"


# One WARNING hit twice by the same guest (tests/fixtures/evidence/README.md):
# through page_idle_bitmap_write (pwrite), then page_idle_bitmap_read (pread):
# other timestamps, registers, taint flags and lower frames, the same top frames.
OOPS_WARNING = Path(__file__).parent / "fixtures" / "evidence" / "console-oops-warning.log"
CUT = "------------[ cut here ]------------"


def warning_occurrence(n: int) -> str:
    """The n-th WARNING report of the captured console, alone (as another run's console would hold it)."""
    chunks = OOPS_WARNING.read_text(errors="replace").split(CUT)[1:]
    warnings = [c for c in chunks if "WARNING: CPU:" in c]
    return CUT + warnings[n].split("---[ end trace")[0] + "---[ end trace 0000000000000000 ]---\n"


def cell(key: str, *logs: str, texts: tuple[str, ...] = ()) -> CellRecord:
    rec = CellRecord(key, {"key": key}, "", "")
    for text in [(CRASHES / log).read_text(errors="replace") for log in logs] + list(texts):
        rec.crashes += [crash_record(c) for c in find_crashes(text)]
    return rec


def test_the_two_occurrences_are_different_text():
    first, second = warning_occurrence(0), warning_occurrence(1)
    assert first != second
    assert "page_idle_bitmap_write" in first and "page_idle_bitmap_read" in second


def test_same_warning_in_two_runs_is_one_crash_and_a_new_one_is_named():
    a = [cell("baseline.r1", texts=(warning_occurrence(0),))]
    b = [cell("baseline.r1", texts=(warning_occurrence(1),)), cell("baseline.r2", "BUG.log")]
    assert len(a[0].crashes) == 1 and len(b[0].crashes) == 1
    warning = a[0].crashes[0]
    assert warning["title"] == "WARNING in kvm_pgtable_stage2_test_clear_young"
    assert b[0].crashes[0]["fingerprint"] == warning["fingerprint"]  # other text, the same crash
    lines = crash_lines(a, b, "last-week", "today")
    same = [ln for ln in lines if ln.startswith("- same crash in both:")]
    assert len(same) == 1 and warning["title"] in same[0] and warning["fingerprint"] in same[0]
    bug = b[1].crashes[0]
    assert bug["fingerprint"] != warning["fingerprint"]
    assert any(ln.startswith("- new in today: ") and bug["title"] in ln for ln in lines)
    assert not any(ln.startswith("- only in last-week") for ln in lines)


def test_records_keep_title_kind_fingerprint():
    rec = cell("x", "WARNING.log")
    assert rec.crashes and set(rec.crashes[0]) == {"title", "kind", "fingerprint", "corrupted"}
    assert len(rec.crashes[0]["fingerprint"]) == 16


def test_no_reports_no_lines():
    assert crash_lines([cell("a")], [cell("b")], "A", "B") == []


def test_report_section_lists_each_crash_once_with_its_cells():
    from orchestrator.reports.crashes import crash_section
    text = crash_section([cell("v4.r1", texts=(warning_occurrence(0),)), cell("v4.r2", texts=(warning_occurrence(1),)),
                          cell("v4.r3", "BUG.log")])
    assert text.count("WARNING in kvm_pgtable_stage2_test_clear_young") == 1
    assert "2 cell(s): `v4.r1`, `v4.r2`" in text and "`v4.r3`" in text
    assert crash_section([cell("a")]) is None
