"""Bisection without builds: the search (skips, ambiguity, step counts), the
folding of repeats, check parsing and its errors, and checks judged on cell
records captured from the real bisection runs (tests/fixtures/bisect/)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from orchestrator.bisect.checks import BAD, GOOD, SKIP, check_for_failure, judge, parse_check
from orchestrator.bisect.run import BisectRequest, Bisection
from orchestrator.bisect.runner import Target
from orchestrator.bisect.search import bisect_prefixes, fold
from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.reports.results import CellRecord

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RECORDS = FIXTURES / "bisect"


def verdicts(first_bad: int, skipped: set[int] = frozenset()):
    tested = []

    def test(k: int) -> str:
        tested.append(k)
        return SKIP if k in skipped else BAD if k >= first_bad else GOOD
    return test, tested


@pytest.mark.parametrize("n", [2, 5, 7, 8, 16])
def test_search_finds_every_first_bad_patch_in_log2_steps(n):
    for first_bad in range(1, n + 1):
        test, tested = verdicts(first_bad)
        out = bisect_prefixes(0, n, test)
        assert out.first_bad == first_bad and out.last_good == first_bad - 1
        assert len(tested) <= math.ceil(math.log2(n)), (first_bad, tested)
        assert len(set(tested)) == len(tested), "no prefix is tested twice"


def test_an_untestable_prefix_is_skipped_and_the_search_goes_around_it():
    test, tested = verdicts(5, {3})
    out = bisect_prefixes(0, 5, test)
    assert out.first_bad == 5 and out.skipped == [3]
    assert tested == [2, 3, 4]  # the middle (3) was untestable: its nearest neighbour instead


def test_when_only_untestable_prefixes_remain_the_answer_is_a_range():
    test, _ = verdicts(4, {3, 4})
    out = bisect_prefixes(0, 5, test)
    assert out.first_bad is None and out.candidates == [3, 4, 5]  # git bisect: "could be any of"


def test_a_verdict_that_is_no_verdict_is_refused():
    with pytest.raises(ValueError, match="none of good, bad, skip"):
        bisect_prefixes(0, 3, lambda k: "maybe")


def test_majority_stops_as_soon_as_it_is_decided():
    assert fold([BAD], 3, "majority") is None
    assert fold([BAD, BAD], 3, "majority") == BAD
    assert fold([GOOD, BAD], 3, "majority") is None
    assert fold([GOOD, BAD, BAD], 3, "majority") == BAD
    assert fold([SKIP, SKIP, SKIP], 3, "majority") == SKIP
    assert fold([GOOD, SKIP, BAD], 3, "majority") == SKIP  # a tie among testable runs says nothing
    assert fold([GOOD], 1, "majority") == GOOD


def test_any_failure_makes_the_prefix_bad_at_once():
    assert fold([BAD], 3, "any") == BAD
    assert fold([GOOD, GOOD], 3, "any") is None
    assert fold([GOOD, GOOD, GOOD], 3, "any") == GOOD
    assert fold([SKIP, SKIP, SKIP], 3, "any") == SKIP


def test_check_errors_say_what_is_known():
    with pytest.raises(UserError, match="unknown kind 'crsh' \\(did you mean 'crash'\\?\\)"):
        parse_check("crsh:WARNING")
    with pytest.raises(UserError, match="no expectation named 'aging takes mmu_lock for wrte'.*did you mean"):
        parse_check("expect:aging takes mmu_lock for wrte")
    with pytest.raises(UserError, match="crash needs an argument"):
        parse_check("crash")
    with pytest.raises(UserError, match="boot takes no argument"):
        parse_check("boot:x")
    with pytest.raises(UserError, match="EXPR OP EXPR"):
        parse_check("metric:workload.seconds")


def test_an_expectation_is_looked_up_in_the_expectations_file():
    c = parse_check("expect:baseline:aging takes mmu_lock for write")
    assert c.expression.startswith("lock.mmu_lock.write.acquisitions >=")
    assert parse_check("metric:workload.seconds > 60").expression == "workload.seconds > 60"


def test_prefix_range_is_checked_before_anything_is_built(tmp_path):
    t = Target(None, FIXTURES / "bisect-series" / "warn", None, "evidence", "default", "page-idle")
    with pytest.raises(UserError, match="need 0 <= good < bad <= 7"):
        Bisection(BisectRequest(t, parse_check("build"), tmp_path / "o", good=5, bad=3))
    Bisection(BisectRequest(t, parse_check("build"), tmp_path / "o"))
    other = Target(None, FIXTURES / "bisect-series" / "skip", None, "evidence", "default", "page-idle")
    with pytest.raises(UserError, match="holds a bisection of another target"):
        Bisection(BisectRequest(other, parse_check("build"), tmp_path / "o"))


def test_cli_without_series_or_results_is_a_clear_error(capsys):
    assert main(["bisect", "--check", "build"]) == 2
    err = capsys.readouterr().err
    assert "needs --series and --check" in err and "Traceback" not in err


# ---------------------------------------------------------------- records of real runs


def record(name: str) -> CellRecord:
    rec = CellRecord.load(RECORDS / name)
    assert rec is not None, f"{RECORDS / name}/cell.json"
    return rec


def test_checks_on_the_run_before_the_warn():
    rec = record("warn-prefix3")
    for text in ("crash:WARNING in kvm_age_gfn", "boot", "nested-kvm", "workload", "build",
                 "expect:baseline:aging takes mmu_lock for write", "testcase:verdict page-idle: no kernel warnings"):
        assert judge(parse_check(text), rec, "page-idle").verdict == GOOD, text
    assert judge(parse_check("metric:kprobe.age_gfn.hits > 10"), rec, "page-idle").verdict == BAD
    assert judge(parse_check("metric:no.such.metric > 1"), rec, "page-idle").verdict == SKIP


def test_checks_on_the_run_with_the_warn():
    rec = record("warn-prefix4")
    v = judge(parse_check("crash:WARNING in kvm_age_gfn"), rec, "page-idle")
    assert v.verdict == BAD and "kvm_age_gfn" in v.evidence
    assert judge(parse_check("crash:BUG: KASAN"), rec, "page-idle").verdict == GOOD
    assert judge(parse_check("testcase:verdict page-idle: no kernel warnings"), rec, "page-idle").verdict == BAD
    assert check_for_failure(rec).text == "crash:WARNING in kvm_age_gfn"


def test_a_prefix_that_does_not_build_is_untestable_for_every_other_check():
    rec = record("skip-prefix3")
    assert judge(parse_check("build"), rec, "page-idle").verdict == BAD
    for text in ("boot", "crash:WARNING", "expect:baseline:aging takes mmu_lock for write"):
        v = judge(parse_check(text), rec, "page-idle")
        assert v.verdict == SKIP and "does not build" in v.evidence, text
    assert check_for_failure(rec).text == "build"


def test_work_counts_each_prefix_build_once_and_leaves_lock_waits_out():
    from orchestrator.bisect.report import work
    from orchestrator.bisect.run import StepResult

    def step(k, *runs):
        return StepResult("search", k, GOOD, [GOOD] * len(runs), [""] * len(runs), 0.0, 0.0,
                          [{"seconds": s, "build_s": b, "build_cost_s": c} for s, b, c in runs])
    # prefix 3: a 60 s build step of which 40 s waited for the lock (cost 20 s), then a 10 s run; a rerun of it: 0 s build
    assert work([step(3, (70.0, 60.0, 20.0)), step(3, (11.0, 0.0, 20.0)), step(4, (15.0, 5.0, 5.0))]) == 20 + 10 + 11 + 5 + 10
