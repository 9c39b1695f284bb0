"""A KVM selftest that regresses, hangs or crashes the kernel, as every report
shows it.  The cell records are a real run of matrices/kvm-selftests-faults.yaml
(tests/fixtures/kvm-selftests/faults-run; kernel, config and QEMU in the README
there): baseline and three test-only variants that break the `psci_test`
selftest (tests/fixtures/kvm-selftests-series), tests hypercalls, psci_test,
smccc_filter, 60 s each."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

from junitparser import JUnitXml
from kcidb_io.schema import V5_3

from orchestrator.reports.compare import run_headline, two_run_headline
from orchestrator.reports.junit import write_junit
from orchestrator.reports.kcidb import KcidbOptions, from_run
from orchestrator.reports.results import CellRecord, load_run
from orchestrator.reports.suite_tests import headline_lines, suite_section
from orchestrator.reports.summary import headline_markdown

RUN = Path(__file__).parent / "fixtures" / "kvm-selftests" / "faults-run"
SERIES = Path(__file__).parent / "fixtures" / "kvm-selftests-series"


def records() -> list[tuple[CellRecord, Path]]:
    out = []
    for d in sorted((RUN / "cells").iterdir()):
        rec = CellRecord.load(d)
        assert rec is not None, d
        out.append((rec, d))
    return out


def by_variant() -> dict[str, CellRecord]:
    return {r.cell["variant"]: r for r, _ in records()}


def cases(rec: CellRecord) -> dict[str, tuple[str, str]]:
    return {t["name"]: (t["status"], t["reason"]) for t in rec.testcases}


def test_each_fault_ends_with_the_right_statuses_and_nothing_lost():
    v = by_variant()
    assert cases(v["baseline"]) == {"psci_test": ("pass", ""), "hypercalls": ("pass", ""), "smccc_filter": ("pass", "")}
    broken = cases(v["broken-cpu-on"])
    assert broken["psci_test"][0] == "fail" and broken["psci_test"][1].startswith("exit=")
    assert broken["hypercalls"] == broken["smccc_filter"] == ("pass", "")
    hang = cases(v["hang-cpu-on"])
    assert hang["psci_test"] == ("fail", "TIMEOUT 60 s")
    assert hang["smccc_filter"] == ("pass", "")  # the run went on after the timeout
    crash = cases(v["crash-cpu-on"])
    assert crash["hypercalls"] == ("pass", "")
    assert crash["psci_test"][0] == "fail" and crash["psci_test"][1].startswith("kernel crash: ")
    assert "test only: PSCI CPU_ON" in crash["psci_test"][1]
    assert crash["smccc_filter"][0] == "not run" and "during psci_test" in crash["smccc_filter"][1]


def test_the_regression_comes_first_in_the_headline_and_the_summary():
    recs = [r for r, _ in records()]
    h = run_headline("kvm-selftests-faults", recs, [("baseline", "broken-cpu-on"), ("baseline", "hang-cpu-on"),
                                                   ("baseline", "crash-cpu-on")], [])
    assert h.tests[0].startswith("REGRESSION psci_test (baseline → broken-cpu-on): fails on broken-cpu-on")
    regressions = [t for t in h.tests if t.startswith("REGRESSION")]
    assert [t.split(" (")[1].split(")")[0] for t in regressions] == [
        "baseline → broken-cpu-on", "baseline → crash-cpu-on", "baseline → hang-cpu-on"]
    md = headline_markdown(h)
    assert md.index("REGRESSION psci_test") < md.index("cell(s)") + 400  # right after the cell count
    section = suite_section(recs)
    assert section is not None and "**Regression (3)** — headline" in section
    assert "| psci_test | pass" in section and "TIMEOUT 60 s" in section and "not run" in section


def test_junit_one_testcase_per_selftest(tmp_path: Path):
    write_junit(records(), tmp_path / "junit.xml")
    xml = JUnitXml.fromfile(str(tmp_path / "junit.xml"))
    got = {}
    for suite in xml:
        for case in suite:
            if case.name.startswith("kselftest.kvm."):
                kind = case.result[0].__class__.__name__ if case.result else "pass"
                got[(suite.name.split(".")[0], case.name)] = kind
    assert got[("baseline", "kselftest.kvm.psci_test")] == "pass"
    assert got[("broken-cpu-on", "kselftest.kvm.psci_test")] == "Failure"
    assert got[("broken-cpu-on", "kselftest.kvm.smccc_filter")] == "pass"
    assert got[("crash-cpu-on", "kselftest.kvm.smccc_filter")] == "Skipped"


def test_kcidb_one_test_per_selftest_validates(tmp_path: Path):
    data = from_run(KcidbOptions(), SimpleNamespace(series=SERIES, source=None, name="kvm-selftests-faults"),
                    records(), None, tmp_path)
    assert V5_3.validate(data) is data
    tests = {(t["misc"]["variant"], t["path"]): t["status"] for t in data["tests"] if t["path"].startswith("kselftest.")}
    assert tests[("baseline", "kselftest.kvm.psci_test")] == "PASS"
    assert tests[("broken-cpu-on", "kselftest.kvm.psci_test")] == "FAIL"
    assert tests[("crash-cpu-on", "kselftest.kvm.smccc_filter")] == "MISS"


def _run_of(tmp: Path, variant: str, label: str) -> Path:
    """One variant's cell as a results directory of its own (tmp/variant), its variant renamed to `label`."""
    out = tmp / variant
    (out / "cells").mkdir(parents=True)
    rec, d = next((r, d) for r, d in records() if r.cell["variant"] == variant)
    rec.cell = {**rec.cell, "variant": label}
    rec.save(out / "cells" / rec.key)
    (out / "matrix.json").write_text(json.dumps({"name": "kvm-selftests", "cells": [rec.cell], "compare": []}))
    return out


def test_compare_two_runs_says_the_same(tmp_path: Path):
    a = _run_of(tmp_path, "baseline", "v")
    b = _run_of(tmp_path, "broken-cpu-on", "v")
    h = two_run_headline(load_run(a), load_run(b), "kernel")
    assert h.tests and h.tests[0].startswith("REGRESSION psci_test (baseline → broken-cpu-on)")
    assert headline_lines([("x", r) for r, _ in records() if r.cell["variant"] == "baseline"], []) == []  # one side: nothing to call
