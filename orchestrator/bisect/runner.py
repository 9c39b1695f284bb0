"""One run of one prefix: build the series' first k patches in the variant
builds' shared object directory (only what changed since the last build is
recompiled; builds take the tree lock like every build), then, unless only
the build is bisected, run the cell on it through matrix/cell.run_cell.

Every run is written to RUNS/p<k>-r<i>-<mode>/ as it finishes (run.json
last, atomically): a run with run.json is done and is reused on resume, and
by any other check bisected on the same series and cell (a run's record
does not depend on the check)."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator.atomic import write_json_atomic
from orchestrator.kernel.series import Patch, Series
from orchestrator.kernel.variants import resolve
from orchestrator.matrix.cell import run_cell
from orchestrator.matrix.cell_build import BuildOutcome, build_cell_kernel
from orchestrator.matrix.cell_key import cell_inputs_key
from orchestrator.matrix.options import RunOptions
from orchestrator.matrix.spec import Cell, Matrix, WorkloadRef
from orchestrator.reports.results import CellRecord


@dataclass(frozen=True)
class Target:
    """What is bisected: a source, a series (or a named variant of it) and one cell."""
    source: str | None
    series: Path
    variant: str | None
    config_set: str
    machine: str
    workload: str
    params: tuple[tuple[str, object], ...] = ()

    def identity(self) -> dict:
        return {"source": self.source, "series": str(self.series.resolve()), "variant": self.variant,
                "config_set": self.config_set, "machine": self.machine, "workload": self.workload,
                "params": dict(self.params)}

    def load(self) -> tuple[str, Series | None]:
        return resolve(self.series, self.variant)


@dataclass
class Run:
    """One run of prefix k (repeat i) as stored in run.json."""
    prefix: int
    repeat: int
    mode: str  # "build": the build alone; "cell": build + boot + workload + verdicts
    seconds: float  # wall time of this run (build included)
    build_s: float  # wall time of the build in this run (a cache hit is ~0)
    build_cost_s: float  # what building this prefix took when it was built (incremental, in the shared objdir)
    cache_hit: bool
    kernel: str  # build key, "" when it did not build
    started: float = field(default_factory=time.time)

    @property
    def run_s(self) -> float:
        return max(0.0, self.seconds - self.build_s)


def run_dir(runs: Path, k: int, repeat: int, mode: str) -> Path:
    return runs / f"p{k}-r{repeat}-{mode}"


def load_run(d: Path) -> tuple[Run, CellRecord] | None:
    """A finished run (run.json is written last), else None."""
    try:
        run = Run(**json.loads((d / "run.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None
    rec = CellRecord.load(d)
    return (run, rec) if rec is not None else None


class PrefixRunner:
    """Builds and runs prefixes of one target; finished runs are found on disk first."""

    def __init__(self, target: Target, runs: Path, *, boot_silence_s: float = 120.0, boot_overall_s: float = 600.0):
        self.target = target
        self.runs = runs
        self.label, series = target.load()
        self.patches: list[Patch] = list(series.patches) if series is not None else []
        self.builds: dict[int, BuildOutcome] = {}
        self.opts = RunOptions(results_dir=runs, matrix_arg=str(target.series), boot_silence_s=boot_silence_s,
                               boot_overall_s=boot_overall_s)
        self.last_cached = False  # whether the last run() came from disk
        self.reproducer = ""  # the bisection's one-line command, shown with every run's failures
        self._matrix = Matrix(path=target.series, name="bisect", source=target.source, series=target.series, cells=[])

    def cell(self, k: int, repeat: int) -> Cell:
        return Cell(f"{self.label}@{k}", self.target.config_set, self.target.machine,
                    WorkloadRef(self.target.workload, tuple(sorted(self.target.params))), repeat)

    def cached(self, k: int, repeat: int, build_only: bool) -> tuple[Run, CellRecord] | None:
        modes = ("build", "cell") if build_only else ("cell",)
        for mode in modes:
            if (hit := load_run(run_dir(self.runs, k, repeat, mode))) is not None:
                return hit
        return None

    def run(self, k: int, repeat: int, build_only: bool) -> tuple[Run, CellRecord]:
        """Prefix k, repeat `repeat` (0-based): from disk if done, else built and run now."""
        self.last_cached = (hit := self.cached(k, repeat, build_only)) is not None
        if hit is not None:
            return hit
        mode = "build" if build_only else "cell"
        d = run_dir(self.runs, k, repeat, mode)
        t0 = time.monotonic()
        first = k not in self.builds
        if first:
            self.builds[k] = build_cell_kernel(self._matrix, self.target.variant, self.target.config_set, prefix=k)
        built = self.builds[k]
        build_s = time.monotonic() - t0
        vb = built.build
        meta = vb.kernel.metadata if vb is not None else {}
        cost = float((meta.get("durations_s") or {}).get("total", build_s)) if vb is not None else build_s
        cell = self.cell(k, repeat + 1)
        if build_only:
            rec = CellRecord(cell.key, cell.to_json(), "", self.reproducer, list(built.steps), complete=True)
            rec.save(d)
        else:  # a prefix that does not build still gets its record: "no kernel: see the build steps"
            rec = run_cell(cell, built, self.opts, d, cell_inputs_key(cell, vb))
            rec.reproducer = self.reproducer or rec.reproducer
            rec.complete = True
            rec.save(d)
        run = Run(k, repeat, mode, round(time.monotonic() - t0, 2), round(build_s, 2), round(cost, 2),
                  bool(vb is not None and vb.kernel.cache_hit) or not first, vb.kernel.key if vb is not None else "")
        write_json_atomic(d / "run.json", asdict(run))
        return run, rec

    def cell_dir(self, run: Run) -> Path:
        return run_dir(self.runs, run.prefix, run.repeat, run.mode)
