"""A suite workload's per-test results (`results: ktap`), from what the run
left: the runner's output when the run ended, else the copy of every line
it wrote to the serial console (guest/workloads/kselftest-kvm.sh), which
the host keeps even when the guest kernel dies or stops answering.

The test running when the run ended fails with how it ended (kernel crash
and its title, no answer from the guest, the time limit); the planned tests
after it are "not run", never missing.
"""
from __future__ import annotations

from pathlib import Path

from orchestrator.parsers.ktap import KtapDocument, TestResult, parse_ktap, results_with_plan

PLAN_MARK = "# orch-plan:"


def _console_part(text: str) -> str:
    """The last suite run in a console log: from the TAP line before its plan mark."""
    text = text.replace("\r\n", "\n").replace("\r", "")
    at = text.rfind(PLAN_MARK)
    if at < 0:
        return ""
    start = text.rfind("TAP version", 0, at)
    return text[start if start >= 0 else at:]


def _has_run(doc: KtapDocument) -> bool:
    return bool(doc.tests or doc.planned or doc.plan is not None)


def suite_testcases(output: str, console_log: Path | None, *, ended_by: str = "", crash_title: str = "") -> list[TestResult]:
    """One result per planned test.  `ended_by` says why the run did not end
    normally ("" if it did); `crash_title`, the kernel report seen during it."""
    doc = parse_ktap(output) if output else KtapDocument([], None)
    if not _has_run(doc) or not doc.complete:
        text = ""
        if console_log is not None and console_log.is_file():
            text = _console_part(console_log.read_text(errors="replace"))
        from_console = parse_ktap(text) if text else KtapDocument([], None)
        if len(from_console.tests) > len(doc.tests) or not _has_run(doc):
            doc = from_console
    if doc.complete and not ended_by and not crash_title:
        return doc.tests
    why = (f"kernel crash: {crash_title}" if crash_title else ended_by) or "the output ends here (truncated)"
    return results_with_plan(doc, why_unfinished=why)


def suite_testcases_after_fault(console_log: Path | None, fault: str) -> list[TestResult]:
    """The results when the guest died or stopped answering mid-suite (the
    workload stage raised): the console copy, the running test failed with
    the kernel report's title when the console shows one, else `fault`."""
    from orchestrator.parsers.crashlog import find_crashes
    title = ""
    if console_log is not None and console_log.is_file():
        text = console_log.read_text(errors="replace")
        at = text.rfind(PLAN_MARK)
        crashes = find_crashes(text[at:] if at >= 0 else text)
        title = crashes[0].title if crashes else ""
    return suite_testcases("", console_log, ended_by=fault, crash_title=title)
