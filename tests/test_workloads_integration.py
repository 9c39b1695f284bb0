"""Each workload, briefly, on the real baseline kernel through the real runner
(orchestrator.runner.run_cell): boot, nested KVM, the workload in its memcg
with the `aging` tracepoints, verdicts.  Three boots, ~2-3 min on 2 cores."""
from __future__ import annotations

import pytest

from orchestrator.matrix import Cell, WorkloadRef
from orchestrator.results import PASSED
from orchestrator.runner import BuildOutcome, RunOptions, run_cell

pytestmark = pytest.mark.integration

# name, small params, metrics that must be present and > 0
CASES = [
    ("page-idle", {"vcpus": 1, "bytes": "8M"},
     ["phase.mark_memory_idle_s", "phase.populating_memory_s"]),
    ("mglru-aging", {"vcpus": 1, "bytes": "16M", "iterations": 100},
     ["mglru.aging_passes", "mglru.aging_total_s", "mglru.aging_avg_s", "mglru.aging_generations",
      "mglru.vcpu_passes", "mglru.vcpu_wall_s", "mglru.vcpu_pages_per_s"]),
    ("memcg-reclaim", {"vcpus": 1, "bytes": "8M", "seconds": 4},
     ["reclaim.limit_bytes", "reclaim.memcg_pgsteal", "reclaim.memcg_pgscan", "reclaim.reclaim_requests",
      "reclaim.vcpu_passes", "reclaim.vcpu_pages_per_s", "vmstat.pswpout"]),
]


@pytest.mark.parametrize("name, params, metrics", CASES, ids=[c[0] for c in CASES])
def test_workload_on_baseline(name, params, metrics, baseline_build, tmp_path):
    cell = Cell("baseline", "evidence", "default", WorkloadRef(name, tuple(sorted(params.items()))), 1)
    opts = RunOptions(results_dir=tmp_path, matrix_arg="workloads")
    rec = run_cell(cell, BuildOutcome([], baseline_build), opts, tmp_path / cell.key, "integration-test")
    steps = {s.name: s for s in rec.steps}
    report = "\n".join(f"{s.name}: {s.status} {s.message} {s.excerpt[-1500:]}" for s in rec.steps)
    for step in ("boot", "nested-kvm", f"workload {name}", f"verdict {name}: path exercised",
                 f"verdict {name}: no kernel warnings"):
        assert step in steps and steps[step].status == PASSED, report
    # Baseline: every aging call under the write lock (patches/expectations.yaml).
    expects = [s for s in rec.steps if s.name.startswith(f"expect {name}:")]
    assert expects and all(s.status == PASSED for s in expects), report
    m = rec.metrics
    assert m["kprobe.age_gfn.hits"] > 0 and m["lock.mmu_lock.write.acquisitions"] > 0
    missing = [k for k in metrics if not m.get(k, 0) > 0]
    assert not missing, f"metrics missing or not > 0: {missing}\n{report}"
    if name == "mglru-aging":
        assert m["mglru.aging_errors"] == 0
        assert m["mglru.vcpu_passes"] == 100  # each vCPU ran its -i passes
    if name == "memcg-reclaim":
        assert m["reclaim.limit_bytes"] < m["reclaim.usage_bytes"]
        assert m["reclaim.swap_made_here"] == 1  # zram came from the script, not the boot
        assert m["reclaim.reclaim_errors"] == 0
