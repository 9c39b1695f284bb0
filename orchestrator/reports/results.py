"""Per-cell results on disk, written as they are produced.

Each step is appended and the cell record rewritten atomically, so an
interrupted run keeps every finished step and --resume can tell what is done.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator import atomic
# Steps and their statuses are the judge's; a cell record is a list of them.
from orchestrator.judge.steps import ERROR, FAILED, PASSED, SKIPPED, Step  # noqa: F401 - re-exported

NOT_RUN = "not run"  # a cell status only: the cell never started or never finished

# Exit status of a run, of `merge` and of `report`: one rule for all three.
EXIT_OK, EXIT_FAIL, EXIT_INFRA = 0, 1, 2


@dataclass
class CellRecord:
    key: str
    cell: dict
    inputs_key: str  # content key of everything the cell depends on (for --resume)
    reproducer: str
    steps: list[Step] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    complete: bool = False
    # Kernel reports seen in the cell: {title, kind, fingerprint, corrupted}; the
    # fingerprint is what `compare`/`merge` match to say "the same crash".
    crashes: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    # What ran the guest (target/base.Target.identity(): kind, QEMU version or
    # lab and device type); the KCIDB environment is drawn from it.
    target: dict = field(default_factory=dict)
    # A suite workload's results, one per test (parsers/ktap.TestResult as a dict):
    # {name, status, reason, number, seconds, output, subtests}.
    testcases: list[dict] = field(default_factory=list)
    # Where the cell stood in its run's plan (1-based; 0: not recorded) and when it
    # ended: reports/run_order.py checks the order cells started in and which ran alone.
    planned: int = 0
    ended: float = 0.0

    @property
    def status(self) -> str:
        """error > failed > not run > passed.  A cell that did not finish
        (interrupted, a shard that died) is "not run" unless a step already
        failed: only a finished cell can pass."""
        statuses = {s.status for s in self.steps}
        if ERROR in statuses:
            return ERROR
        if FAILED in statuses:
            return FAILED
        if not self.complete:
            return NOT_RUN
        return PASSED

    def add(self, step: Step, directory: Path | None = None) -> Step:
        self.steps.append(step)
        if directory is not None:
            self.save(directory)
        return step

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # fsync: cell.json is what --resume trusts after a crash of the host.
        atomic.write_json_atomic(directory / "cell.json", asdict(self), sort_keys=False, fsync=True)

    @staticmethod
    def load(directory: Path) -> "CellRecord | None":
        try:
            data = json.loads((directory / "cell.json").read_text())
            steps = [Step(**s) for s in data.pop("steps")]
            return CellRecord(steps=steps, **data)
        except (OSError, ValueError, TypeError, KeyError):
            return None


def write_json_atomic(path: Path, data) -> None:
    """A results file (sorted keys), its directory made if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json_atomic(path, data)


def exit_status(statuses: "set[str] | list[str]") -> int:
    """1 when something under test failed; else 2 when an error (bad input,
    infrastructure) or a cell that did not run leaves the answer open; else 0.
    No cells at all is 2: there is nothing to vouch for."""
    statuses = set(statuses)
    if FAILED in statuses:
        return EXIT_FAIL
    if not statuses or ERROR in statuses or NOT_RUN in statuses:
        return EXIT_INFRA
    return EXIT_OK


@dataclass
class RunResults:
    """A results directory read back: what matrix.json planned and the cell records."""
    directory: Path
    name: str
    compare: list[tuple[str, str]]
    variants: list[str]  # in matrix order
    records: list[tuple[CellRecord, Path | None]]


def not_run_record(cell: dict, reproducer: str = "", why: str = "the run ended before this cell") -> CellRecord:
    return CellRecord(str(cell.get("key", "")), cell, "", reproducer, [Step("not run", SKIPPED, 0.0, why)])


def load_run(directory: Path) -> RunResults:
    """matrix.json + cells/*/cell.json.  A planned cell without a record (its
    shard died, the run was cut short) comes back as "not run"."""
    from orchestrator.errors import UserError
    meta_path = directory / "matrix.json"
    if not meta_path.is_file():
        raise UserError(f"{directory} has no matrix.json: not a run-matrix results directory",
                        hint="pass the directory given to ./run-matrix --results (it holds matrix.json and cells/)")
    try:
        meta = json.loads(meta_path.read_text())
        planned = [c for c in meta.get("cells", []) if isinstance(c, dict) and c.get("key")]
    except (ValueError, AttributeError) as exc:
        raise UserError(f"{meta_path}: not the JSON run-matrix writes ({exc})",
                        hint="re-run ./run-matrix, or restore the file from the CI artifact") from None
    records: list[tuple[CellRecord, Path | None]] = []
    seen: set[str] = set()
    for cell in planned:
        cell_dir = directory / "cells" / cell["key"]
        rec = CellRecord.load(cell_dir)
        if rec is None:
            records.append((not_run_record(cell), None))
        else:
            records.append((rec, cell_dir))
        seen.add(cell["key"])
    # Records of cells matrix.json does not list (an older run in the same place) still count.
    for cell_dir in sorted((directory / "cells").glob("*")):
        if cell_dir.name not in seen and (rec := CellRecord.load(cell_dir)) is not None:
            records.append((rec, cell_dir))
    variants = list(dict.fromkeys([c.get("variant") for c in planned] + [r.cell.get("variant") for r, _ in records]))
    compare = [tuple(p) for p in meta.get("compare", []) if isinstance(p, (list, tuple)) and len(p) == 2]
    return RunResults(directory, str(meta.get("name", directory.name)), compare, [v for v in variants if v], records)
