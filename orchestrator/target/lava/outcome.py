"""A finished LAVA job (its parsed log and how the lab says it ended) as the
cell's GuestOutcome: the same shape the local target returns, so JUnit,
KCIDB, summary and --resume see no difference.

Which fault, in order (the first that applies):
- the lab cancelled the job -> lab-cancelled;
- the lab gave up on time (job or action timeout, or our own deadline) -> lab-timeout;
- the job ended Incomplete -> boot-failed when the kernel did not reach the
  shell (not an infrastructure error), guest-crashed when the guest printed
  a panic, else lab-error with the lab's error type and message;
- a block of output or evidence did not come through whole -> truncated-log.
A script that reported fail is a failed script, never a fault.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from orchestrator.target.job import EVIDENCE_SUBDIR, BootRecord, GuestJob, GuestOutcome, ScriptResult, TargetFault
from orchestrator.target.lava.joblog import JobLog
from orchestrator.target.lava.render import DEFINITION, case_names

EXCERPT_LINES = 40
_PANIC = re.compile(r"Kernel panic - not syncing|Unable to handle kernel|Internal error: Oops")
_TIMEOUT = re.compile(r"timed out|timeout", re.I)
# LAVA's own test cases that belong to booting (the lava suite, 2023.01).
# execute-qemu: QEMU started; login-action: from there to the shell prompt.
BOOT_ACTIONS = ("execute-qemu", "login-action", "kernel-messages", "auto-login-action", "boot-qemu-image")


@dataclass(frozen=True)
class LabEnd:
    """How the lab says the job ended (a server's health, or lava-run's own log)."""
    health: str  # Complete | Incomplete | Canceled | Timeout (our deadline) | Unreachable
    reason: str = ""  # the lab's words: error type and message, failure comment
    where: str = ""  # job URL, or "lava-run job N (DIR)"


def lab_end_from_log(log: JobLog, where: str, exit_status: int | None) -> LabEnd:
    """lava-run has no server to ask: the lava suite's `job` case says how it ended."""
    job = log.job_result()
    if job is None:
        why = log.errors[-1] if log.errors else f"lava-run exited {exit_status} without a job result"
        return LabEnd("Incomplete", why, where)
    if job.result == "pass":
        return LabEnd("Complete", "", where)
    etype = str(job.extra.get("error_type", ""))
    msg = str(job.extra.get("error_msg", ""))
    health = "Canceled" if etype == "Canceled" else "Incomplete"
    return LabEnd(health, f"{etype}: {msg}".strip(": "), where)


def _booted(log: JobLog) -> bool:
    return bool(log.statuses) or any(r.definition.endswith("_" + DEFINITION) for r in log.results)


def _failed_action(log: JobLog) -> str:
    failed = [r for r in log.results if r.definition == "lava" and r.case != "job" and r.result == "fail"]
    return failed[0].case if failed else ""


def _fault(job: GuestJob, log: JobLog, end: LabEnd, current: str) -> TargetFault | None:
    excerpt = "\n".join(log.last_lines[-EXCERPT_LINES:])
    if end.health == "Canceled":
        return TargetFault("lab-cancelled", end.reason or "the lab cancelled the job", "", excerpt, end.where, current)
    if end.health == "Unreachable":
        return TargetFault("lab-unreachable", end.reason, "", excerpt, end.where, current)
    if end.health == "Timeout" or (end.health == "Incomplete" and _TIMEOUT.search(end.reason)):
        return TargetFault("lab-timeout", end.reason or "the job ran past its deadline", "", excerpt, end.where,
                           current)
    if end.health == "Incomplete":
        if any(_PANIC.search(line) for line in log.target_lines):
            panic = next(line for line in log.target_lines if _PANIC.search(line))
            return TargetFault("guest-crashed", "panic", panic.strip(), excerpt, end.where, current)
        action = _failed_action(log)
        if not _booted(log) and not end.reason.startswith("Infrastructure") and action in BOOT_ACTIONS:
            return TargetFault("boot-failed", end.reason, f"LAVA action {action} failed", excerpt, end.where)
        return TargetFault("lab-error", end.reason or "the job ended Incomplete",
                           f"LAVA action {action} failed" if action else "", excerpt, end.where, current)
    damaged = [b for b in log.blocks if b.data is None]
    if damaged:
        b = damaged[0]
        name = job.scripts[b.index].name if b.index < len(job.scripts) else f"script {b.index}"
        return TargetFault("truncated-log", f"{b.what} of {name}: {b.problem}", "", excerpt, end.where, name)
    if len(log.statuses) < len(job.scripts):
        return TargetFault("truncated-log", f"the log has results of {len(log.statuses)} of {len(job.scripts)} "
                           "scripts", "", excerpt, end.where, current)
    return None


