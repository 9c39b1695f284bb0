"""A cell's guest work as data, and what came back: no I/O here.

The matrix plans a GuestJob (the workload stage and the nested-KVM check
contribute scripts), a target runs it (target/local.py: the local QEMU;
target/lava/: a LAVA lab) and returns a GuestOutcome.  Verdicts are drawn
from the outcome only, so every target gives the same steps and metrics.

Script semantics every target keeps:
- scripts run in order, each as `sh -c SCRIPT` in the guest (busybox sh), so
  an `exit` inside one ends only that script;
- `needs` names an earlier script that must have passed (exit status 0),
  else this one is "not-run";
- a script the host gave up on ("timeout": the guest stopped answering)
  ends the job: every later script is "not-run";
- a fault (the guest crashed, the lab cancelled the job, ...) ends the job
  too; it is GuestOutcome.fault, naming the script it happened in;
- evidence files a script lists are copied to the host after it ran, under
  CELL_DIR/EVIDENCE_SUBDIR/<basename>; one that could not be copied is absent
  from ScriptResult.evidence and named in ScriptResult.missing.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from orchestrator.vm.machine import MachineShape

EVIDENCE_SUBDIR = "evidence"  # where a target saves evidence files, under the cell directory

ScriptStatus = Literal["pass", "fail", "timeout", "error", "not-run"]
# pass: exit status 0; fail: another exit status; timeout: the host gave up
# waiting (the guest stopped answering); error: the exit status is unknown
# because the channel to the guest broke (the guest lives on); not-run: a
# `needs` did not pass, or an earlier script ended the job.
SCRIPT_STATUSES: tuple[str, ...] = ("pass", "fail", "timeout", "error", "not-run")

FaultKind = Literal["boot-failed", "guest-crashed", "timeout", "connection-lost", "lab-error", "lab-cancelled",
                    "lab-timeout", "lab-unreachable", "truncated-log", "input"]
FAULT_KINDS: tuple[str, ...] = ("boot-failed", "guest-crashed", "timeout", "connection-lost", "lab-error",
                                "lab-cancelled", "lab-timeout", "lab-unreachable", "truncated-log", "input")


@dataclass(frozen=True)
class GuestScript:
    name: str  # unique in the job: "nested-kvm", "workload page-idle", "workload setup"
    script: str  # sh run in the guest
    timeout_s: int  # the host (or lab) gives up after this long
    evidence: tuple[str, ...] = ()  # guest file paths the script leaves behind, copied to the host
    needs: str | None = None  # an earlier script that must have passed, else "not-run"


@dataclass(frozen=True)
class GuestJob:
    cell_key: str
    shape: MachineShape
    kernel_image: Path
    files: dict[str, Path]  # guest path -> host file put in the initramfs (guest programs, selftests)
    scripts: tuple[GuestScript, ...]
    boot_timeout_s: float  # from power-on to the ready marker
    boot_silence_s: float = 90.0  # no console output for this long during boot is a hang
    ssh_timeout_s: float = 60.0  # local target: how long to wait for the guest's sshd

    def __post_init__(self) -> None:
        names = [s.name for s in self.scripts]
        for i, s in enumerate(self.scripts):
            if names.index(s.name) != i:
                raise ValueError(f"two scripts named {s.name!r}")
            if s.needs is not None and s.needs not in names[:i]:
                raise ValueError(f"script {s.name!r} needs {s.needs!r}, which is not an earlier script")


@dataclass
class BootRecord:
    ok: bool
    seconds: float
    stages: dict[str, float]  # boot stage -> seconds since power-on ("ready": the guest took commands)
    detail: str  # what the guest said about itself ("guest uptime 3.1 s"), or why it did not boot
    description: str  # what booted it: the QEMU command line, or the LAVA job id / URL


@dataclass
class ScriptResult:
    name: str
    status: ScriptStatus
    exit_status: int | None  # None: not run, or the host never learnt it
    seconds: float  # host-side wall time of the script
    output: str  # stdout + stderr
    evidence: dict[str, Path] = field(default_factory=dict)  # guest path -> host file in the cell directory
    missing: dict[str, str] = field(default_factory=dict)  # guest path -> why it could not be copied
    detail: str = ""  # why it is timeout / error / not-run (one line)


@dataclass(frozen=True)
class TargetFault:
    kind: FaultKind
    reason: str  # the target's or lab's own word: "panic", "qemu-exit", "Infrastructure error", ...
    detail: str = ""  # one line more
    excerpt: str = ""  # the last lines of the console / job log
    where: str = ""  # a lab's job URL or id; the boot stage reached for boot-failed
    script: str = ""  # the script running when it happened ("" during boot)


@dataclass
class GuestOutcome:
    boot: BootRecord
    scripts: list[ScriptResult]
    fault: TargetFault | None
    console_log: Path | None
    channel: str = ""  # how scripts reached the guest: "ssh", "serial", "lava"
    channel_note: str = ""  # why the preferred channel was not used from the start ("" if it was)
    channel_lost: str = ""  # the channel dropped mid-run and later scripts used a fallback

    def result(self, name: str) -> ScriptResult | None:
        return next((r for r in self.scripts if r.name == name), None)


# A target calls it with the outcome so far (the same object, growing) after
# the boot and after each script, so the cell records steps as they happen;
# a target that learns everything at the end (a lab) may call it only then.
Progress = Callable[[GuestOutcome], None]
