"""A suite workload's per-test results across variants and repeats
(workloads/kvm-selftests.yaml): the table summary.md and report.html show,
and the calls a maintainer reads first.

Per test and side (a variant, or a run in `orchestrator compare`), the
repeats are counted; between a pair of sides A -> B:
- regression: fails on B in every repeat that ran, passes on A (headline first);
- fixed: the other way round;
- pre-existing: fails on both;
- flaky: passes and fails across the repeats of one side (with the counts).
A skipped or not-run test is never a pass: it calls nothing.  Tests are
matched only within cells that share everything but the side (config set,
machine, workload and its parameters).  Pure: records in, text out.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from orchestrator.reports.results import CellRecord

PASS, FAIL, SKIP, NOT_RUN = "pass", "fail", "skip", "not run"
KINDS = ("regression", "flaky", "pre-existing", "fixed")  # report order


@dataclass
class Outcomes:
    """One test on one side: how its repeats ended."""
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: list[float] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why it failed / was skipped, first seen first

    def add(self, case: dict) -> None:
        status = str(case.get("status", NOT_RUN))
        self.counts[status] += 1
        if isinstance(case.get("seconds"), int | float):
            self.seconds.append(float(case["seconds"]))
        reason = str(case.get("reason") or "")
        if reason and reason not in self.reasons:
            self.reasons.append(reason)

    @property
    def state(self) -> str:
        p, f = self.counts.get(PASS, 0), self.counts.get(FAIL, 0)
        if p and f:
            return "flaky"
        if f:
            return FAIL
        if p:
            return PASS
        return SKIP if self.counts.get(SKIP) else NOT_RUN

    @property
    def ran(self) -> int:
        return self.counts.get(PASS, 0) + self.counts.get(FAIL, 0)

    def text(self) -> str:
        """e.g. "pass (12.3 s)", "FAIL 2/3: exit=1", "skip: unavailable: ..."."""
        state = self.state
        secs = f" ({sum(self.seconds) / len(self.seconds):.1f} s)" if self.seconds and state in (PASS, FAIL, "flaky") else ""
        why = f": {self.reasons[0]}" if self.reasons and state != PASS else ""
        if state == "flaky":
            return f"FLAKY {self.counts.get(FAIL, 0)}/{self.ran} failed{secs}{why}"
        if state == FAIL:
            n = f" {self.counts[FAIL]}/{self.ran}" if self.ran > 1 else ""
            return f"FAIL{n}{secs}{why}"
        if state == PASS:
            n = f" {self.counts[PASS]}/{self.ran}" if self.ran > 1 else ""
            return f"pass{n}{secs}"
        if self.reasons and self.reasons[0].startswith(state):  # "not run: the run ended during ..."
            return self.reasons[0]
        return f"{state}{why}"


@dataclass(frozen=True)
class Call:
    kind: str  # one of KINDS
    group: str
    test: str
    a: str
    b: str
    text: str


def _group(cell: dict) -> str:
    params = cell.get("params") or {}
    shown = " ".join(f"{k}={params[k]}" for k in sorted(params))
    return " · ".join(x for x in (str(cell.get("workload", "")), shown, f"config set {cell.get('config_set', '')}",
                                  f"machine {cell.get('machine', '')}") if x)


Table = dict[str, dict[str, dict[str, Outcomes]]]  # group -> test -> side -> outcomes


def collect(tagged: list[tuple[str, CellRecord]]) -> tuple[Table, list[str]]:
    """(the outcomes of every test, the sides in order) of cells with per-test results."""
    table: Table = defaultdict(lambda: defaultdict(dict))
    sides: list[str] = []
    for side, rec in tagged:
        if not rec.testcases:
            continue
        if side not in sides:
            sides.append(side)
        g = _group(rec.cell)
        for case in rec.testcases:
            table[g][str(case.get("name"))].setdefault(side, Outcomes()).add(case)
    return table, sides


def calls(table: Table, pairs: list[tuple[str, str]]) -> list[Call]:
    """Regressions, flaky, pre-existing and fixed tests for every pair (in KINDS order)."""
    out: list[Call] = []
    for g, tests in table.items():
        for test, by_side in tests.items():
            for a, b in pairs:
                oa, ob = by_side.get(a), by_side.get(b)
                if oa is None or ob is None:
                    continue
                sa, sb = oa.state, ob.state
                why_b = f" ({ob.reasons[0]})" if ob.reasons else ""
                if sb == FAIL and sa == PASS:
                    out.append(Call("regression", g, test, a, b, f"fails on {b} ({ob.counts[FAIL]}/{ob.ran}){why_b}, "
                                                                   f"passes on {a} ({oa.counts[PASS]}/{oa.ran})"))
                elif sa == FAIL and sb == PASS:
                    out.append(Call("fixed", g, test, a, b, f"fails on {a} ({oa.counts[FAIL]}/{oa.ran}), passes on {b}"))
                elif sa == FAIL and sb == FAIL:
                    out.append(Call("pre-existing", g, test, a, b, f"fails on both {a} and {b}{why_b}"))
                if "flaky" in (sa, sb):
                    parts = [f"{s}: {o.counts.get(FAIL, 0)} of {o.ran} repeats failed" for s, o in ((a, oa), (b, ob))
                             if o.state == "flaky"]
                    out.append(Call("flaky", g, test, a, b, "; ".join(parts)))
    # one flaky call per test and side, whatever the pairs
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for c in out:
        key = (c.kind, c.group, c.test + (c.text if c.kind == "flaky" else c.a + c.b))
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return sorted(unique, key=lambda c: (KINDS.index(c.kind), c.group, c.test, c.a, c.b))


def headline_lines(tagged: list[tuple[str, CellRecord]], pairs: list[tuple[str, str]]) -> list[str]:
    """What a reader sees first: one line per regression, then counts of the rest."""
    table, sides = collect(tagged)
    if not table:
        return []
    pairs = [p for p in pairs if p[0] in sides and p[1] in sides] or [(sides[0], s) for s in sides[1:]]
    found = calls(table, pairs)
    regressions = [c for c in found if c.kind == "regression"]
    lines = [f"REGRESSION {c.test} ({c.a} → {c.b}): {c.text}" for c in regressions]
    if not regressions and pairs:
        lines.append("No test regression: " + ", ".join(f"{a} → {b}" for a, b in pairs) + ".")
    rest = {k: [c.test for c in found if c.kind == k] for k in KINDS[1:]}
    tail = "; ".join(f"{k}: {', '.join(dict.fromkeys(v))}" for k, v in rest.items() if v)
    if tail:
        lines.append(tail)
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def suite_section(records: list[CellRecord]) -> str | None:
    """summary.md: the per-test table across variants, after the calls."""
    tagged = [(str(r.cell.get("variant")), r) for r in records]
    table, sides = collect(tagged)
    if not table:
        return None
    pairs = [(sides[0], s) for s in sides[1:]]
    found = calls(table, pairs)
    lines = ["## Test suites: one result per test", ""]
    lines.append("Per test, the repeats of each variant; a regression fails on the later variant and passes on "
                 f"{sides[0]}. Flaky: passes and fails across repeats.")
    lines.append("")
    for kind in KINDS:
        these = [c for c in found if c.kind == kind]
        if these:
            lines.append(f"**{kind.capitalize()} ({len(these)})**" + ("" if kind != "regression" else " — headline"))
            lines += [f"- `{c.test}` ({c.a} → {c.b}): {c.text}" for c in these]
            lines.append("")
    if not [c for c in found if c.kind == "regression"] and pairs:
        lines += ["No regression: no test fails on a variant where it passes on " + sides[0] + ".", ""]
    for g, tests in table.items():
        statuses = defaultdict(lambda: defaultdict(int))
        for by_side in tests.values():
            for s, o in by_side.items():
                statuses[s][o.state] += 1
        lines.append(f"### {g}")
        lines.append("")
        lines.append("Totals: " + "; ".join(f"{s}: " + ", ".join(f"{n} {k}" for k, n in sorted(statuses[s].items()))
                                            for s in sides if s in statuses))
        lines.append("")
        lines.append("| test | " + " | ".join(sides) + " |")
        lines.append("|---|" + "---|" * len(sides))
        for test, by_side in tests.items():
            lines.append(f"| {_cell(test)} | " + " | ".join(_cell(by_side[s].text()) if s in by_side else "—"
                                                         for s in sides) + " |")
        lines.append("")
    return "\n".join(lines)


def path_prefix(cell: dict) -> str:
    """KernelCI's name for the cell's suite: kselftest.<collection> (the workload's
    `suite: collection:`), else the workload's name."""
    from orchestrator.errors import UserError
    from orchestrator.workload.definitions import load_workload  # definitions are data files: read them only here
    name = str(cell.get("workload", ""))
    try:
        suite = load_workload(name).suite
    except UserError:
        suite = None
    return f"kselftest.{suite.collection}" if suite is not None else name


def slug(text: str) -> str:
    """A subtest's description as one path component (KCIDB paths are dotted)."""
    import re
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text.strip()).strip("_") or "x"


@dataclass(frozen=True)
class FlatCase:
    path: str  # kselftest.kvm.hypercalls, kselftest.kvm.hypercalls.<subtest>
    status: str  # pass, fail, skip, not run
    reason: str
    seconds: float
    output: str


def flat_cases(record: CellRecord) -> list[FlatCase]:
    """Every test and subtest of the record, with its dotted path."""
    if not record.testcases:
        return []
    prefix = path_prefix(record.cell)
    out: list[FlatCase] = []

    def walk(case: dict, parent: str) -> None:
        path = f"{parent}.{slug(str(case.get('name', '')))}" if parent != prefix else f"{prefix}.{case.get('name')}"
        out.append(FlatCase(path, str(case.get("status", NOT_RUN)), str(case.get("reason") or ""),
                            float(case.get("seconds") or 0.0), str(case.get("output") or "")))
        for sub in case.get("subtests") or []:
            walk(sub, path)

    for case in record.testcases:
        walk(case, prefix)
    return out