def _text(data: bytes | None) -> str:
    return data.decode(errors="replace") if data is not None else ""


def build_outcome(job: GuestJob, log: JobLog, end: LabEnd, cell_dir: Path, *, seconds: float,
                  console_log: Path | None) -> GuestOutcome:
    """The outcome of one finished (or abandoned) job; evidence files are
    written to CELL_DIR/evidence/<basename> as they are decoded."""
    cases = log.cases(DEFINITION)
    names = case_names(job)
    scripts: list[ScriptResult] = []
    outdir = cell_dir / EVIDENCE_SUBDIR
    current = ""
    for i, (script, case) in enumerate(zip(job.scripts, names, strict=True)):
        status = log.statuses.get(i)
        res = cases.get(case)
        if status is None and res is None:
            current = script.name  # the job ended before or during this script
            break
        output_block = log.block(i, "output")
        output = _text(output_block.data if output_block else None)
        if status is not None:
            st, rc, secs = status.status, status.exit_status, status.seconds
        else:  # the case result came through, the status line did not
            st = {"pass": "pass", "skip": "not-run"}.get(res.result, "fail") if res else "fail"
            rc, secs = None, (res.measurement or 0.0) if res else 0.0
        if res is not None and res.result == "fail" and st == "pass":
            st = "fail"  # what LAVA recorded wins over a status line that says otherwise
        detail = ""
        if st == "not-run":  # worded as the local target words it
            ended = next((r.name for r in scripts if r.status == "timeout"), "")
            if ended:
                detail = f"{ended} did not finish: killed after its time limit"
            elif script.needs is not None:
                detail = f"{script.needs} did not pass"
            else:
                detail = output.strip().removeprefix("not run: ") or "not run"
            output = ""
        elif st == "timeout":
            detail = f"killed after its limit of {script.timeout_s} s (in the guest)"
        result = ScriptResult(script.name, st, rc, secs, output, detail=detail)  # type: ignore[arg-type]
        if st != "not-run":
            for path in script.evidence:
                block = log.block(i, path)
                if block is not None and block.data is not None:
                    outdir.mkdir(parents=True, exist_ok=True)
                    local = outdir / Path(path).name
                    local.write_bytes(block.data)
                    result.evidence[path] = local
                elif block is not None:
                    result.missing[path] = block.problem
                elif path in log.missing.get(i, []):
                    result.missing[path] = "the script did not leave it"
                else:
                    result.missing[path] = "not in the job log"
        scripts.append(result)
    booted = _booted(log)
    if not booted and not scripts:
        current = ""  # nothing says the guest got to its scripts (e.g. no log): the boot's fault
    boot = BootRecord(booted, _boot_seconds(log), {}, "reached the shell prompt" if booted else end.reason,
                      f"LAVA {end.where}")
    fault = _fault(job, log, end, current)
    return GuestOutcome(boot, scripts, fault, console_log, channel="lava")


def _boot_seconds(log: JobLog) -> float:
    """From QEMU's start to the shell prompt: execute-qemu's result is logged
    when QEMU has started, login-action's at the prompt.  Their durations
    alone miss auto-login's wait for "Linux version" (about 1 s of a 2.5 s
    boot, measured), so the log times are used when both are there."""
    qemu, login = log.lava_case("execute-qemu"), log.lava_case("login-action")
    if qemu is not None and login is not None and qemu.extra.get("dt") and login.extra.get("dt"):
        try:
            span = (datetime.fromisoformat(str(login.extra["dt"])) -
                    datetime.fromisoformat(str(qemu.extra["dt"]))).total_seconds()
            return round(span + float(qemu.extra.get("duration", 0.0)), 3)
        except (TypeError, ValueError):
            pass
    total = 0.0
    for r in (qemu, login):
        if r is not None:
            try:
                total += float(r.extra.get("duration", 0.0))
            except (TypeError, ValueError):
                pass
    return round(total, 3)
