"""Run matrix cells: build (once per kernel), boot, check nested KVM, run the
workload with its collectors, judge.  Every fault becomes a step verdict;
results are on disk after every step, and JUnit/summary after every cell.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from . import proc
from .build import locked
from .console import BootFailure, ConsoleError
from .errors import BuildFailed, UserError
from .evidence import run_workload
from .guest import start_guest
from .guestshell import GuestShell
from .junit import write_junit
from .machine import shape_by_name
from .matrix import Cell, Matrix
from .nested_kvm import check_nested_kvm
from .paths import PATCHES_DIR, PROJECT_ROOT
from .pipeline import BuildRequest, SeriesDidNotApply, VariantBuild, build_variant
from .progress import fmt_duration
from .report import write_reports
from .results import ERROR, FAILED, PASSED, SKIPPED, CellRecord, Step, write_json_atomic
from .tracing import load_tracepoint_set
from .verdicts import load_expectations, verdict_steps
from .workloads import load_workload

EXIT_OK, EXIT_FAIL, EXIT_INFRA = 0, 1, 2
SELFTEST_GUEST_DIR = "/opt/orch/selftests"


@dataclass
class RunOptions:
    results_dir: Path
    matrix_arg: str
    resume: bool = False
    jobs: int = 1
    boot_silence_s: float = 120.0
    boot_overall_s: float = 600.0


@dataclass
class BuildOutcome:
    steps: list[Step]
    build: VariantBuild | None
    seconds: float = 0.0


@dataclass
class RunState:
    records: list[tuple[CellRecord, Path]] = field(default_factory=list)
    interrupted: bool = False


def default_jobs() -> int:
    """Each TCG guest keeps ~2 host threads busy and needs ~5 GB: one cell per 2 cores / 5 GB."""
    cores = os.cpu_count() or 2
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = 8
    return max(1, min(cores // 2, int(mem_gb // 5)))


def _file_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.name).encode())
        h.update(p.read_bytes() if p.is_file() else b"-")
    return h.hexdigest()


def build_cell_kernel(matrix: Matrix, variant: str, config_set: str) -> BuildOutcome:
    """Build once per (variant, config set); the outcome's steps go into every cell using it."""
    t0 = time.monotonic()
    steps: list[Step] = []
    req = BuildRequest(source=matrix.source, series=matrix.series, variant=variant, config_set=config_set)
    try:
        vb = build_variant(req)
    except SeriesDidNotApply as exc:
        for r in exc.result.results:
            status = FAILED if r.status == "failed" else SKIPPED if r.status == "not-attempted" else PASSED
            steps.append(Step(f"apply {r.patch.name}", status, 0.0, r.detail if status != PASSED else "",
                              excerpt=exc.result.report() if status == FAILED else ""))
        steps.append(Step("build", SKIPPED, 0.0, "series did not apply"))
        return BuildOutcome(steps, None, time.monotonic() - t0)
    except BuildFailed as exc:
        steps.append(Step("config verification", PASSED))
        steps.append(Step("build", FAILED, time.monotonic() - t0, str(exc.args[0]), excerpt="\n".join(exc.first_errors)))
        return BuildOutcome(steps, None, time.monotonic() - t0)
    except UserError as exc:
        name = "config verification" if "config" in exc.message else "build"
        steps.append(Step(name, FAILED if name == "config verification" else ERROR, time.monotonic() - t0, exc.message,
                          excerpt=str(exc)))
        return BuildOutcome(steps, None, time.monotonic() - t0)
    if vb.apply is not None:
        for r in vb.apply.results:
            steps.append(Step(f"apply {r.patch.name}", PASSED, 0.0, output=f"{r.status}: {r.detail}".strip()))
    steps.append(Step("config verification", PASSED, 0.0, output=f"every option of {config_set} present in {vb.kernel.config}"))
    k = vb.kernel
    steps.append(Step("build", PASSED, time.monotonic() - t0,
                      output=f"{'cache hit' if k.cache_hit else 'built'} {k.key}\n{k.image}\n{k.metadata.get('reproducer', '')}"))
    return BuildOutcome(steps, vb, time.monotonic() - t0)


