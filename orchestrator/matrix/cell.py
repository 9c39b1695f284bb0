"""One cell, start to end: the kernel stage's steps, boot, nested-KVM check,
the workload with its collectors, verdicts.  Every fault becomes a step
verdict under the phase it happened in; the record is on disk after every step."""
from __future__ import annotations

import shlex
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from orchestrator.judge.verdicts import load_expectations, verdict_steps
from orchestrator.matrix.cell_build import BuildOutcome
from orchestrator.matrix.disk_full import is_disk_full
from orchestrator.matrix.guest_faults import fault_step
from orchestrator.matrix.options import RunOptions
from orchestrator.matrix.spec import Cell
from orchestrator.paths import PATCHES_DIR
from orchestrator.reports.crashes import crash_record
from orchestrator.reports.results import ERROR, FAILED, PASSED, SKIPPED, CellRecord, Step, write_json_atomic
from orchestrator.guest_paths import under_root
from orchestrator.vm.machine import shape_by_name
from orchestrator.vm.nested_kvm import check_nested_kvm
from orchestrator.vm.session import start_guest
from orchestrator.vm.shell import GuestShell
from orchestrator.workload.definitions import load_workload
from orchestrator.workload.stage import run_workload_stage
from orchestrator.workload.suite_results import suite_testcases_after_fault


def preflight(cells: list[Cell]) -> None:
    """Reject bad workload parameters and machine shapes before anything is built or booted."""
    for cell in cells:
        load_workload(cell.workload.name).resolve_params(cell.workload.params_dict())
        shape_by_name(cell.machine)


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
    extra = vb.guest_files(suite=workload.suite is not None)
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
            if why := vb.unavailable.get(under_root(workload.program)):  # a tree without it: not a failure
                rec.add(Step(f"workload {workload.name}", SKIPPED, 0.0, f"{workload.program}: {why}"), cell_dir)
                return rec
            phase = f"workload {workload.name}"
            t2 = time.monotonic()
            stage = run_workload_stage(shell, workload, cell.workload.params_dict(), cell.config_set, cell_dir / "evidence")
            run = stage.run
            rec.metrics.update(stage.metrics)
            rec.crashes = [crash_record(c) for c in run.crashes]
            rec.testcases = [asdict(t) for t in run.testcases]
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
    except (KeyboardInterrupt, SystemExit):
        rec.add(Step("interrupted", ERROR, time.monotonic() - t0, f"run interrupted (Ctrl-C / SIGTERM) during {phase}"), cell_dir)
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise  # the results disk is full: every later cell would fail the same way
        _internal_error(rec, cell_dir, t0, exc)
    except Exception as exc:  # noqa: BLE001 - an infrastructure bug must still become a verdict
        step = fault_step(exc, phase, time.monotonic() - t0)
        if step is not None and phase == f"workload {workload.name}" and workload.results == "ktap":  # what ran is kept
            rec.testcases = [asdict(t) for t in suite_testcases_after_fault(cell_dir / "console.log", step.message)]
        if step is None:
            _internal_error(rec, cell_dir, t0, exc)
        else:
            rec.add(step, cell_dir)
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
