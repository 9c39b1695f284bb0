"""Per-cell results on disk, written as they are produced.

Each step is appended and the cell record rewritten atomically, so an
interrupted run keeps every finished step and --resume can tell what is done.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"


@dataclass
class Step:
    name: str  # e.g. "build", "boot", "nested-kvm", "workload page-idle", "verdict path-exercised"
    status: str  # passed | failed | error | skipped
    seconds: float = 0.0
    message: str = ""
    excerpt: str = ""  # first compiler error, crash excerpt, last console lines ...
    output: str = ""  # short system-out (workload output etc.)


@dataclass
class CellRecord:
    key: str
    cell: dict
    inputs_key: str  # content key of everything the cell depends on (for --resume)
    reproducer: str
    steps: list[Step] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    complete: bool = False
    started: float = field(default_factory=time.time)

    @property
    def status(self) -> str:
        statuses = {s.status for s in self.steps}
        if ERROR in statuses:
            return ERROR
        if FAILED in statuses:
            return FAILED
        return PASSED

    def add(self, step: Step, directory: Path | None = None) -> Step:
        self.steps.append(step)
        if directory is not None:
            self.save(directory)
        return step

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        tmp = directory / "cell.json.tmp"
        with tmp.open("w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(directory / "cell.json")

    @staticmethod
    def load(directory: Path) -> "CellRecord | None":
        try:
            data = json.loads((directory / "cell.json").read_text())
            steps = [Step(**s) for s in data.pop("steps")]
            return CellRecord(steps=steps, **data)
        except (OSError, ValueError, TypeError, KeyError):
            return None


def write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)
