"""Publishing a run's results: JUnit and the human reports after every cell,
and KCIDB data once at the end (partial runs included)."""
from __future__ import annotations

from pathlib import Path

from orchestrator.reports.junit import write_junit
from orchestrator.reports.kcidb import KcidbOptions, write_kcidb
from orchestrator.reports.results import CellRecord
from orchestrator.reports.compare import Headline
from orchestrator.reports.summary import write_reports

Records = list[tuple[CellRecord, Path | None]]


def publish_progress(matrix, records: Records, out: Path) -> None:
    """After each cell: what is known so far, readable while the run goes on."""
    write_junit(records, out / "junit.xml")
    write_reports(matrix, records, out)


def publish_final(matrix, records: Records, builds: dict, out: Path, kcidb_origin: str | None) -> Headline:
    """At the end of a run (also an interrupted one): JUnit, KCIDB, reports; returns the headline."""
    write_junit(records, out / "junit.xml")
    write_kcidb(KcidbOptions.parse(kcidb_origin), matrix, records, builds, out)
    return write_reports(matrix, records, out)

