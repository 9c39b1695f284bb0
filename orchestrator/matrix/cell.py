"""One cell, start to end: the kernel stage's steps, then the guest job (boot,
nested-KVM check, the workload with its collectors) run by the cell's target,
then verdicts.  Every fault becomes a step verdict under the phase it
happened in; the record is on disk after every step (the target reports its
outcome as it grows, and steps are written as soon as they are known)."""
from __future__ import annotations

import shlex
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.guest_paths import under_root
from orchestrator.judge.verdicts import load_expectations, verdict_steps
from orchestrator.matrix.cell_build import BuildOutcome
from orchestrator.matrix.disk_full import is_disk_full
from orchestrator.matrix.guest_faults import fault_step, user_error_step
from orchestrator.matrix.options import RunOptions
from orchestrator.matrix.spec import Cell
from orchestrator.paths import PATCHES_DIR
from orchestrator.reports.crashes import crash_record
from orchestrator.reports.results import ERROR, FAILED, PASSED, SKIPPED, CellRecord, Step, write_json_atomic
from orchestrator.target.base import load_target
from orchestrator.target.job import EVIDENCE_SUBDIR, GuestJob, GuestOutcome, GuestScript
from orchestrator.vm.machine import shape_by_name
from orchestrator.vm.nested_kvm import PROBE_GUEST_PATH, build_kvm_probe, nested_kvm_script, parse_nested_kvm_output
from orchestrator.workload.definitions import Workload, load_workload
from orchestrator.workload.evidence import SETUP_SCRIPT, WorkloadPlan
from orchestrator.workload.stage import HostLoad, collect_workload_stage, plan_workload_stage
from orchestrator.workload.suite_results import suite_testcases_after_fault

NESTED_KVM = "nested-kvm"
NESTED_KVM_TIMEOUT_S = 120


def preflight(cells: list[Cell], target: str = "local") -> None:
    """Reject bad workload parameters, machine shapes and targets before anything is built or booted."""
    for cell in cells:
        load_workload(cell.workload.name).resolve_params(cell.workload.params_dict())
        shape_by_name(cell.machine)
    load_target(target).preflight()


def reproducer(opts: RunOptions, cell: Cell) -> str:
    return shlex.join(["./run-matrix", "--matrix", opts.matrix_arg, "--only", cell.key])


def run_cell(cell: Cell, built: BuildOutcome, opts: RunOptions, cell_dir: Path, inputs_key: str) -> CellRecord:
    rec = CellRecord(cell.key, cell.to_json(), inputs_key, reproducer(opts, cell))
    for s in built.steps:
        rec.add(s)
    rec.save(cell_dir)
    vb = built.build
    if vb is None:
        for name in ("boot", NESTED_KVM, f"workload {cell.workload.name}"):
            rec.add(Step(name, SKIPPED, 0.0, "no kernel: see the build steps"), cell_dir)
        return rec
    workload = load_workload(cell.workload.name)
    shape = shape_by_name(cell.machine)
    t0 = time.monotonic()
    steps = _Steps(rec, cell_dir, workload)
    try:
        target = load_target(opts.target)
        rec.target = target.identity()
        # A tree without the workload's program: not a failure, the workload is skipped.
        steps.unavailable = vb.unavailable.get(under_root(workload.program), "")
        scripts = [GuestScript(NESTED_KVM, nested_kvm_script(), NESTED_KVM_TIMEOUT_S)]
        if not steps.unavailable:
            steps.plan = plan_workload_stage(workload, cell.workload.params_dict(), cell.config_set, needs=NESTED_KVM)
            scripts += steps.plan.scripts
        files = {PROBE_GUEST_PATH: build_kvm_probe(), **vb.guest_files(suite=workload.suite is not None)}
        job = GuestJob(cell.key, shape, vb.kernel.image, files, tuple(scripts), opts.boot_overall_s,
                       boot_silence_s=opts.boot_silence_s,
                       ssh_timeout_s=opts.ssh_timeout_s)
        outcome = target.run(job, cell_dir, steps.seen)
        steps.seen(outcome)
        steps.finish(outcome, cell, time.monotonic() - t0)
    except (KeyboardInterrupt, SystemExit):
        rec.add(Step("interrupted", ERROR, time.monotonic() - t0,
                     f"run interrupted (Ctrl-C / SIGTERM) during {steps.phase}"), cell_dir)
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise  # the results disk is full: every later cell would fail the same way
        _internal_error(rec, cell_dir, t0, exc)
    except UserError as exc:
        rec.add(user_error_step(exc, steps.phase, time.monotonic() - t0), cell_dir)
    except Exception as exc:  # noqa: BLE001 - an infrastructure bug must still become a verdict
        _internal_error(rec, cell_dir, t0, exc)
    # The same testcases in every run: what a failure kept from running is skipped.
    names = {s.name for s in rec.steps}
    failed = next((s for s in rec.steps if s.status in (FAILED, ERROR)), None)
    for name in ("boot", NESTED_KVM, f"workload {workload.name}"):
        if name not in names and failed is not None:
            rec.add(Step(name, SKIPPED, 0.0, f"not run: {failed.name} did not pass"), cell_dir)
    return rec


