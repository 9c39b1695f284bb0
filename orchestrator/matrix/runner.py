"""Run matrix cells: build (once per kernel), boot, check nested KVM, run the
workload with its collectors, judge.  Every fault becomes a step verdict;
results are on disk after every step, and JUnit/summary after every cell.
"""
from __future__ import annotations

import errno
import hashlib
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
import json
import os
import shlex
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import proc
from orchestrator.vm.console import BootFailure, ConsoleError, GuestCrashed
from orchestrator.errors import BuildFailed, UserError
from orchestrator.workload.evidence import run_workload
from orchestrator.reports.crashes import crash_record
from orchestrator.vm.session import start_guest
from orchestrator.vm.shell import ConnectionLost, GuestShell
from orchestrator.vm.ssh import SshError
from orchestrator.reports.junit import write_junit
from orchestrator.reports.kcidb import KcidbOptions, write_kcidb
from orchestrator.kernel.kconfig import load_config_set
from orchestrator.vm.machine import shape_by_name
from orchestrator.matrix.spec import Cell, Matrix
from orchestrator.paths import cache_root
from orchestrator.vm.nested_kvm import check_nested_kvm
from orchestrator.paths import PATCHES_DIR, PROJECT_ROOT
from orchestrator.kernel.variant_build import BuildRequest, SeriesDidNotApply, VariantBuild, build_variant
from orchestrator.progress import fmt_duration
from orchestrator.reports.summary import write_reports
from orchestrator.reports.summary import headline_terminal
from orchestrator.reports.results import ERROR, FAILED, PASSED, SKIPPED, CellRecord, Step, exit_status, not_run_record, write_json_atomic
from orchestrator.workload.timing import host_facts, host_load, is_timed
from orchestrator.workload.tracing import load_tracepoint_set
from orchestrator.kernel.variants import resolve as resolve_variant
from orchestrator.judge.verdicts import load_expectations, verdict_steps
from orchestrator.workload.definitions import load_workload

