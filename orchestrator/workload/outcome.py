"""What a workload run produced: the record the workload stage hands to the
judge (judge/verdicts.py) and the reports.  Pure data, so judging a run does
not import the code that talks to the guest."""
from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.parsers.crashlog import Crash
from orchestrator.parsers.ktap import TestResult  # noqa: F401 - re-exported: a suite's per-test results

# Lock classes read from /proc/lock_stat, and the metric prefix each becomes.
LOCK_CLASSES = {"&(kvm)->mmu_lock": "lock.mmu_lock"}


@dataclass
class WorkloadRun:
    name: str
    command: str
    exit_status: int | None  # None: the workload did not finish (host-side timeout)
    seconds: float
    output: str
    timed_out: bool
    metrics: dict[str, float] = field(default_factory=dict)
    crashes: list[Crash] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # evidence files that could not be fetched
    via: str = "ssh"
    ended_by: str = ""  # why it did not end normally: timeout, OOM kill, signal ... ("" if it exited)
    ssh_lost: str = ""  # SSH dropped during the run (the rest used the serial console)
    dmesg_excerpt: str = ""  # the guest kernel's lines about how it ended (OOM report, fault)
    timed: bool = False  # nothing was armed: no lock_stat, kprobe or trace figures (orchestrator/workload/timing.py)
    ages_kvm: bool = True  # the workload declares that it ages KVM memory (workloads/*.yaml `ages_kvm`)
    testcases: list[TestResult] = field(default_factory=list)  # a suite's results, one per test (`results: ktap`)
