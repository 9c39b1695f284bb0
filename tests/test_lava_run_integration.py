"""Real cells through LAVA's dispatcher on this machine (`lava-run`, targets/
lava-local.yaml) against the same cells on the local QEMU target, both run as
./run-matrix runs them (run_cells):

- page-idle on baseline (evidence config set, the default matrix's
  parameters): the same JUnit testcases with the same statuses, the same
  metric keys, and the same lock evidence (the KVM lock classes lock_stat
  lists; mmu_lock taken for write once per age_gfn call);
- a workload that segfaults is a failed step (LAVA reports its test case
  fail, the job itself completes), and one killed by its guest-side limit
  fails with the local target's words.  LAVA's *own* timeout (lab-timeout)
  is checked on a job log captured from a real lava-run timeout
  (tests/test_lava_joblog.py): producing it here would cost a minute more.

Every QEMU of a test carries a token on its kernel command line and every
child process in its environment (tests/faults_support.py): nothing may be
left running, on either target.  Root and lava-dispatcher (./scripts/
bootstrap installs it).  ~2.5 min at load 4 on 2 cores.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from junitparser import JUnitXml

import faults_support as fs
from conftest import missing_prerequisite
from orchestrator.matrix.options import RunOptions
from orchestrator.matrix.scheduler import run_cells
from orchestrator.matrix.spec import load_matrix
from orchestrator.parsers.lockstat import parse_lock_stat
from orchestrator.target.lava.dispatcher import DISPATCHER_TMP
from orchestrator.target.lava.joblog import parse_job_log

pytestmark = pytest.mark.integration

# vmstat.* are the counters that moved (the guest's business); a trace rate
# needs both trace markers, which an overflowing ring buffer may drop
# (the same exceptions as tests/test_target_local_integration.py).
VARIABLE_FAMILY = "vmstat."
OPTIONAL = {"trace.tracing_mark_write.rate_per_s"}


@pytest.fixture
def lava_run() -> None:
    if shutil.which("lava-run") is None:
        missing_prerequisite("lava-run not on PATH: apt-get install --no-install-recommends lava-dispatcher "
                             "(or ./scripts/bootstrap as root)")
    if os.geteuid() != 0:
        missing_prerequisite("lava-run needs root")


@pytest.fixture
def token(monkeypatch):
    tok = fs.new_token()
    monkeypatch.setenv(fs.TOKEN_ENV, tok)
    yield tok
    left = fs.wait_no_leftovers(tok)
    fs.kill_leftovers(tok)
    assert left == [], f"processes left behind: {left}"


def lava_job_ids(recs: list[dict]) -> list[str]:
    """The lava-run job ids of cells (their boot step names the job)."""
    ids = []
    for rec in recs:
        boot = next(s for s in rec["steps"] if s["name"] == "boot")
        ids += re.findall(r"lava-run job (\d+)", boot["output"])
    return ids


def assert_dispatcher_tmp_removed(recs: list[dict]) -> None:
    ids = lava_job_ids(recs)
    assert len(ids) == len(recs), [r["steps"] for r in recs]
    assert [i for i in ids if (DISPATCHER_TMP / i).exists()] == [], "lava-run temporary directories left"


def run(matrix_text: str, target: str, out: Path) -> tuple[int, list[dict]]:
    matrix = out.with_suffix(".yaml")
    matrix.write_text(matrix_text)
    m = load_matrix(matrix)
    rc = run_cells(m, m.cells, RunOptions(results_dir=out, matrix_arg=str(matrix), target=m.target, jobs=1))
    return rc, [json.loads((d / "cell.json").read_text()) for d in sorted((out / "cells").iterdir())]


def junit_cases(out: Path) -> list[tuple[str, str]]:
    """(name, result) of every testcase, in order."""
    cases = []
    for suite in JUnitXml.fromfile(str(out / "junit.xml")):
        for case in suite:
            cases.append((case.name, type(case.result[0]).__name__ if case.result else "pass"))
    return cases


def report(rec: dict) -> str:
    return "\n".join(f"{s['name']}: {s['status']} {s['message']} {s['excerpt'][-1500:]}" for s in rec["steps"])


def test_page_idle_cell_gives_the_same_testcases_and_lock_evidence_through_lava_run(
        lava_run, token, baseline_build, tmp_path, monkeypatch) -> None:
    import orchestrator.vm.machine
    monkeypatch.setattr(orchestrator.vm.machine, "MACHINES_DIR", tmp_path / "machines")
    fs.write_shape(tmp_path / "machines", "default", token)  # the default shape, the token on its command line
    outs, recs = {}, {}
    for target in ("local", "lava-local"):
        text = ("name: lava-eq\nvariants: [baseline]\nconfig_sets: [evidence]\nmachines: [default]\n"
                f"workloads: [{{name: page-idle, params: {{vcpus: 1, bytes: 16M}}}}]\ntarget: {target}\n")
        outs[target] = tmp_path / target
        rc, (recs[target],) = run(text, target, outs[target])
        assert rc == 0, f"{target}:\n{report(recs[target])}"
    local, lava = recs["local"], recs["lava-local"]
    assert lava["target"]["kind"] == "lava" and lava["target"]["runner"] == "lava-run"
    # The same testcases, all passed, on both targets.
    assert junit_cases(outs["lava-local"]) == junit_cases(outs["local"])
    assert [(s["name"], s["status"]) for s in lava["steps"]] == [(s["name"], s["status"]) for s in local["steps"]]
    # The same metric keys.
    def keys(rec: dict) -> set[str]:
        return {k for k in rec["metrics"] if not k.startswith(VARIABLE_FAMILY)} - OPTIONAL
    assert keys(lava) == keys(local)
    assert {k for k in keys(lava) if k.startswith("lock.mmu_lock.")} and "kprobe.age_gfn.hits" in keys(lava)
    # The same lock evidence: lock_stat came back whole through the job log (a
    # gzip+base64 block) and lists the same KVM lock classes; the guest's other
    # classes differ (no network or SSH in a LAVA job).
    def kvm_classes(target: str) -> set[str]:
        (cell_dir,) = (outs[target] / "cells").iterdir()
        ls = parse_lock_stat((cell_dir / "evidence" / "lock_stat").read_text())
        return {c.name for c in ls.classes if "kvm" in c.name}
    assert "&(kvm)->mmu_lock" in kvm_classes("local")
    assert kvm_classes("lava-local") == kvm_classes("local")
    for rec in (local, lava):  # baseline: aging takes mmu_lock for write, once per age_gfn call
        m = rec["metrics"]
        assert m["kprobe.age_gfn.hits"] > 100_000
        assert abs(m["lock.mmu_lock.write.acquisitions"] - m["kprobe.age_gfn.hits"]) < 1000
    ratio = lava["metrics"]["lock.mmu_lock.write.acquisitions"] / local["metrics"]["lock.mmu_lock.write.acquisitions"]
    assert 0.9 < ratio < 1.1, ratio
    # LAVA's files are kept beside the cell's own.
    (lava_dir,) = (outs["lava-local"] / "cells").iterdir()
    assert {"job.yaml", "device.yaml", "job-log.yaml"} <= {p.name for p in (lava_dir / "lava").iterdir()}
    assert_dispatcher_tmp_removed([lava])


@pytest.fixture(scope="module")
def programs(tmp_path_factory, baseline_build) -> dict[str, Path]:
    return fs.fault_programs(tmp_path_factory.mktemp("fault-programs"))


def test_failing_workloads_are_failed_steps_through_lava_run(lava_run, token, programs, tmp_path,
                                                              monkeypatch) -> None:
    fs.install(tmp_path / "machines", programs, monkeypatch)
    fs.write_shape(tmp_path / "machines", "faulty", token)
    text = ("name: lava-faults\nvariants: [baseline]\nmachines: [faulty]\n"
            "workloads: [{name: fault-segv}, {name: fault-timeout}]\ntarget: lava-local\n")
    out = tmp_path / "results"
    rc, recs = run(text, "lava-local", out)
    # Not a passed run (the test workloads also leave the aging expectations
    # unmeasured: ERROR steps, as on the local target).
    assert rc != 0
    by_workload = {next(s["name"] for s in r["steps"] if s["name"].startswith("workload ")): r for r in recs}
    segv = {s["name"]: s for s in by_workload["workload fault-segv"]["steps"]}
    # The words the local target gives (tests/test_faults_guest.py).
    step = segv["workload fault-segv"]
    assert step["status"] == "failed", report(by_workload["workload fault-segv"])
    assert step["message"] == "/opt/orch/test-faults/fault segv: killed by SIGSEGV (exit status 139)"
    assert "about to dereference NULL" in step["excerpt"]
    assert segv["boot"]["status"] == "passed" and segv["nested-kvm"]["status"] == "passed"
    # LAVA saw it as a failed test case in a job that completed: the job's
    # pass is not the cell's.
    (segv_dir,) = [d for d in (out / "cells").iterdir() if "fault-segv" in d.name]
    log = parse_job_log((segv_dir / "lava" / "job-log.yaml").read_text())
    assert log.cases("orch")["workload_fault-segv"].result == "fail"
    assert log.job_result() is not None and log.job_result().result == "pass"
    assert any(c == ("workload fault-segv", "Failure") for c in junit_cases(out))
    timeout = {s["name"]: s for s in by_workload["workload fault-timeout"]["steps"]}["workload fault-timeout"]
    assert timeout["status"] == "failed"
    assert timeout["message"] == ("/opt/orch/test-faults/fault-sh sleep 60: timed out: the guest-side limit of 3 s "
                                  "killed it (SIGKILL)")
    assert "sleeping 60 s" in timeout["excerpt"] and timeout["seconds"] < 30
    assert_dispatcher_tmp_removed(recs)