EXIT_OK, EXIT_FAIL, EXIT_INFRA = 0, 1, 2
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass
class RunOptions:
    results_dir: Path
    matrix_arg: str
    kcidb_origin: str | None = None  # --kcidb-origin ORIGIN[:ID_PREFIX]
    resume: bool = False
    jobs: int = 1
    boot_silence_s: float = 120.0
    boot_overall_s: float = 600.0
    ssh_timeout_s: float = 60.0


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
    # Inputs first, each under its own step name: bad input is an error, not a failure.
    for name, check in (("series", lambda: resolve_variant(matrix.series, variant)),
                        ("config verification", lambda: load_config_set(config_set))):
        try:
            check()
        except UserError as exc:
            steps.append(Step(name, ERROR, time.monotonic() - t0, _one_message(exc), excerpt=str(exc)))
            steps.append(Step("build", SKIPPED, 0.0, f"not run: {name} did not pass"))
            return BuildOutcome(steps, None, time.monotonic() - t0)
    try:
        vb = build_variant(req)
    except SeriesDidNotApply as exc:
        for r in exc.result.results:
            status = FAILED if r.status == "failed" else SKIPPED if r.status == "not-attempted" else PASSED
            where = "; ".join(f.describe() for f in r.failures[:3])  # file and hunk
            message = "; ".join(x for x in (r.detail, where) if x) if status != PASSED else ""
            steps.append(Step(f"apply {r.patch.name}", status, 0.0, message,
                              excerpt=exc.result.report() if status == FAILED else ""))
        steps.append(Step("build", SKIPPED, 0.0, "series did not apply"))
        return BuildOutcome(steps, None, time.monotonic() - t0)
    except BuildFailed as exc:
        steps.append(Step("config verification", PASSED))
        first = next((ln.strip() for ln in exc.first_errors if "error:" in ln), "")
        steps.append(Step("build", FAILED, time.monotonic() - t0, str(exc.args[0]) + (f": {first}" if first else ""),
                          excerpt="\n".join(exc.first_errors) + f"\nfull log: {exc.log_path}"))
        return BuildOutcome(steps, None, time.monotonic() - t0)
    except UserError as exc:
        # A requested option dropped by olddefconfig is the config under test
        # failing; anything else here (missing toolchain ...) is an error.
        dropped = "not in the final .config" in exc.message
        steps.append(Step("config verification" if dropped else "build", FAILED if dropped else ERROR,
                          time.monotonic() - t0, _one_message(exc), excerpt=str(exc)))
        return BuildOutcome(steps, None, time.monotonic() - t0)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        steps.append(Step("build", ERROR, time.monotonic() - t0, _disk_full_message(exc)))
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
    """Everything that can change a cell's result: --resume reruns a cell when any of it changed."""
    from orchestrator.vm.session import qemu_version
    from orchestrator.vm.machine import QEMU
    workload = load_workload(cell.workload.name)
    machine = shape_by_name(cell.machine)
    orch = PROJECT_ROOT / "orchestrator"
    parts = [json.dumps(cell.to_json(), sort_keys=True), vb.kernel.key if vb else "no-kernel",
             vb.selftests.key if vb and vb.selftests else "-", repr(machine),
             # guest program paths are content-keyed cache dirs: edits change them
             ",".join(sorted(str(p) for p in vb.guest_programs.values())) if vb else "-",
             qemu_version(QEMU), _packages_id() if vb else "-",
             _file_digest(workload.path, PATCHES_DIR / "expectations.yaml", *sorted((PROJECT_ROOT / "tracepoints").glob("*.yaml")),
                          PROJECT_ROOT / "guest" / "init", *sorted((PROJECT_ROOT / "guest" / "race").glob("*")),
                          PROJECT_ROOT / "guest" / "kvm_probe.c",
                          # the crash patterns and the code that turns guest text into verdicts
                          *sorted((orch / "parsers").glob("*.py")), *sorted((orch / "parsers").glob("*.yaml")), orch / "evidence.py", orch / "verdicts.py",
                          orch / "workloads.py", orch / "nested_kvm.py")]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def _packages_id() -> str:
    """The guest image's Debian packages; if they cannot be fetched the boot step says why."""
    from orchestrator.vm.image import packages_id
    try:
        return packages_id()
    except UserError as exc:
        return f"unavailable: {exc.message}"


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
    extra = vb.guest_files()
    t0 = time.monotonic()
    phase = "boot"  # names the step a guest failure is reported under
    try:
        with start_guest(shape, vb.kernel.image, workdir=cell_dir, extra=extra,
                         silence=opts.boot_silence_s, overall=opts.boot_overall_s,
                         ssh_timeout=opts.ssh_timeout_s) as g:
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in g.boot.stages.items())
            rec.metrics["boot.ready_s"] = round(g.boot.stages.get("ready", time.monotonic() - t0), 3)
            argv_file = cell_dir / "qemu-argv.txt"  # the emulator settings belong to every timing figure
            qemu = " ".join(argv_file.read_text().split()) if argv_file.is_file() else ""
            rec.add(Step("boot", PASSED, time.monotonic() - t0,
                         output=f"stages: {stages}; guest uptime {g.boot.guest_uptime}\nqemu: {qemu}"), cell_dir)
            shell = GuestShell(g.console, g.ssh)
            if g.ssh is None:
                rec.add(Step("ssh", SKIPPED, 0.0, f"no SSH: {g.ssh_error or 'the machine shape has no network'}; "
                             "using the serial console"), cell_dir)
            t1 = time.monotonic()
            phase = "nested-kvm"
            kvm = check_nested_kvm(lambda c: shell.run(c, timeout=120))
            rec.add(Step("nested-kvm", PASSED if kvm.ok else FAILED, time.monotonic() - t1,
                         "" if kvm.ok else f"KVM not usable in the guest: {kvm.reason}",
                         excerpt="\n".join(kvm.evidence), output=f"mode={kvm.mode}\n" + "\n".join(kvm.evidence)), cell_dir)
            rec.metrics["nested_kvm.ok"] = 1.0 if kvm.ok else 0.0
            if not kvm.ok:
                rec.add(Step(f"workload {workload.name}", SKIPPED, 0.0, "no KVM in the guest"), cell_dir)
                return rec
            if why := vb.unavailable.get(f"/opt/orch/{workload.program}"):  # a tree without it: not a failure
                rec.add(Step(f"workload {workload.name}", SKIPPED, 0.0, f"{workload.program}: {why}"), cell_dir)
                return rec
            tpset = load_tracepoint_set(workload.tracepoints) if workload.tracepoints else None
            phase = f"workload {workload.name}"
            t2 = time.monotonic()
            # Host load at both ends of the workload: a timing figure measured
            # on a loaded host says so in the report (orchestrator/workload/timing.py).
            rec.metrics.update(host_facts())
            rec.metrics.update(host_load("before"))
            run = run_workload(shell, workload, cell.workload.params_dict(), tpset, cell_dir / "evidence",
                               timed=is_timed(cell.config_set))
            rec.metrics.update(host_load("after"))
            rec.metrics.update(run.metrics)
            rec.crashes = [crash_record(c) for c in run.crashes]
            write_json_atomic(cell_dir / "metrics.json", rec.metrics)
            if run.ssh_lost:
                rec.add(Step("ssh", ERROR, time.monotonic() - t2,
                             f"{run.ssh_lost}: the rest of the cell (evidence included) used the serial console"), cell_dir)
            excerpt = "\n\n".join(x for x in (run.output[-4000:], run.dmesg_excerpt and "guest dmesg:\n" + run.dmesg_excerpt) if x)
            if run.exit_status == 0:
                rec.add(Step(f"workload {workload.name}", PASSED, run.seconds, output=run.output[-8000:]), cell_dir)
            else:
                why = run.ended_by or f"exit status {run.exit_status}"
                status = ERROR if run.ssh_lost and run.exit_status is None else FAILED
                rec.add(Step(f"workload {workload.name}", status, run.seconds, f"{run.command}: {why}",
                             excerpt=excerpt), cell_dir)
            phase = "verdicts"
            for s in verdict_steps(run, load_expectations(PATCHES_DIR / "expectations.yaml", cell.variant)):
                rec.add(s, cell_dir)
    except BootFailure as exc:
        rec.add(Step("boot", FAILED, time.monotonic() - t0, f"boot failed ({exc.reason}) at stage {exc.stage or 'start'}"
                     + (f": {exc.detail}" if exc.detail else ""),
                     excerpt="\n".join(exc.last_lines[-40:])), cell_dir)
    except GuestCrashed as exc:
        rec.add(Step(phase, FAILED, time.monotonic() - t0,
                     f"the guest stopped during {phase} ({exc.reason})" + (f": {exc.detail}" if exc.detail else ""),
                     excerpt="\n".join(exc.last_lines[-40:])), cell_dir)
    except ConnectionLost as exc:
        rec.add(Step(phase, ERROR, time.monotonic() - t0, str(exc).splitlines()[0],
                     excerpt="\n".join(exc.last_lines[-40:])), cell_dir)
    except ConsoleError as exc:  # a command timed out on the serial console
        rec.add(Step(phase, FAILED, time.monotonic() - t0, str(exc).splitlines()[0],
                     excerpt="\n".join(getattr(exc, "last_lines", [])[-40:])), cell_dir)
    except SshError as exc:  # a command timed out over SSH
        rec.add(Step(phase, FAILED, time.monotonic() - t0, str(exc)), cell_dir)
    except UserError as exc:
        rec.add(Step(phase, ERROR, time.monotonic() - t0, _one_message(exc), excerpt=str(exc)), cell_dir)
    except (KeyboardInterrupt, SystemExit):
        rec.add(Step("interrupted", ERROR, time.monotonic() - t0, f"run interrupted (Ctrl-C / SIGTERM) during {phase}"), cell_dir)
        raise
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise  # the results disk is full: every later cell would fail the same way
        _internal_error(rec, cell_dir, t0, exc)
    except Exception as exc:  # noqa: BLE001 - an infrastructure bug must still become a verdict
        _internal_error(rec, cell_dir, t0, exc)
    # The same testcases in every run: what a failure kept from running is skipped.
    names = {s.name for s in rec.steps}
    failed = next((s for s in rec.steps if s.status in (FAILED, ERROR)), None)
    for name in ("boot", "nested-kvm", f"workload {workload.name}"):
        if name not in names and failed is not None:
            rec.add(Step(name, SKIPPED, 0.0, f"not run: {failed.name} did not pass"), cell_dir)
    return rec


