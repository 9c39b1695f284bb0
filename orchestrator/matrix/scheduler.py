"""Run a matrix's cells: in order (or several at once with --jobs), building
each kernel once, resuming finished cells, saving each cell's record and
junit.xml after every cell and the full reports at the end.  Ctrl-C / SIGTERM
ends every child, keeps what was measured and marks the rest "not run"; a
full disk stops the run with a message saying where."""
from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from orchestrator import proc
from orchestrator.errors import UserError
from orchestrator.matrix.cell import preflight, reproducer, run_cell
from orchestrator.matrix.cell_build import BuildOutcome, build_cell_kernel, reused
from orchestrator.matrix.cell_key import cell_inputs_key
from orchestrator.matrix.disk_full import disk_full_message, is_disk_full, remove_partial_files
from orchestrator.matrix.options import RunOptions
from orchestrator.matrix.spec import Cell, Matrix
from orchestrator.progress import fmt_duration
from orchestrator.reports.publish import publish_final, publish_progress
from orchestrator.reports.results import ERROR, CellRecord, exit_status, not_run_record, write_json_atomic
from orchestrator.reports.summary import headline_terminal


@dataclass
class RunState:
    records: list[tuple[CellRecord, Path | None]] = field(default_factory=list)
    interrupted: bool = False
    repeats_planned: bool = False  # a `detect_pct` target's repeats were added (once per run)


def run_cells(matrix: Matrix, cells: list[Cell], opts: RunOptions) -> int:
    out = opts.results_dir
    preflight(cells, opts.target)
    try:
        (out / "cells").mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "matrix.json", {"matrix": str(matrix.path), "name": matrix.name,
                                                "cells": [c.to_json() for c in cells],
                                                "compare": matrix.compare})
    except OSError as exc:
        remove_partial_files(out)
        if is_disk_full(exc):
            raise UserError(disk_full_message(exc, out), hint="free space or pass --results elsewhere") from None
        raise UserError(f"cannot write results to {out}: {exc.strerror or exc}",
                        hint="pass --results with a writable directory") from None
    proc.install_signal_handlers()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    state = RunState()
    builds: dict[tuple[str, str], BuildOutcome] = {}
    built_for: dict[tuple[str, str], str] = {}  # kernel -> the cell whose build step carries its time
    start = time.monotonic()
    exit_code = 0
    failure: UserError | None = None
    done: set[str] = set()
    def finished(i: int, cell: Cell, rec: CellRecord) -> None:
        """Main thread only: mark complete, save the record and JUnit (the reports: at the end)."""
        rec.complete = True
        rec.save(out / "cells" / cell.key)
        state.records.append((rec, out / "cells" / cell.key))
        done.add(cell.key)
        _say(f"cell {i}/{len(cells)} {cell.key}: {rec.status.upper()}")
        publish_progress(matrix, state.records, out)

    try:
        pending: list[tuple[int, Cell, BuildOutcome, str]] = []

        def then_more() -> list[Cell]:
            """After the planned cells: the repeats a target asks for (the pilot has run)."""
            if pending:
                _run_concurrently(pending, opts, finished)
                pending.clear()
            return _more_repeats(matrix, cells, state, out)

        for i, cell in _growing(cells, then_more):
            cell_dir = out / "cells" / cell.key
            elapsed = time.monotonic() - start
            eta = f", ETA {fmt_duration(elapsed / (i - 1) * (len(cells) - i + 1))}" if i > 1 and opts.jobs == 1 else ""
            _say(f"cell {i}/{len(cells)} {cell.key}: build ({fmt_duration(elapsed)} elapsed{eta})")
            if cell.build_key not in builds:
                builds[cell.build_key] = build_cell_kernel(matrix, cell.variant, cell.config_set)
                built_for[cell.build_key] = cell.key
            built = builds[cell.build_key]
            if built_for[cell.build_key] != cell.key:
                built = reused(built, built_for[cell.build_key])
            key = cell_inputs_key(cell, built.build, opts.target)
            if opts.resume:
                old = CellRecord.load(cell_dir)
                # An error is the infrastructure's (QEMU missing, a timeout ...), not the
                # kernel's: once its cause is fixed the cell must run again.
                if old is not None and old.complete and old.inputs_key == key and old.status != ERROR:
                    _say(f"cell {i}/{len(cells)} {cell.key}: resumed ({old.status})")
                    state.records.append((old, cell_dir))
                    continue
            if opts.jobs > 1:
                pending.append((i, cell, built, key))  # builds first, then cells side by side
                continue
            _say(f"cell {i}/{len(cells)} {cell.key}: boot + {cell.workload.name}")
            finished(i, cell, _ran(run_cell(cell, built, opts, cell_dir, key), i))
        if pending:
            _run_concurrently(pending, opts, finished)
    except (KeyboardInterrupt, SystemExit) as exc:
        state.interrupted = True
        exit_code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 130
        # A second Ctrl-C/SIGTERM must not cut the partial results short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _say("interrupted: ending child processes, writing partial results")
        _add_unfinished(state, cells, done, out, opts)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        failure = UserError(disk_full_message(exc, out),
                            hint=f"free space or pass --results on a larger file system; finished cells are kept in {out}: "
                                 "rerun with --resume")
    finally:
        proc.end_all()
        headline = None
        try:
            headline = publish_final(matrix, state.records, builds, out, opts.kcidb_origin)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            failure = failure or UserError(disk_full_message(exc, out), hint="free space or pass --results elsewhere")
        finally:
            remove_partial_files(out)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    if failure is not None:
        raise failure
    if headline is not None:
        print(headline_terminal(headline), flush=True)
    _say(f"results: {out}/junit.xml, {out}/summary.md, {out}/report.html")
    if state.interrupted:
        return exit_code
    return exit_status({r.status for r, _ in state.records})