def cell_inputs_key(cell: Cell, vb: VariantBuild | None) -> str:
    workload = load_workload(cell.workload.name)
    machine = shape_by_name(cell.machine)
    parts = [json.dumps(cell.to_json(), sort_keys=True), vb.kernel.key if vb else "no-kernel",
             vb.selftests.key if vb and vb.selftests else "-", repr(machine),
             _file_digest(workload.path, PATCHES_DIR / "expectations.yaml", *sorted((PROJECT_ROOT / "tracepoints").glob("*.yaml")),
                          PROJECT_ROOT / "guest" / "init")]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def reproducer(opts: RunOptions, cell: Cell) -> str:
    return shlex.join(["./run-matrix", "--matrix", opts.matrix_arg, "--only", cell.key])


def run_cell(cell: Cell, built: BuildOutcome, opts: RunOptions, cell_dir: Path, inputs_key: str) -> CellRecord:
    rec = CellRecord(cell.key, cell.to_json(), inputs_key, reproducer(opts, cell))
    for s in built.steps:
        rec.add(s)
    rec.save(cell_dir)
    vb = built.build
    if vb is None:
        for name in ("boot", "nested-kvm", f"workload {cell.workload.name}"):
            rec.add(Step(name, SKIPPED, 0.0, "no kernel: see the build steps"), cell_dir)
        return rec
    workload = load_workload(cell.workload.name)
    shape = shape_by_name(cell.machine)
    extra = {}
    if vb.selftests is not None:
        for name in ("access_tracking_perf_test", "demand_paging_test", "dirty_log_perf_test", "kvm_create_max_vcpus"):
            extra[f"{SELFTEST_GUEST_DIR}/{name}"] = vb.selftests.binary(name)
    extra.update(vb.guest_programs)
    t0 = time.monotonic()
    try:
        with start_guest(shape, vb.kernel.image, workdir=cell_dir, extra=extra,
                         silence=opts.boot_silence_s, overall=opts.boot_overall_s) as g:
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in g.boot.stages.items())
            rec.metrics["boot.ready_s"] = round(g.boot.stages.get("ready", time.monotonic() - t0), 3)
            rec.add(Step("boot", PASSED, time.monotonic() - t0, output=f"stages: {stages}; guest uptime {g.boot.guest_uptime}"), cell_dir)
            shell = GuestShell(g.console, g.ssh)
            if g.ssh is None:
                rec.add(Step("ssh", SKIPPED, 0.0, f"sshd did not come up ({g.ssh_error or 'network off'}): "
                             "using the serial console"), cell_dir)
            t1 = time.monotonic()
            kvm = check_nested_kvm(lambda c: shell.run(c, timeout=120))
            rec.add(Step("nested-kvm", PASSED if kvm.ok else FAILED, time.monotonic() - t1,
                         "" if kvm.ok else f"KVM not usable in the guest: {kvm.reason}",
                         excerpt="\n".join(kvm.evidence), output=f"mode={kvm.mode}\n" + "\n".join(kvm.evidence)), cell_dir)
            rec.metrics["nested_kvm.ok"] = 1.0 if kvm.ok else 0.0
            if not kvm.ok:
                rec.add(Step(f"workload {workload.name}", SKIPPED, 0.0, "no KVM in the guest"), cell_dir)
                return rec
            tpset = load_tracepoint_set(workload.tracepoints) if workload.tracepoints else None
            run = run_workload(shell, workload, cell.workload.params_dict(), tpset, cell_dir / "evidence")
            rec.metrics.update(run.metrics)
            write_json_atomic(cell_dir / "metrics.json", rec.metrics)
            if run.exit_status == 0:
                rec.add(Step(f"workload {workload.name}", PASSED, run.seconds, output=run.output[-8000:]), cell_dir)
            else:
                why = "timed out" if run.timed_out else f"exit status {run.exit_status}"
                rec.add(Step(f"workload {workload.name}", FAILED, run.seconds, f"{run.command}: {why}",
                             excerpt=run.output[-4000:]), cell_dir)
            for s in verdict_steps(run, load_expectations(PATCHES_DIR / "expectations.yaml", cell.variant)):
                rec.add(s, cell_dir)
    except BootFailure as exc:
        rec.add(Step("boot", FAILED, time.monotonic() - t0, f"boot failed ({exc.reason}) at stage {exc.stage or 'start'}",
                     excerpt="\n".join(exc.last_lines[-40:])), cell_dir)
    except ConsoleError as exc:
        rec.add(Step("guest", FAILED, time.monotonic() - t0, str(exc).splitlines()[0],
                     excerpt="\n".join(getattr(exc, "last_lines", [])[-40:])), cell_dir)
    except UserError as exc:
        rec.add(Step("guest", ERROR, time.monotonic() - t0, exc.message, excerpt=str(exc)), cell_dir)
    except (KeyboardInterrupt, SystemExit):
        rec.add(Step("interrupted", ERROR, time.monotonic() - t0, "run interrupted (Ctrl-C / SIGTERM)"), cell_dir)
        raise
    except Exception as exc:  # noqa: BLE001 - an infrastructure bug must still become a verdict
        rec.add(Step("orchestrator", ERROR, time.monotonic() - t0, f"{type(exc).__name__}: {exc}",
                     excerpt=traceback.format_exc()[-4000:]), cell_dir)
    return rec


