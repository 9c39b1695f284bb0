"""Publishing a run's results.  After every cell only what must survive a
crash of the run: the cell record (saved by the scheduler) and junit.xml, both
cheap.  The human reports (summary.md, report.html with plots: statistics and
matplotlib, seconds for a default matrix) and KCIDB data are written once, at
the end of the run, also an interrupted one (Ctrl-C, SIGTERM), and on demand by
`orchestrator report DIR`: rendering them after every cell stood the run still
for seconds between cells (issue 25, bench/publish_bench.py)."""
from __future__ import annotations

from pathlib import Path

from orchestrator.reports.junit import write_junit
from orchestrator.reports.kcidb import KcidbOptions, write_kcidb
from orchestrator.reports.results import CellRecord
from orchestrator.reports.compare import Headline
from orchestrator.reports.summary import write_reports

Records = list[tuple[CellRecord, Path | None]]


def publish_progress(matrix, records: Records, out: Path) -> None:
    """After each cell: junit.xml with every cell so far (a CI reading it mid-run,
    or after the host died, sees them); summary.md/report.html wait for the end."""
    write_junit(records, out / "junit.xml")


def publish_final(matrix, records: Records, builds: dict, out: Path, kcidb_origin: str | None) -> Headline:
    """At the end of a run (also an interrupted one): JUnit, KCIDB, reports; returns the headline."""
    write_junit(records, out / "junit.xml")
    write_kcidb(KcidbOptions.parse(kcidb_origin), matrix, records, builds, out)
    return write_reports(matrix, records, out)
