"""Each workload, briefly, on the real baseline kernel through the real runner
(orchestrator.matrix.cell.run_cell): boot, nested KVM, the workload in its memcg
with the `aging` tracepoints, verdicts.  Three boots, ~2-3 min on 2 cores."""
from __future__ import annotations

import pytest

from orchestrator.matrix.spec import Cell, WorkloadRef
from orchestrator.reports.results import PASSED
from orchestrator.matrix.cell import run_cell
from orchestrator.matrix.cell_build import BuildOutcome
from orchestrator.matrix.options import RunOptions

pytestmark = pytest.mark.integration

# name, small params, metrics that must be present and > 0
CASES = [
    ("page-idle", {"vcpus": 1, "bytes": "8M"},
     ["phase.mark_memory_idle_s", "phase.populating_memory_s"]),
    ("mglru-aging", {"vcpus": 1, "bytes": "16M", "iterations": 100},
     ["mglru.aging_passes", "mglru.aging_total_s", "mglru.aging_avg_s", "mglru.aging_generations",
      "mglru.vcpu_passes", "mglru.vcpu_wall_s", "mglru.vcpu_pages_per_s"]),
    # Q3 of the aging study: aging while the memcg is capped below the VM (zram from with-swap.sh)
    ("mglru-aging", {"vcpus": 1, "bytes": "16M", "iterations": 8, "limit_pct": 75, "zram": "256M"},
     ["mglru.aging_passes", "mglru.memcg_pgsteal", "mglru.reclaim_pages_per_s", "mglru.limit_bytes",
      "kprobe.unmap_gfn_range.hits"]),
    ("memcg-reclaim", {"vcpus": 1, "bytes": "8M", "seconds": 4},
     ["reclaim.limit_bytes", "reclaim.memcg_pgsteal", "reclaim.memcg_pgscan", "reclaim.reclaim_requests",
      "reclaim.vcpu_passes", "reclaim.vcpu_pages_per_s", "vmstat.pswpout"]),
]


@pytest.mark.parametrize("name, params, metrics", CASES, ids=["page-idle", "mglru-aging", "mglru-aging-reclaim", "memcg-reclaim"])
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
        assert m["mglru.vcpu_passes"] == params["iterations"]  # each vCPU ran its -i passes
        if "limit_pct" in params:
            assert m["mglru.limit_bytes"] < m["mglru.usage_bytes"] and m["mglru.swap_made_here"] == 1
    if name == "memcg-reclaim":
        assert m["reclaim.limit_bytes"] < m["reclaim.usage_bytes"]
        assert m["reclaim.swap_made_here"] == 1  # zram came from the script, not the boot
        assert m["reclaim.reclaim_errors"] == 0


def test_timed_cell_arms_nothing_and_is_judged_only_on_what_it_has(baseline_build, tmp_path):
    """A cell of the `timing` set: no kprobe, tracepoint or lock_stat collection
    while the workload runs (the kernel here has them all: LOCK_STAT, kprobes),
    so no such figure may appear, and the verdicts that need them are not
    applicable rather than failed."""
    params = (("bytes", "16M"), ("iterations", 60), ("vcpus", 1))
    # The baseline kernel under its own label: the expectation judged (and found not
    # applicable) is the baseline's, the kernel's own.
    cell = Cell("baseline", "timing", "default", WorkloadRef("mglru-aging", params), 1)
    opts = RunOptions(results_dir=tmp_path, matrix_arg="aging-study-ci")
    rec = run_cell(cell, BuildOutcome([], baseline_build), opts, tmp_path / cell.key, "integration-test")
    steps = {s.name: s for s in rec.steps}
    assert steps["workload mglru-aging"].status == PASSED, steps["workload mglru-aging"].excerpt[-2000:]
    assert steps["verdict mglru-aging: path exercised"].status == "skipped"
    expects = [s for n, s in steps.items() if n.startswith("expect mglru-aging:")]
    assert [s.name for s in expects] == ["expect mglru-aging: aging takes mmu_lock for write"]
    assert all(s.status == "skipped" and "not applicable in a timed cell" in s.message for s in expects)
    assert steps["verdict mglru-aging: no kernel warnings"].status == PASSED
    m = rec.metrics
    assert not [k for k in m if k.startswith(("lock.", "kprobe.", "trace."))], sorted(m)
    assert m["mglru.aging_passes"] > 0 and m["mglru.vcpu_wall_s"] > 0
    assert {"host.before_load1", "host.after_load1", "host.cores"} <= set(m)
    evidence = tmp_path / cell.key / "evidence"
    assert not (evidence / "kprobe_profile").exists() and not (evidence / "lock_stat").exists()
    assert "qemu: " in steps["boot"].output and "-accel" in steps["boot"].output