def run_cells(matrix: Matrix, cells: list[Cell], opts: RunOptions) -> int:
    out = opts.results_dir
    (out / "cells").mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "matrix.json", {"matrix": str(matrix.path), "name": matrix.name,
                                            "cells": [c.to_json() for c in cells],
                                            "compare": matrix.compare})
    proc.install_signal_handlers()
    state = RunState()
    builds: dict[tuple[str, str], BuildOutcome] = {}
    start = time.monotonic()
    try:
        for i, cell in enumerate(cells, 1):
            cell_dir = out / "cells" / cell.key
            elapsed = time.monotonic() - start
            eta = f", ETA {fmt_duration(elapsed / (i - 1) * (len(cells) - i + 1))}" if i > 1 else ""
            _say(f"cell {i}/{len(cells)} {cell.key}: build ({fmt_duration(elapsed)} elapsed{eta})")
            if cell.build_key not in builds:
                builds[cell.build_key] = build_cell_kernel(matrix, cell.variant, cell.config_set)
            built = builds[cell.build_key]
            key = cell_inputs_key(cell, built.build)
            if opts.resume:
                old = CellRecord.load(cell_dir)
                if old is not None and old.complete and old.inputs_key == key:
                    _say(f"cell {i}/{len(cells)} {cell.key}: resumed ({old.status})")
                    state.records.append((old, cell_dir))
                    continue
            _say(f"cell {i}/{len(cells)} {cell.key}: boot + {cell.workload.name}")
            rec = run_cell(cell, built, opts, cell_dir, key)
            rec.complete = True
            rec.save(cell_dir)
            state.records.append((rec, cell_dir))
            _say(f"cell {i}/{len(cells)} {cell.key}: {rec.status.upper()}")
            write_junit(state.records, out / "junit.xml")
            write_reports(matrix, state.records, out)
    except (KeyboardInterrupt, SystemExit):
        state.interrupted = True
        _say("interrupted: writing partial results")
    finally:
        proc.end_all()
        write_junit(state.records, out / "junit.xml")
        write_reports(matrix, state.records, out)
    _say(f"results: {out}/junit.xml, {out}/summary.md, {out}/report.html")
    if state.interrupted:
        return 130
    statuses = {r.status for r, _ in state.records}
    if ERROR in statuses and FAILED not in statuses:
        return EXIT_INFRA
    return EXIT_FAIL if FAILED in statuses or ERROR in statuses else EXIT_OK


def _say(text: str) -> None:
    print(f"[run-matrix] {text}", file=sys.stderr, flush=True)
