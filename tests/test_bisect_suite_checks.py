"""Bisecting on one KVM selftest: `--check testcase:NAME` judged on the per-test
results of a suite workload's cell record, and the check `orchestrator bisect
RESULTS` picks for a failing kvm-selftests cell.  The records are the real
run of matrices/kvm-selftests-faults.yaml (tests/fixtures/kvm-selftests/
faults-run, README there: 6.12, config set evidence, QEMU 7.2 TCG)."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.bisect.checks import BAD, GOOD, SKIP, check_for_failure, judge, parse_check
from orchestrator.bisect.failures import passed_elsewhere
from orchestrator.reports.results import CellRecord, load_run

RUN = Path(__file__).resolve().parent / "fixtures" / "kvm-selftests" / "faults-run"
WL = "kvm-selftests"


def record(variant: str) -> CellRecord:
    rec = CellRecord.load(RUN / "cells" / f"{variant}.evidence.default.kvm-selftests~4b77f9.r1")
    assert rec is not None and rec.testcases, variant
    return rec


@pytest.mark.parametrize("name", ["kselftest.kvm.psci_test", "psci_test", "kvm-selftests/psci_test"])
def test_a_selftest_is_found_by_its_junit_path_its_name_or_workload_slash_name(name):
    check = parse_check(f"testcase:{name}")
    assert judge(check, record("baseline"), WL).verdict == GOOD
    v = judge(check, record("broken-cpu-on"), WL)
    assert v.verdict == BAD and v.evidence == "kselftest.kvm.psci_test failed: exit=254"


def test_only_the_named_test_decides():
    # hypercalls and smccc_filter pass on the broken kernel: the cell failing does not make them bad
    for name in ("hypercalls", "smccc_filter"):
        assert judge(parse_check(f"testcase:{name}"), record("broken-cpu-on"), WL).verdict == GOOD, name


def test_a_hang_and_a_kernel_crash_in_the_test_are_bad():
    v = judge(parse_check("testcase:psci_test"), record("hang-cpu-on"), WL)
    assert v.verdict == BAD and "TIMEOUT 60 s" in v.evidence
    v = judge(parse_check("testcase:psci_test"), record("crash-cpu-on"), WL)
    assert v.verdict == BAD and "kernel crash" in v.evidence


def test_a_test_the_crash_kept_from_running_is_untestable_not_good():
    v = judge(parse_check("testcase:smccc_filter"), record("crash-cpu-on"), WL)
    assert v.verdict == SKIP and "not run" in v.evidence


def test_a_test_not_in_the_run_is_untestable_and_the_run_s_tests_are_named():
    v = judge(parse_check("testcase:arch_timer"), record("baseline"), WL)
    assert v.verdict == SKIP and "hypercalls, psci_test, smccc_filter" in v.evidence


def test_a_prefix_that_did_not_boot_is_untestable_for_a_selftest():
    rec = record("baseline")
    rec.steps = [s for s in rec.steps if s.name not in ("nested-kvm", f"workload {WL}")]
    boot = next(s for s in rec.steps if s.name == "boot")
    boot.status, boot.message = "failed", "no login prompt"
    rec.testcases = []
    v = judge(parse_check("testcase:psci_test"), rec, WL)
    assert v.verdict == SKIP and "boot" in v.evidence


def test_the_step_testcases_still_work():
    v = judge(parse_check(f"testcase:workload {WL}"), record("broken-cpu-on"), WL)
    assert v.verdict == BAD and "exit status 1" in v.evidence


def test_a_failing_suite_cell_is_bisected_on_its_failing_selftest():
    assert check_for_failure(record("broken-cpu-on")).text == "testcase:kselftest.kvm.psci_test"
    assert check_for_failure(record("crash-cpu-on")).text == "testcase:kselftest.kvm.psci_test"
    assert check_for_failure(record("baseline")) is None


def test_a_regression_is_preferred_over_a_test_failing_everywhere():
    rec = record("broken-cpu-on")
    # smccc_filter also failing here, before psci_test, but on every variant: not the one to bisect
    rec.testcases = [dict(c, status="fail", reason="exit=1") if c["name"] == "hypercalls" else c for c in rec.testcases]
    others = [r for r, _ in load_run(RUN).records if r.cell.get("variant") != "broken-cpu-on"]
    for o in others:
        o.testcases = [dict(c, status="fail") if c["name"] == "hypercalls" else c for c in o.testcases]
    elsewhere = passed_elsewhere(rec, others)
    assert "kselftest.kvm.psci_test" in elsewhere and "kselftest.kvm.hypercalls" not in elsewhere
    assert check_for_failure(rec, passed_elsewhere=elsewhere).text == "testcase:kselftest.kvm.psci_test"
    assert check_for_failure(rec).text == "testcase:kselftest.kvm.hypercalls"


BISECT_RECORDS = Path(__file__).resolve().parent / "fixtures" / "bisect"


def test_the_real_psci_bisection_s_records_before_and_at_the_break():
    before = CellRecord.load(BISECT_RECORDS / "psci-prefix2")
    at = CellRecord.load(BISECT_RECORDS / "psci-prefix3")
    assert before is not None and at is not None
    check = parse_check("testcase:kselftest.kvm.psci_test")
    assert judge(check, before, WL).verdict == GOOD
    v = judge(check, at, WL)
    assert v.verdict == BAD and v.evidence == "kselftest.kvm.psci_test failed: exit=254"
    assert check_for_failure(at).text == "testcase:kselftest.kvm.psci_test"
