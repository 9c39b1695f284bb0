"""A real page-idle cell (baseline, evidence, default shape, the default
matrix's parameters) through ./run-matrix's runner on the local target: the
JUnit testcases and the metric keys are those the runner gave before the
execution-target seam (issue 20).  Recorded with ./run-matrix on one cell per
workload kind at b768cd9 (before: cells still ran
the old way) and b0fe264 (after): identical testcases
and statuses in all 8 cells; the metric keys differ only by
trace.*.rate_per_s, present in either run when two or more of that event
survived the trace buffer.  One boot, ~1.5 min on 2 cores."""
from __future__ import annotations

import json

import pytest
from junitparser import JUnitXml

from orchestrator.matrix.options import RunOptions
from orchestrator.matrix.scheduler import run_cells
from orchestrator.matrix.spec import load_matrix

pytestmark = pytest.mark.integration

CASES = ["apply 0000-KVM-arm64-measurement-knob-stage-2-AF-in-software.patch", "config verification", "build",
         "boot", "nested-kvm", "workload page-idle", "verdict page-idle: path exercised",
         "verdict page-idle: no kernel warnings", "expect page-idle: aging takes mmu_lock for write"]
_LOCK = [f"lock.mmu_lock.{mode}.{what}" for mode in ("read", "write") for what in (
    "acq_bounces", "acquisitions", "con_bounces", "contentions", "holdtime_avg_us", "holdtime_max_us",
    "holdtime_min_us", "holdtime_total_us", "waittime_avg_us", "waittime_max_us", "waittime_min_us",
    "waittime_total_us")]
_PHASES = [f"phase.{p}{suffix}" for p in ("populating_memory", "reading_from_idle_memory",
                                          "reading_from_populated_memory", "writing_to_idle_memory",
                                          "writing_to_populated_memory") for suffix in ("_s", "_total_s")]
METRIC_KEYS = {
    "boot.ready_s", "nested_kvm.ok", "workload.seconds", "memcg.oom_kill", "host.cores",
    *(f"host.{end}_load{n}" for end in ("before", "after") for n in (1, 5, 15)),
    *(f"kprobe.{p}.{w}" for p in ("age_gfn", "test_age_gfn", "unmap_gfn_range") for w in ("hits", "missed")),
    "lock.mmu_lock.present", *_LOCK, "lru_gen.enabled", "lru_gen.memcgs",
    "phase.mark_memory_idle_s", "phase.mark_memory_idle_2_s", "phase.mark_memory_idle_total_s", *_PHASES,
    "trace.events_in_buffer", "trace.events_lost", "trace.events_written", "trace.kvm_age_hva.count",
    "trace.kvm_age_hva.rate_per_s", "trace.kvm_guest_fault.count", "trace.tracing_mark_write.count",
}
# vmstat.* keys are counters that changed during the run (parsers/vmstat.delta): which ones is the guest's business.
VARIABLE_FAMILY = "vmstat."
# The trace ring buffer overflows in this cell (~230k of ~270k events lost): the
# START marker survives in some runs and not in others, and a rate needs both markers.
OPTIONAL = {"trace.tracing_mark_write.rate_per_s"}


def test_page_idle_cell_on_the_local_target_keeps_its_testcases_and_metric_keys(baseline_build, tmp_path) -> None:
    matrix = tmp_path / "m.yaml"
    matrix.write_text("name: seam\nvariants: [baseline]\nconfig_sets: [evidence]\nmachines: [default]\n"
                      "workloads: [{name: page-idle, params: {vcpus: 1, bytes: 16M}}]\ntarget: local\n")
    m = load_matrix(matrix)
    out = tmp_path / "results"
    rc = run_cells(m, m.cells, RunOptions(results_dir=out, matrix_arg=str(matrix), target=m.target))
    (cell_dir,) = (out / "cells").iterdir()
    rec = json.loads((cell_dir / "cell.json").read_text())
    report = "\n".join(f"{s['name']}: {s['status']} {s['message']} {s['excerpt'][-1500:]}" for s in rec["steps"])
    assert rc == 0, report
    (suite,) = list(JUnitXml.fromfile(str(out / "junit.xml")))
    assert [c.name for c in suite] == CASES
    keys = set(rec["metrics"])
    assert {k for k in keys if not k.startswith(VARIABLE_FAMILY)} - OPTIONAL == METRIC_KEYS
    # What ran the guest is in the record and in the KCIDB environment.
    assert rec["target"]["kind"] == "qemu" and rec["target"]["qemu"]
    kcidb = json.loads((out / "kcidb.json").read_text())
    env = {json.dumps(t["environment"], sort_keys=True) for t in kcidb["tests"]}
    assert len(env) == 1 and rec["target"]["qemu"] in next(iter(env))
    # The evidence came back where the reports look for it.
    assert {"lock_stat", "dmesg", "workload.out", "trace"} <= {p.name for p in (cell_dir / "evidence").iterdir()}