def _internal_error(rec: CellRecord, cell_dir: Path, t0: float, exc: Exception) -> None:
    rec.add(Step("orchestrator", ERROR, time.monotonic() - t0, f"{type(exc).__name__}: {exc}",
                 excerpt=traceback.format_exc()[-4000:]), cell_dir)


def _one_message(exc: UserError) -> str:
    return exc.message + (f" (how to fix: {exc.hint})" if exc.hint else "")


def _free(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free >> 10} KiB free"
    except OSError:
        return "free space unknown"


def _disk_full_message(exc: OSError, results: Path | None = None) -> str:
    where = f" writing {exc.filename}" if exc.filename else ""
    places = ([f"results {results} ({_free(results)})"] if results else []) + [f"cache {cache_root()} ({_free(cache_root())})"]
    return f"no space left on device{where}: {'; '.join(places)}"


def _remove_partial_files(out: Path) -> None:
    """Temporary files of atomic writes that an interruption or a full disk left behind."""
    for tmp in out.rglob("*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


def preflight(cells: list[Cell]) -> None:
    """Reject bad workload parameters and machine shapes before anything is built or booted."""
    for cell in cells:
        load_workload(cell.workload.name).resolve_params(cell.workload.params_dict())
        shape_by_name(cell.machine)


def run_cells(matrix: Matrix, cells: list[Cell], opts: RunOptions) -> int:
    out = opts.results_dir
    preflight(cells)
    try:
        (out / "cells").mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "matrix.json", {"matrix": str(matrix.path), "name": matrix.name,
                                                "cells": [c.to_json() for c in cells],
                                                "compare": matrix.compare})
    except OSError as exc:
        _remove_partial_files(out)
        if exc.errno in DISK_FULL:
            raise UserError(_disk_full_message(exc, out), hint="free space or pass --results elsewhere") from None
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
        """Main thread only: mark complete, publish JUnit and reports."""
        rec.complete = True
        rec.save(out / "cells" / cell.key)
        state.records.append((rec, out / "cells" / cell.key))
        done.add(cell.key)
        _say(f"cell {i}/{len(cells)} {cell.key}: {rec.status.upper()}")
        write_junit(state.records, out / "junit.xml")
        write_reports(matrix, state.records, out)

    try:
        pending: list[tuple[int, Cell, BuildOutcome, str]] = []
        for i, cell in enumerate(cells, 1):
            cell_dir = out / "cells" / cell.key
            elapsed = time.monotonic() - start
            eta = f", ETA {fmt_duration(elapsed / (i - 1) * (len(cells) - i + 1))}" if i > 1 and opts.jobs == 1 else ""
            _say(f"cell {i}/{len(cells)} {cell.key}: build ({fmt_duration(elapsed)} elapsed{eta})")
            if cell.build_key not in builds:
                builds[cell.build_key] = build_cell_kernel(matrix, cell.variant, cell.config_set)
                built_for[cell.build_key] = cell.key
            built = builds[cell.build_key]
            if built_for[cell.build_key] != cell.key:
                built = _reused(built, built_for[cell.build_key])
            key = cell_inputs_key(cell, built.build)
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
            finished(i, cell, run_cell(cell, built, opts, cell_dir, key))
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
        if exc.errno not in DISK_FULL:
            raise
        failure = UserError(_disk_full_message(exc, out),
                            hint=f"free space or pass --results on a larger file system; finished cells are kept in {out}: "
                                 "rerun with --resume")
    finally:
        proc.end_all()
        headline = None
        try:
            write_junit(state.records, out / "junit.xml")
            write_kcidb(KcidbOptions.parse(opts.kcidb_origin), matrix, state.records, builds, out)
            headline = write_reports(matrix, state.records, out)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            failure = failure or UserError(_disk_full_message(exc, out), hint="free space or pass --results elsewhere")
        finally:
            _remove_partial_files(out)
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
    """Up to opts.jobs cells at once (each a QEMU guest); results are published by
    the main thread as cells finish.  On Ctrl-C the signal handler ends every
    QEMU, the workers return at once, and unfinished cells stay incomplete."""
    total = len(pending) and max(i for i, *_ in pending)
    _say(f"running {len(pending)} cell(s), {opts.jobs} at a time")
    pool = ThreadPoolExecutor(max_workers=opts.jobs, thread_name_prefix="cell")
    futures = {}
    try:
        for i, cell, built, key in pending:
            _say(f"cell {i}/{total} {cell.key}: queued (boot + {cell.workload.name})")
            futures[pool.submit(run_cell, cell, built, opts, opts.results_dir / "cells" / cell.key, key)] = (i, cell)
        remaining = set(futures)
        while remaining:
            done_now, remaining = wait(remaining, timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in done_now:
                i, cell = futures[fut]
                finished(i, cell, fut.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


def _reused(built: BuildOutcome, first: str) -> BuildOutcome:
    """The build steps for a cell whose kernel an earlier cell built: the same
    verdicts, but 0 s, so the time is counted once (JUnit totals, CI dashboards)."""
    steps = [Step(s.name, s.status, 0.0, s.message + (f" (built for cell {first})" if s.message else ""), s.excerpt,
                  (f"0 s, built for cell {first}\n" + s.output) if s.name == "build" else s.output)
             if s.seconds or s.name == "build" else s for s in built.steps]
    return BuildOutcome(steps, built.build, 0.0)


def _say(text: str) -> None:
    print(f"[run-matrix] {text}", file=sys.stderr, flush=True)
