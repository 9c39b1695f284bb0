"""parsers/ktap.py on output captured from real runs (tests/fixtures/kvm-selftests,
README there: kernel, config, QEMU), and on the shapes real output takes when
something goes wrong: nested subtests, SKIP/TODO directives, no plan, output
cut off mid-test.  (Why not tap.py / python3-tap: see the parser's docstring.)"""
from __future__ import annotations

from pathlib import Path

from orchestrator.parsers.ktap import FAIL, NOT_RUN, PASS, SKIP, parse_ktap, results_with_plan

FIX = Path(__file__).parent / "fixtures" / "kvm-selftests"


def test_a_real_run_one_result_per_selftest_with_its_time():
    doc = parse_ktap((FIX / "quick-baseline.ktap").read_text())
    assert doc.plan == 4 and doc.complete and not doc.unfinished
    assert doc.planned == ["hypercalls", "psci_test", "guest_print_test", "smccc_filter"]
    assert [(t.name, t.status) for t in doc.tests] == [(n, PASS) for n in doc.planned]
    assert all(t.seconds is not None and 0 < t.seconds < 60 for t in doc.tests)
    assert doc.tests[0].output.startswith("Random seed:")


def test_a_real_run_cut_mid_test_keeps_what_ran_and_names_the_rest():
    text = (FIX / "quick-baseline.ktap").read_text()
    cut = text[: text.index("ok 2 selftests: kvm: psci_test")]  # psci_test started, never reported
    doc = parse_ktap(cut)
    assert not doc.complete and doc.unfinished == "psci_test"
    out = results_with_plan(doc, why_unfinished="kernel crash: Kernel panic - not syncing: x")
    assert [(t.name, t.status) for t in out] == [("hypercalls", PASS), ("psci_test", FAIL),
                                                ("guest_print_test", NOT_RUN), ("smccc_filter", NOT_RUN)]
    assert out[1].reason == "kernel crash: Kernel panic - not syncing: x"
    assert out[2].reason == "not run: the run ended during psci_test (kernel crash: Kernel panic - not syncing: x)"


NESTED = """TAP version 13
1..3
# selftests: kvm: get-reg-list
# TAP version 13
# 1..3
# ok 1 vregs
# not ok 2 sve # SKIP no SVE here
# not ok 3 pmu # TODO not yet
# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:1 error:0
ok 1 selftests: kvm: get-reg-list
# selftests: kvm: vgic_irq
#
not ok 2 selftests: kvm: vgic_irq # TIMEOUT 360 seconds
# selftests: kvm: steal_time
not ok 3 selftests: kvm: steal_time # exit=134
"""


def test_nested_subtests_and_directives():
    doc = parse_ktap(NESTED)
    reg, vgic, steal = doc.tests
    assert (reg.status, [(s.name, s.status, s.reason) for s in reg.subtests]) == (
        PASS, [("vregs", PASS, ""), ("sve", SKIP, "no SVE here"), ("pmu", SKIP, "TODO: not yet")])
    assert (vgic.status, vgic.reason) == (FAIL, "TIMEOUT 360 s")
    assert (steal.status, steal.reason) == (FAIL, "exit=134")


def test_no_plan_and_kernel_messages_in_between():
    doc = parse_ktap("[   12.345678] kvm: something\nok 1 first\n[   13.0] random noise\nnot ok 2 second\n")
    assert doc.plan is None and doc.complete
    assert [(t.name, t.status) for t in doc.tests] == [("first", PASS), ("second", FAIL)]


def test_a_plan_larger_than_the_results_is_incomplete():
    doc = parse_ktap("TAP version 13\n1..3\nok 1 a\n")
    assert not doc.complete
    out = results_with_plan(doc, why_unfinished="the output ends here (truncated)")
    assert [(t.name, t.status) for t in out] == [("a", PASS), ("test 2", NOT_RUN), ("test 3", NOT_RUN)]



def test_after_a_kernel_crash_the_console_copy_keeps_what_ran():
    """The console log of a real crash mid-suite (crash-cpu-on: panic in PSCI CPU_ON during psci_test)."""
    from orchestrator.workload.suite_results import suite_testcases_after_fault
    out = suite_testcases_after_fault(FIX / "crash-cpu-on.console.log", "the guest stopped (panic)")
    assert [(t.name, t.status) for t in out] == [("hypercalls", PASS), ("psci_test", FAIL), ("smccc_filter", NOT_RUN)]
    assert out[1].reason == "kernel crash: kernel panic: test only: PSCI CPU_ON"
    assert out[2].reason.startswith("not run: the run ended during psci_test")


def test_when_the_guest_stops_answering_mid_test(tmp_path: Path):
    """No output file came back (the host gave up): the console copy says what ran."""
    from orchestrator.workload.suite_results import suite_testcases
    text = (FIX / "hang-cpu-on.ktap").read_text()
    console = tmp_path / "console.log"
    console.write_text("[    1.0] boot noise\r\n" + text[: text.index("not ok 2")].replace("\n", "\r\n"))
    out = suite_testcases("", console, ended_by="no result from the guest within 255 s")
    assert [(t.name, t.status, t.reason) for t in out][:2] == [
        ("hypercalls", PASS, ""), ("psci_test", FAIL, "no result from the guest within 255 s")]
    assert out[2].status == NOT_RUN
    # the full output, when it came back, is the answer
    assert [(t.name, t.status) for t in suite_testcases(text, console)] == [
        ("hypercalls", PASS), ("psci_test", FAIL), ("smccc_filter", PASS)]
