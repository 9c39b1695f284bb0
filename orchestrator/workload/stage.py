"""The workload stage of a cell: its tracepoint set, the host facts every
timing claim carries, and the run itself with its collectors."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.vm.shell import GuestShell
from orchestrator.workload.definitions import Workload
from orchestrator.workload.evidence import run_workload
from orchestrator.workload.outcome import WorkloadRun
from orchestrator.workload.suite_results import suite_testcases
from orchestrator.workload.timing import host_facts, host_load, is_timed
from orchestrator.workload.tracing import load_tracepoint_set


@dataclass
class WorkloadStage:
    run: WorkloadRun
    metrics: dict[str, float] = field(default_factory=dict)  # host facts and load, then the run's own


def run_workload_stage(shell: GuestShell, workload: Workload, params: dict, config_set: str,
                       evidence_dir: Path) -> WorkloadStage:
    tpset = load_tracepoint_set(workload.tracepoints) if workload.tracepoints else None
    # Host load at both ends of the workload: a timing figure measured on a
    # loaded host says so in the report (orchestrator/workload/timing.py).
    metrics: dict[str, float] = {}
    metrics.update(host_facts())
    metrics.update(host_load("before"))
    run = run_workload(shell, workload, params, tpset, evidence_dir, timed=is_timed(config_set))
    if workload.results == "ktap":  # a suite: one result per test, from its output or the console copy
        run.testcases = suite_testcases(run.output, evidence_dir.parent / "console.log", ended_by=run.ended_by)
    metrics.update(host_load("after"))
    metrics.update(run.metrics)
    return WorkloadStage(run, metrics)
