"""What a fault during a cell's guest phases means as a verdict.  A boot that
never reached the prompt or a guest that stopped is the kernel failing; a
lost connection, bad input or a lab that could not run the job is an error
of the infrastructure; a command that timed out is a failure of the phase it
ran in.  Targets report faults as data (target/job.TargetFault): nothing
here knows QEMU, the console, SSH or a lab."""
from __future__ import annotations

from orchestrator.errors import UserError
from orchestrator.reports.results import ERROR, FAILED, Step
from orchestrator.target.job import TargetFault

LAB_KINDS = ("lab-error", "lab-cancelled", "lab-timeout", "lab-unreachable", "truncated-log")


def fault_step(fault: TargetFault, phase: str, seconds: float) -> Step:
    """The step that reports `fault`, which happened during `phase` (a step name)."""
    detail = f": {fault.detail}" if fault.detail else ""
    if fault.kind == "boot-failed":
        return Step("boot", FAILED, seconds, f"boot failed ({fault.reason}) at stage {fault.where or 'start'}{detail}",
                    excerpt=fault.excerpt)
    if fault.kind == "guest-crashed":
        return Step(phase, FAILED, seconds, f"the guest stopped during {phase} ({fault.reason}){detail}",
                    excerpt=fault.excerpt)
    if fault.kind == "timeout":  # a command did not come back in time
        return Step(phase, FAILED, seconds, fault.reason + detail, excerpt=fault.excerpt)
    if fault.kind in LAB_KINDS:  # the lab could not give an answer: say its reason and where to look
        where = f" ({fault.where})" if fault.where else ""
        return Step(phase, ERROR, seconds, f"{fault.kind}: {fault.reason}{detail}{where}", excerpt=fault.excerpt)
    # connection-lost, input: the infrastructure or the input, not the kernel
    return Step(phase, ERROR, seconds, fault.reason + detail, excerpt=fault.excerpt)


def user_error_step(exc: UserError, phase: str, seconds: float) -> Step:
    return Step(phase, ERROR, seconds, exc.one_line(), excerpt=str(exc))
