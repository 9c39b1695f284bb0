"""./run-matrix --matrix kvm-selftests-faults for real: baseline and three
test-only kernels that break psci_test (a wrong CPU_ON entry point, a CPU_ON
that never returns, a CPU_ON that panics; tests/fixtures/kvm-selftests-series)
on a three-test subset.  Each ends with the right per-test statuses, nothing
is lost after a crash, and the regression is called first in summary.md,
JUnit and KCIDB.  Cost on 2 cores: three small incremental kernel builds
(hypercalls.c/psci.c only), four boots, one 60 s timeout: ~6-8 min."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import JUnitXml
from kcidb_io.schema import V5_3

from orchestrator.reports.results import load_run

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def faults_run(tmp_path_factory, baseline_build) -> Path:
    out = tmp_path_factory.mktemp("kst") / "faults"
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run-matrix", "--matrix", "kvm-selftests-faults",
                          "--results", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert res.returncode == 1, res.stderr[-3000:]  # the broken variants fail, nothing errors
    return out


def statuses(run: Path) -> dict[str, dict[str, tuple[str, str]]]:
    return {r.cell["variant"]: {t["name"]: (t["status"], t["reason"]) for t in r.testcases}
            for r, _ in load_run(run).records}


def test_regression_hang_and_crash_end_with_the_right_statuses(faults_run):
    got = statuses(faults_run)
    assert got["baseline"] == {n: ("pass", "") for n in ("hypercalls", "psci_test", "smccc_filter")}
    assert got["broken-cpu-on"]["psci_test"][0] == "fail" and got["broken-cpu-on"]["smccc_filter"] == ("pass", "")
    assert got["hang-cpu-on"]["psci_test"] == ("fail", "TIMEOUT 60 s")
    assert got["hang-cpu-on"]["smccc_filter"] == ("pass", "")
    crash = got["crash-cpu-on"]
    assert crash["hypercalls"] == ("pass", "")
    assert crash["psci_test"][0] == "fail" and "test only: PSCI CPU_ON" in crash["psci_test"][1]
    assert crash["smccc_filter"][0] == "not run"


def test_the_regression_in_summary_junit_and_kcidb(faults_run):
    summary = (faults_run / "summary.md").read_text()
    assert "REGRESSION psci_test (baseline → broken-cpu-on)" in summary
    failures = {(s.name.split(".")[0], c.name) for s in JUnitXml.fromfile(str(faults_run / "junit.xml")) for c in s
                if c.result and c.result[0].__class__.__name__ == "Failure"}
    assert ("broken-cpu-on", "kselftest.kvm.psci_test") in failures
    assert ("baseline", "kselftest.kvm.psci_test") not in failures
    data = json.loads((faults_run / "kcidb.json").read_text())
    V5_3.validate(data)
    kst = {(t["misc"]["variant"], t["path"]): t["status"] for t in data["tests"] if t["path"].startswith("kselftest.kvm.")}
    assert kst[("broken-cpu-on", "kselftest.kvm.psci_test")] == "FAIL"
    assert kst[("crash-cpu-on", "kselftest.kvm.smccc_filter")] == "MISS"
