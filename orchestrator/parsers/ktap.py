"""KTAP / TAP 13 as kselftest prints it: one result per test, nested subtests.

The kselftest runner (tools/testing/selftests/kselftest/runner.sh, and the
project's guest/workloads/kselftest-kvm.sh that follows it) prints a TAP 13
document whose tests are the selftest programs: "# selftests: kvm: NAME",
the program's own lines prefixed with "# ", then "ok N selftests: kvm: NAME"
with "# SKIP", "# TIMEOUT S seconds" or "# exit=RC".  A program that speaks
KTAP itself (ksft_test_result_*) nests a second document inside those "# "
lines; the kernel's own KTAP nests by indentation instead.  Both are read.

Why not a library: tap.py 3.2.1 (PyPI) and Debian's python3-tap 3.1 parse
one flat TAP stream; a "# ok 1 foo" line of a nested program comes back as
a diagnostic, so the selftest's subtests are lost (checked 2026-12-05 on the
kselftest runner's nested output: both return only the top-level results).

Pure: text in, dataclasses out.  Incomplete input is the point: a missing
plan is allowed, output that stops mid-test (a crash, a hang, a truncated
log) leaves the running test "unfinished" and the planned rest "not run".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

PASS, FAIL, SKIP, NOT_RUN = "pass", "fail", "skip", "not run"
STATUSES = (PASS, FAIL, SKIP, NOT_RUN)

_VERSION = re.compile(r"^(?:K?TAP) version \d+\s*$")
_PLAN = re.compile(r"^1\.\.(\d+)(?:\s*#.*)?$")
_RESULT = re.compile(r"^(?P<not>not )?ok(?:\s+(?P<num>\d+))?(?:\s*-)?\s*(?P<desc>[^#]*?)\s*(?:#\s*(?P<dir>.*))?$")
_KSFT_NAME = re.compile(r"^selftests:\s*(?P<coll>[^:]+):\s*(?P<name>\S+)$")
_ORCH_PLAN = re.compile(r"^orch-plan:\s*(?P<names>.*)$")
_ORCH_TIME = re.compile(r"^orch-time:\s*(?P<name>\S+)\s+(?P<sec>\d+(?:\.\d+)?)$")
_TIMEOUT = re.compile(r"^TIMEOUT\b\s*(?P<rest>.*)$", re.I)


@dataclass
class TestResult:
    """One test (a selftest program, or a subtest of one)."""
    name: str
    status: str  # one of STATUSES
    reason: str = ""  # SKIP/TODO reason, "TIMEOUT 360 s", "exit=1", why it did not run
    number: int | None = None
    seconds: float | None = None
    output: str = ""  # the test's own lines (the runner's "# " prefix removed)
    subtests: list["TestResult"] = field(default_factory=list)


@dataclass
class KtapDocument:
    tests: list[TestResult]
    plan: int | None  # "1..N"; None when the output has none
    planned: list[str] = field(default_factory=list)  # "# orch-plan:" names, in order
    unfinished: str = ""  # the test whose header was seen and whose result was not
    complete: bool = True  # every planned test has a result


def _strip_prefix(line: str) -> str | None:
    """A nested line without one level of nesting ("# " of the runner, or
    indentation); None if the line is not nested."""
    if line.startswith("# "):
        return line[2:]
    if line == "#":
        return ""
    if line.startswith("    "):
        return line[4:]
    if line.startswith("  "):
        return line[2:]
    return None


def _directive(text: str | None) -> tuple[str, str]:
    """(kind, reason) of a "# ..." directive: SKIP, TODO, TIMEOUT, XFAIL or other text."""
    if not text:
        return "", ""
    text = text.strip()
    word, _, rest = text.partition(" ")
    if word.upper() in ("SKIP", "TODO", "XFAIL"):
        return word.upper(), rest.strip()
    if m := _TIMEOUT.match(text):
        secs = re.match(r"(\d+)", m["rest"] or "")
        return "TIMEOUT", f"TIMEOUT {secs[1]} s" if secs else "TIMEOUT"
    return "", text


def _name_of(desc: str) -> str:
    m = _KSFT_NAME.match(desc.strip())
    return m["name"] if m else desc.strip()


def parse_ktap(text: str) -> KtapDocument:
    """The top-level document of `text` (its nested documents as subtests)."""
    lines = [ln.rstrip("\r") for ln in text.replace("\r\n", "\n").split("\n")]
    return _parse_level(lines)


def _parse_level(lines: list[str]) -> KtapDocument:
    tests: list[TestResult] = []
    plan: int | None = None
    planned: list[str] = []
    pending: list[str] = []  # nested lines since the last result: the next test's output
    header = ""  # "# selftests: C: NAME" seen, no result yet
    for raw in lines:
        line = raw.rstrip()
        if _VERSION.match(line):
            continue
        if (m := _PLAN.match(line)) and plan is None and not tests:
            plan = int(m[1])
            continue
        if m := _RESULT.match(line):
            status, reason = _status(m["not"] is not None, m["dir"])
            name = _name_of(m["desc"]) or (f"test {m['num']}" if m["num"] else f"test {len(tests) + 1}")
            sub = _parse_level([ln for ln in (_strip_prefix(p) for p in pending) if ln is not None]) \
                if pending else KtapDocument([], None)
            output = "\n".join(p for p in (_strip_prefix(x) for x in pending) if p is not None
                               and not _KSFT_NAME.match(p.strip()))
            tests.append(TestResult(name, status, reason, int(m["num"]) if m["num"] else None, None,
                                    output.strip("\n"), sub.tests))
            pending, header = [], ""
            continue
        nested = _strip_prefix(line)
        if nested is None:
            continue  # not KTAP (a kernel message on the console): ignored, as the spec says
        inner = nested.strip()
        if m := _ORCH_PLAN.match(inner):
            planned = m["names"].split()
            continue
        if m := _ORCH_TIME.match(inner):
            for t in reversed(tests):
                if t.name == m["name"]:
                    t.seconds = float(m["sec"])
                    break
            continue
        if (m := _KSFT_NAME.match(inner)) and line.startswith("# selftests:"):
            header = m["name"]
            pending = []
            continue
        pending.append(line)
    expected = plan if plan is not None else (len(planned) or None)
    complete = not header and (expected is None or len(tests) >= expected)
    return KtapDocument(tests, plan, planned, header, complete)


def _status(failed: bool, directive: str | None) -> tuple[str, str]:
    kind, reason = _directive(directive)
    if kind == "SKIP":
        return SKIP, reason
    if kind in ("TODO", "XFAIL"):
        # Expected to fail (KTAP): not a failure, and not a pass either.
        return SKIP, f"{kind}" + (f": {reason}" if reason else "")
    if kind == "TIMEOUT":
        return FAIL, reason
    return (FAIL if failed else PASS), reason


def results_with_plan(doc: KtapDocument, *, why_unfinished: str, why_not_run: str | None = None) -> list[TestResult]:
    """The document's results, then the test it was running when the output
    stopped (failed with `why_unfinished`), then every planned test without a
    result as "not run" (saying which test ended the run)."""
    out = list(doc.tests)
    seen = {t.name for t in out}
    if doc.unfinished and doc.unfinished not in seen:
        out.append(TestResult(doc.unfinished, FAIL, why_unfinished, len(out) + 1))
        seen.add(doc.unfinished)
    stopper = doc.unfinished or (out[-1].name if out else "")
    why = why_not_run or (f"not run: the run ended during {stopper} ({why_unfinished})" if stopper
                          else f"not run: {why_unfinished}")
    for name in doc.planned:
        if name not in seen:
            out.append(TestResult(name, NOT_RUN, why, len(out) + 1))
            seen.add(name)
    if not doc.planned and doc.plan is not None:
        for i in range(len(out) + 1, doc.plan + 1):
            out.append(TestResult(f"test {i}", NOT_RUN, why, i))
    return out
