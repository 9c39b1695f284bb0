"""The workload stage of a cell: its tracepoint set, the scripts a target
runs, and, from their results, the run with its metrics and the host facts
every timing claim carries."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.target.job import ScriptResult
from orchestrator.workload.definitions import Workload
from orchestrator.workload.evidence import WorkloadPlan, collect_workload, plan_workload
from orchestrator.workload.outcome import WorkloadRun
from orchestrator.workload.suite_results import suite_testcases
from orchestrator.workload.timing import host_facts, host_load, is_timed
from orchestrator.workload.tracing import load_tracepoint_set


@dataclass
class WorkloadStage:
    run: WorkloadRun
    metrics: dict[str, float] = field(default_factory=dict)  # host facts and load, then the run's own


def plan_workload_stage(workload: Workload, params: dict, config_set: str, *, needs: str | None = None) -> WorkloadPlan:
    tpset = load_tracepoint_set(workload.tracepoints) if workload.tracepoints else None
    return plan_workload(workload, params, tpset, timed=is_timed(config_set), needs=needs)


class HostLoad:
    """The host's load at both ends of the workload: a timing figure measured on
    a loaded host says so in the report (orchestrator/workload/timing.py).  The
    cell calls before() when the workload starts and after() when it ended (as
    the target reports them); whichever was not called is measured at collection."""

    def __init__(self) -> None:
        self.figures: dict[str, dict[str, float]] = {}

    def before(self) -> None:
        self.figures.setdefault("before", host_load("before"))

    def after(self) -> None:
        self.before()
        self.figures.setdefault("after", host_load("after"))


def collect_workload_stage(plan: WorkloadPlan, results: Sequence[ScriptResult], evidence_dir: Path, load: HostLoad, *,
                           via: str = "ssh", ssh_lost: str = "") -> WorkloadStage:
    load.after()
    metrics: dict[str, float] = {}
    metrics.update(host_facts())
    metrics.update(load.figures["before"])
    metrics.update(load.figures["after"])
    run = collect_workload(plan, results, evidence_dir, via=via, ssh_lost=ssh_lost)
    if plan.workload.results == "ktap":  # a suite: one result per test, from its output or the console copy
        run.testcases = suite_testcases(run.output, evidence_dir.parent / "console.log", ended_by=run.ended_by)
    metrics.update(run.metrics)
    return WorkloadStage(run, metrics)