def _run_concurrently(pending: list[tuple[int, Cell, BuildOutcome, str]], opts: RunOptions, finished) -> None:
    """Up to opts.jobs cells at once (each a QEMU guest), started in plan order; a
    timed cell runs alone (run_in_order); results are published by the main
    thread as cells finish.  On Ctrl-C the signal handler ends every QEMU, the
    workers return at once, and unfinished cells stay incomplete."""
    total = len(pending) and max(i for i, *_ in pending)
    alone = sum(1 for _, cell, *_ in pending if cell.timed)
    _say(f"running {len(pending)} cell(s), {opts.jobs} at a time" + (f"; {alone} timed cell(s) alone" if alone else ""))

    def run(job: tuple[int, Cell, BuildOutcome, str]) -> CellRecord:
        i, cell, built, key = job
        _say(f"cell {i}/{total} {cell.key}: boot + {cell.workload.name}" + (" (alone: timed)" if cell.timed else ""))
        return _ran(run_cell(cell, built, opts, opts.results_dir / "cells" / cell.key, key), i)

    run_in_order(pending, opts.jobs, lambda job: job[1].timed, run,
                 lambda job, rec: finished(job[0], job[1], rec))


J = TypeVar("J")
R = TypeVar("R")


def run_in_order(jobs: list[J], width: int, alone: Callable[[J], bool], run: Callable[[J], R],
                 finished: Callable[[J, R], None], poll_s: float = 1.0) -> None:
    """Run every job (run(job)) in list order, up to `width` at once; finished(job, result)
    in this thread as each ends.  A job for which alone(job) holds (a timed cell: it is
    measured only when nothing else competes for the host's cores) starts when every
    other job has finished, and nothing starts while it runs, whatever --jobs says.
    Start order is the list's order, so a balanced plan (matrix/order.py) holds for what
    ran.  On an exception (Ctrl-C) the running jobs are awaited (their children are ended
    by the signal handler) and the rest never start."""
    pool = ThreadPoolExecutor(max_workers=max(1, width), thread_name_prefix="cell")
    running: dict[Future, J] = {}

    def drain() -> None:
        done, _ = wait(list(running), timeout=poll_s, return_when=FIRST_COMPLETED)
        for fut in done:
            job = running.pop(fut)
            finished(job, fut.result())

    try:
        for job in jobs:
            solo = alone(job)
            while running and (solo or len(running) >= width or any(alone(j) for j in running.values())):
                drain()
            running[pool.submit(run, job)] = job
        while running:
            drain()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _growing(cells: list[Cell], more) -> Iterator[tuple[int, Cell]]:
    """(position, cell) over `cells`, then over what more() appends, until it appends nothing."""
    i = 0
    while True:
        while i < len(cells):
            i += 1
            yield i, cells[i - 1]
        extra = more()
        if not extra:
            return
        cells.extend(extra)


def _more_repeats(matrix: Matrix, cells: list[Cell], state: RunState, out: Path) -> list[Cell]:
    """A `detect_pct` target's repeats beyond its pilot, once: the plan in matrix.json grows
    by them, and its "repeat_plan" lines say why (the reports show them)."""
    if not matrix.targets or state.repeats_planned:
        return []
    state.repeats_planned = True
    new, lines = matrix.more_repeats(cells, [r for r, _ in state.records])
    new = [c for c in new if c not in cells]
    meta = json.loads((out / "matrix.json").read_text())
    write_json_atomic(out / "matrix.json", {**meta, "cells": [c.to_json() for c in cells + new], "repeat_plan": lines})
    for line in lines:
        _say("repeats " + line.lstrip("- ").replace("**", ""))
    return new


def _ran(rec: CellRecord, planned: int) -> CellRecord:
    """Stamp where the cell stood in the plan and when it ended (its start is the record's
    `started`): the Order section of the reports checks both against the plan."""
    rec.planned = planned
    rec.ended = time.time()
    return rec


def _add_unfinished(state: RunState, cells: list[Cell], done: set[str], out: Path, opts: RunOptions) -> None:
    """The interrupted cell (as far as it got) and the cells not started, for the partial reports.

    Neither is marked complete, so their status is "not run" (or "error" for the
    cell the interruption cut short) and --resume runs them again.
    """
    for cell in cells:
        if cell.key in done or any(r.key == cell.key for r, _ in state.records):
            continue
        cell_dir = out / "cells" / cell.key
        rec = CellRecord.load(cell_dir)
        if rec is None or rec.complete:  # never started in this run (a complete record is an older run's)
            state.records.append((not_run_record(cell.to_json(), reproducer(opts, cell),
                                                 "the run was interrupted before this cell"), None))
        else:
            state.records.append((rec, cell_dir))


def _say(text: str) -> None:
    print(f"[run-matrix] {text}", file=sys.stderr, flush=True)
