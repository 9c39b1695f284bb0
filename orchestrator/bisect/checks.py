"""What a bisection looks for: one check, judged on one run of one prefix.

A check is written `KIND[:ARG]`:

  build                 the prefix builds
  boot                  the guest boots
  nested-kvm            KVM works in the guest
  workload              the workload exits 0
  testcase:NAME         the cell's step (JUnit testcase) NAME passes, e.g.
                        "testcase:verdict page-idle: no kernel warnings", or
                        a suite workload's test (the record's per-test
                        results): "testcase:kselftest.kvm.psci_test" as JUnit
                        and KCIDB name it, or "psci_test", or
                        "kvm-selftests/psci_test"
  crash:TITLE           no kernel report whose title contains TITLE
                        (e.g. "crash:WARNING in kvm_age_gfn")
  expect:NAME           the expectation NAME of patches/expectations.yaml holds
                        (expect:VARIANT:NAME when variants disagree on it)
  metric:EXPR OP EXPR   fails when the comparison HOLDS (a metric beyond a
                        threshold), e.g. "metric:workload.seconds > 60"

A run that cannot say anything about the check (the prefix does not build,
the guest did not boot, the metric was not measured) is "skip", as
`git bisect skip`: the prefix is untestable, not good or bad.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import UserError, did_you_mean
from orchestrator.judge.steps import ERROR, FAILED, PASSED, SKIPPED
from orchestrator.judge.verdicts import NotMeasured, evaluate, load_all_expectations, metric_names
from orchestrator.paths import PATCHES_DIR
from orchestrator.reports.results import CellRecord
from orchestrator.reports.suite_tests import FlatCase, flat_cases, path_prefix

GOOD, BAD, SKIP = "good", "bad", "skip"
KINDS = ("build", "boot", "nested-kvm", "workload", "testcase", "crash", "expect", "metric")
_PLAIN = ("build", "boot", "nested-kvm", "workload")


@dataclass(frozen=True)
class Verdict:
    verdict: str  # good | bad | skip
    evidence: str  # the step message, the crash title, the evaluated comparison ...


@dataclass(frozen=True)
class Check:
    kind: str
    arg: str = ""
    expression: str = ""  # expect/metric: the comparison evaluated

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind

    @property
    def build_only(self) -> bool:
        return self.kind == "build"

    @property
    def slug(self) -> str:
        import re
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.text).strip("_")[:80] or "check"


def parse_check(text: str, expectations: Path = PATCHES_DIR / "expectations.yaml") -> Check:
    """`--check` as the user wrote it; a wrong kind or name says what is known."""
    kind, sep, arg = text.strip().partition(":")
    kind, arg = kind.strip(), arg.strip()
    if kind not in KINDS:
        raise UserError(f"--check {text!r}: unknown kind {kind!r}{did_you_mean(kind, KINDS)}",
                        hint="one of: " + ", ".join(f"{k}:ARG" if k not in _PLAIN else k for k in KINDS))
    if kind in _PLAIN:
        if arg:
            raise UserError(f"--check {text!r}: {kind} takes no argument", hint=f"write --check {kind}")
        return Check(kind)
    if not arg:
        raise UserError(f"--check {text!r}: {kind} needs an argument", hint=f"e.g. {_EXAMPLES[kind]}")
    if kind == "expect":
        return Check(kind, arg, _expectation(arg, expectations))
    if kind == "metric":
        try:
            metric_names(arg)
        except ValueError as exc:
            raise UserError(f"--check {text!r}: {exc}", hint=f"e.g. {_EXAMPLES['metric']}") from None
        return Check(kind, arg, arg)
    return Check(kind, arg)


_EXAMPLES = {"testcase": "testcase:verdict page-idle: no kernel warnings", "crash": "crash:WARNING in kvm_age_gfn",
             "expect": "expect:aging takes mmu_lock for write", "metric": "metric:workload.seconds > 60"}


def _expectation(arg: str, path: Path) -> str:
    table = load_all_expectations(path)
    variant, _, name = arg.partition(":") if arg.split(":", 1)[0] in table else ("", "", arg)
    checks = {e.check for v, items in table.items() if not variant or v == variant for e in items if e.name == name}
    if not checks:
        names = sorted({e.name for items in table.values() for e in items})
        raise UserError(f"--check expect:{arg}: no expectation named {name!r} in {path}{did_you_mean(name, names)}",
                        hint="known expectations: " + "; ".join(names))
    if len(checks) > 1:
        raise UserError(f"--check expect:{arg}: variants of {path} give {name!r} different checks",
                        hint="name the variant: expect:VARIANT:" + name)
    return checks.pop()


def judge_build(status: str, message: str) -> Verdict:
    """The build check on a prefix: a compile error is bad; a patch that does not apply is untestable."""
    if status == PASSED:
        return Verdict(GOOD, "builds")
    if status == FAILED:
        return Verdict(BAD, message or "build failed")
    return Verdict(SKIP, message or "not built")


def judge(check: Check, rec: CellRecord, workload: str) -> Verdict:
    """The check on one run of a prefix (its cell record)."""
    steps = {s.name: s for s in rec.steps}
    build = steps.get("build")
    if build is None or build.status != PASSED:
        verdict = judge_build(build.status if build else SKIPPED, build.message if build else "not built")
        if check.build_only:
            return verdict
        return Verdict(SKIP, f"untestable: the prefix does not build ({verdict.evidence})")
    if check.build_only:
        return Verdict(GOOD, "builds")
    wl = f"workload {workload}"
    if check.kind == "testcase" and check.arg not in steps:
        return _suite_case_verdict(steps, rec, check.arg, workload)
    if check.kind in ("boot", "nested-kvm", "workload", "testcase"):
        name = {"workload": wl, "testcase": check.arg}.get(check.kind, check.kind)
        prereq = {"nested-kvm": ["boot"], "workload": ["boot", "nested-kvm"]}.get(check.kind, [])
        return _step_verdict(steps, name, prereq)
    # crash, expect and metric need the workload to have run to its end (dmesg, metrics fetched)
    ran = steps.get(wl)
    if ran is None or ran.status not in (PASSED, FAILED):
        why = ran.message if ran is not None else "the workload did not run"
        return Verdict(SKIP, f"untestable: {wl} did not run ({why})")
    if check.kind == "crash":
        hit = [c.get("title", "") for c in rec.crashes if check.arg.lower() in str(c.get("title", "")).lower()]
        if hit:
            return Verdict(BAD, f"kernel report: {hit[0]}")
        seen = "; ".join(str(c.get("title")) for c in rec.crashes) or "no kernel report"
        return Verdict(GOOD, f"no report titled like {check.arg!r} ({seen})")
    try:
        ok, shown = evaluate(check.expression, rec.metrics)
    except NotMeasured as exc:
        return Verdict(SKIP, f"untestable: {exc} not measured in this run")
    if check.kind == "metric":
        ok = not ok  # the metric check names the failure condition
    return Verdict(GOOD if ok else BAD, f"{check.expression}: {shown}")


def _step_verdict(steps: dict, name: str, prereq: list[str]) -> Verdict:
    for p in prereq:
        s = steps.get(p)
        if s is None or s.status != PASSED:
            return Verdict(SKIP, f"untestable: {p} did not pass ({s.message if s else 'not run'})")
    s = steps.get(name)
    if s is None:
        return Verdict(SKIP, f"untestable: no testcase {name!r} in this run")
    if s.status == PASSED:
        return Verdict(GOOD, f"{name} passed")
    if s.status == FAILED:
        return Verdict(BAD, f"{name} failed: {s.message}".rstrip(": "))
    return Verdict(SKIP, f"untestable: {name} {'errored' if s.status == ERROR else 'was skipped'}: {s.message}")


def _aliases(case: FlatCase, prefix: str, workload: str) -> set[str]:
    """The names a suite test answers to: its JUnit/KCIDB path
    (kselftest.kvm.psci_test), that path without the suite's prefix
    (psci_test; set_id_regs.<subtest>) and WORKLOAD/NAME (kvm-selftests/psci_test)."""
    short = case.path[len(prefix) + 1:] if case.path.startswith(prefix + ".") else case.path
    return {case.path, short, f"{workload}/{short}"}


def suite_case(rec: CellRecord, name: str, workload: str) -> FlatCase | None:
    """The record's per-test result (test or subtest) called NAME, if any."""
    prefix = path_prefix(rec.cell)
    return next((c for c in flat_cases(rec) if name in _aliases(c, prefix, workload)), None)