class _Steps:
    """Turns a target's outcome into the cell's steps, each written once, as
    soon as it is known: seen() is called with the growing outcome."""

    def __init__(self, rec: CellRecord, cell_dir: Path, workload: Workload) -> None:
        self.rec, self.cell_dir, self.workload = rec, cell_dir, workload
        self.phase = "boot"  # names the step a fault is reported under
        self.plan: WorkloadPlan | None = None
        self.unavailable = ""
        self.kvm_ok: bool | None = None  # None: the check did not complete
        self.load = HostLoad()
        self._booted = False
        self._kvm_done = False

    @property
    def workload_step(self) -> str:
        return f"workload {self.workload.name}"

    def phase_of(self, script: str) -> str:
        if not script:
            return "boot"
        return NESTED_KVM if script == NESTED_KVM else self.workload_step

    def add(self, step: Step) -> None:
        self.rec.add(step, self.cell_dir)

    def seen(self, outcome: GuestOutcome) -> None:
        if outcome.boot.ok and not self._booted:
            self._booted = True
            boot = outcome.boot
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in boot.stages.items())
            self.rec.metrics["boot.ready_s"] = round(boot.stages.get("ready", boot.seconds), 3)
            self.add(Step("boot", PASSED, boot.seconds, output=f"stages: {stages}; {boot.detail}\n{boot.description}"))
            if outcome.channel_note:
                self.add(Step("ssh", SKIPPED, 0.0, outcome.channel_note))
            self.phase = NESTED_KVM
        kvm = outcome.result(NESTED_KVM)
        if kvm is not None and not self._kvm_done:
            self._kvm_done = True
            self._nested_kvm_step(kvm)
            self.phase = self.workload_step
            if self.kvm_ok:
                self.load.before()  # the workload starts now
        if self.plan is not None and outcome.result(self.plan.run_script) is not None:
            self.load.after()

    def _nested_kvm_step(self, result) -> None:
        if result.status in ("timeout", "error", "not-run"):
            self.add(Step(NESTED_KVM, ERROR if result.status == "error" else FAILED, result.seconds, result.detail,
                          excerpt=result.output[-4000:]))
            return
        kvm = parse_nested_kvm_output(result.output)
        self.kvm_ok = kvm.ok
        self.add(Step(NESTED_KVM, PASSED if kvm.ok else FAILED, result.seconds,
                      "" if kvm.ok else f"KVM not usable in the guest: {kvm.reason}",
                      excerpt="\n".join(kvm.evidence), output=f"mode={kvm.mode}\n" + "\n".join(kvm.evidence)))
        self.rec.metrics["nested_kvm.ok"] = 1.0 if kvm.ok else 0.0

    def finish(self, outcome: GuestOutcome, cell: Cell, seconds: float) -> None:
        rec = self.rec
        if outcome.fault is not None:
            step = fault_step(outcome.fault, self.phase_of(outcome.fault.script), seconds)
            if step.name == self.workload_step and self.workload.results == "ktap":  # a suite: what ran is kept
                rec.testcases = [asdict(t) for t in suite_testcases_after_fault(self.cell_dir / "console.log",
                                                                                 step.message)]
            self.add(step)
            return
        # A target that answers without a fault must have answered everything.
        if not outcome.boot.ok:
            self.add(Step("boot", ERROR, seconds, "the target reported neither a boot nor a fault"))
            return
        if outcome.result(NESTED_KVM) is None:
            self.add(Step(NESTED_KVM, ERROR, 0.0, "the target returned no result for the nested-KVM check"))
            return
        if not self.kvm_ok:
            if self.kvm_ok is False:
                self.add(Step(self.workload_step, SKIPPED, 0.0, "no KVM in the guest"))
            return  # a check that did not complete failed its step: the workload is "not run"
        if self.plan is None:
            self.add(Step(self.workload_step, SKIPPED, 0.0, f"{self.workload.program}: {self.unavailable}"))
            return
        plan = self.plan
        mine = [r for r in outcome.scripts if r.name in {s.name for s in plan.scripts}]
        if outcome.channel_lost:
            self.add(Step("ssh", ERROR, sum(r.seconds for r in mine),
                          f"{outcome.channel_lost}: the rest of the cell (evidence included) used the serial console"))
        setup = outcome.result(SETUP_SCRIPT)
        if setup is not None and setup.status in ("timeout", "error"):  # the workload never started
            self.add(Step(self.workload_step, FAILED if setup.status == "timeout" else ERROR, setup.seconds,
                          f"{SETUP_SCRIPT}: {setup.detail}", excerpt=setup.output[-4000:]))
            return
        ran = outcome.result(plan.run_script)
        if ran is None or ran.status == "not-run":
            self.add(Step(self.workload_step, ERROR, 0.0,
                          f"not run: {ran.detail if ran else 'the target returned no result for it'}"))
            return
        stage = collect_workload_stage(plan, mine, self.cell_dir / EVIDENCE_SUBDIR, self.load,
                                       via=outcome.channel, ssh_lost=outcome.channel_lost)
        run = stage.run
        rec.metrics.update(stage.metrics)
        rec.crashes = [crash_record(c) for c in run.crashes]
        rec.testcases = [asdict(t) for t in run.testcases]
        write_json_atomic(self.cell_dir / "metrics.json", rec.metrics)
        excerpt = "\n\n".join(x for x in (run.output[-4000:], run.dmesg_excerpt and "guest dmesg:\n" + run.dmesg_excerpt) if x)
        if run.exit_status == 0:
            self.add(Step(self.workload_step, PASSED, run.seconds, output=run.output[-8000:]))
        else:
            why = run.ended_by or f"exit status {run.exit_status}"
            status = ERROR if run.ssh_lost and run.exit_status is None else FAILED
            self.add(Step(self.workload_step, status, run.seconds, f"{run.command}: {why}", excerpt=excerpt))
        self.phase = "verdicts"
        for s in verdict_steps(run, load_expectations(PATCHES_DIR / "expectations.yaml", cell.variant)):
            self.add(s)


def _internal_error(rec: CellRecord, cell_dir: Path, t0: float, exc: Exception) -> None:
    rec.add(Step("orchestrator", ERROR, time.monotonic() - t0, f"{type(exc).__name__}: {exc}",
                 excerpt=traceback.format_exc()[-4000:]), cell_dir)