def _suite_case_verdict(steps: dict, rec: CellRecord, name: str, workload: str) -> Verdict:
    """A suite test's result decides; a test that did not run (skip, not run)
    or a run that never got to the suite says nothing: untestable."""
    case = suite_case(rec, name, workload)
    if case is None:
        # the guest came up and KVM worked, and the suite ran to its end (passing or not)
        for p, ok in (("boot", (PASSED,)), ("nested-kvm", (PASSED,)), (f"workload {workload}", (PASSED, FAILED))):
            s = steps.get(p)
            if s is None or s.status not in ok:
                return Verdict(SKIP, f"untestable: {p} did not {'pass' if len(ok) == 1 else 'run'} "
                                     f"({s.message if s else 'not run'})")
        known = ", ".join(str(c.get("name")) for c in rec.testcases) or "none"
        return Verdict(SKIP, f"untestable: no step or suite test {name!r} in this run (its tests: {known})")
    why = f": {case.reason}" if case.reason else ""
    if case.status == "pass":
        return Verdict(GOOD, f"{case.path} passed ({case.seconds:.1f} s)")
    if case.status == "fail":
        return Verdict(BAD, f"{case.path} failed{why}")
    return Verdict(SKIP, f"untestable: {case.path} {case.status}{why}")


def failing_suite_tests(rec: CellRecord) -> list[str]:
    """The suite tests (not subtests) that failed in the record, in run order, by JUnit path."""
    prefix = path_prefix(rec.cell)
    return [f"{prefix}.{c.get('name')}" for c in rec.testcases if c.get("status") == "fail"]


def check_for_failure(rec: CellRecord, expectations: Path = PATCHES_DIR / "expectations.yaml",
                      passed_elsewhere: frozenset[str] | set[str] = frozenset()) -> Check | None:
    """The check a failing cell of a finished run is bisected on: its first failed step.
    A suite workload that failed is bisected on one of its failed tests: the first
    that passed in another cell of the run (`passed_elsewhere`: a regression
    against that variant), else the first that failed."""
    workload = str(rec.cell.get("workload", ""))
    for s in rec.steps:
        if s.status != FAILED:
            continue
        if s.name == "build":
            return Check("build")
        if s.name in ("boot", "nested-kvm"):
            return Check(s.name)
        if s.name == f"workload {workload}":
            failed = failing_suite_tests(rec)
            if failed:
                return Check("testcase", next((t for t in failed if t in passed_elsewhere), failed[0]))
            return Check("workload")
        if s.name == f"verdict {workload}: no kernel warnings" and rec.crashes:
            return Check("crash", str(rec.crashes[0].get("title", "")))
        prefix = f"expect {workload}: "
        if s.name.startswith(prefix):
            name = s.name[len(prefix):]
            return parse_check(f"expect:{rec.cell.get('variant')}:{name}", expectations)
        return Check("testcase", s.name)
    return None
