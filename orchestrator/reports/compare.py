"""Comparisons over cell records: which cells belong together, which metrics
are compared (each workload's `compare:` declaration), and the headline a
reader sees first.  Pure: records in, typed rows out; report.py renders them.

Grouping: cells are compared only with cells that share every axis except the
one being compared and the repeat: within a run the variant is compared and
groups are (config set, machine, workload with its parameters); across two
runs (`orchestrator compare A B --by AXIS`) the named axis is compared, or the
run itself for `--by kernel` (same cell inputs, a different kernel build).
A metric a cell did not record is "not measured" there, never 0, and a pair
where either side has no measurement is left out of the comparison.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from orchestrator.errors import UserError
from orchestrator.reports.results import ERROR, FAILED, NOT_RUN, PASSED, CellRecord, RunResults, Step
from orchestrator.reports.stats import Comparison, judge, measure
from orchestrator.reports.suite_tests import headline_lines as suite_headline
from orchestrator.workload.definitions import ComparedMetric, load_workload

# Axes a cell is defined by (matrix.AXES, with the workload's parameters kept apart).
AXES = ("variant", "config_set", "machine", "workload", "params")
BY_CHOICES = ("kernel", "variant", "config_set", "machine")  # what `compare --by` may name
CALLED = ("up", "down")
HEADLINE_FAMILY = "headline (every compared metric of every group and pair)"


@dataclass(frozen=True, order=True)
class Group:
    """The cell inputs shared by everything compared together (axis, value) pairs."""
    fields: tuple[tuple[str, str], ...]

    def get(self, axis: str) -> str:
        return dict(self.fields).get(axis, "")

    @property
    def workload(self) -> str:
        return self.get("workload")

    @property
    def label(self) -> str:
        parts = []
        for axis, value in self.fields:
            if axis == "workload":
                params = self.get("params")
                parts.append(f"{value} ({params})" if params else value)
            elif axis != "params":
                parts.append(f"{axis.replace('_', ' ')} {value}")
        return " · ".join(parts)


def params_text(cell: dict) -> str:
    params = cell.get("params") or {}
    return " ".join(f"{k}={params[k]}" for k in sorted(params))


def axis_value(cell: dict, axis: str) -> str:
    return params_text(cell) if axis == "params" else str(cell.get(axis, ""))


def group_of(cell: dict, compared_axis: str | None = "variant") -> Group:
    """Every axis except the compared one (None: every axis) and the repeat."""
    return Group(tuple((a, axis_value(cell, a)) for a in AXES if a != compared_axis))


@dataclass(frozen=True)
class Row:
    group: Group
    a: str  # side labels, e.g. variant names
    b: str
    metric: ComparedMetric
    comparison: Comparison

    @property
    def pair(self) -> str:
        return f"{self.a} → {self.b}"

    @property
    def called(self) -> bool:
        return self.comparison.verdict in CALLED

    @property
    def unchanged(self) -> bool:
        """Nothing a reader needs to see first: not called (ruled out, inconclusive or not judged)."""
        return not self.called

    @property
    def judgement(self) -> str:
        """better / worse by the workload's declaration; "" when it says neither or nothing was called."""
        if not self.called or self.metric.better == "neither":
            return ""
        return "better" if (self.comparison.verdict == "down") == (self.metric.better == "lower") else "worse"


@dataclass(frozen=True)
class NotMeasured:
    group: Group
    a: str
    b: str
    metric: ComparedMetric
    missing: tuple[str, ...]  # sides without a measurement


@dataclass
class Check:
    """One verdict or expectation testcase over the cells of one side."""
    side: str
    name: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        for s in (ERROR, FAILED, PASSED):
            if self.counts.get(s):
                return s
        return "skipped"

    @property
    def text(self) -> str:
        return ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items(), key=lambda kv: _ORDER.get(kv[0], 9)))


_ORDER = {FAILED: 0, ERROR: 1, "skipped": 2, PASSED: 3}


@dataclass
class Headline:
    """What summary.md, report.html and the terminal show first."""
    title: str
    counts: dict[str, int]
    rows: list[Row]
    not_measured: list[NotMeasured]
    checks: list[Check]
    failures: list[tuple[CellRecord, Step]]
    not_run: list[CellRecord]
    notes: list[str] = field(default_factory=list)  # e.g. a workload whose declarations could not be read
    sides: list[str] = field(default_factory=list)  # plot order
    side_name: str = "variant"  # what a side is: a variant, or a run (compare --by kernel)
    tests: list[str] = field(default_factory=list)  # a suite's per-test calls, regressions first (suite_tests.py)

    @property
    def groups(self) -> list[Group]:
        return list(dict.fromkeys([r.group for r in self.rows] + [n.group for n in self.not_measured]))

    def pairs(self, group: Group) -> list[tuple[str, str]]:
        return list(dict.fromkeys([(r.a, r.b) for r in self.rows if r.group == group]
                                  + [(n.a, n.b) for n in self.not_measured if n.group == group]))


def measured(rec: CellRecord) -> bool:
    """A cell's figures count only when its workload ran to the end: a crashed
    or cut-short workload measured something else."""
    wl = rec.cell.get("workload")
    return any(s.name == f"workload {wl}" and s.status == PASSED for s in rec.steps)


def _declared(workload: str, notes: list[str]) -> tuple[ComparedMetric, ...]:
    try:
        return load_workload(workload).compared
    except UserError as exc:
        note = f"workload {workload}: no compared metrics ({exc.message})"
        if note not in notes:
            notes.append(note)
        return ()


def comparisons(sides: dict[Group, dict[str, list[CellRecord]]], pairs: list[tuple[str, str]],
                notes: list[str]) -> tuple[list[Row], list[NotMeasured]]:
    """Every declared metric of every group for every pair present in that group,
    judged as one family (Holm over every tested comparison of the headline)."""
    rows: list[Row] = []
    missing: list[NotMeasured] = []
    for group in sorted(sides):
        by_side = sides[group]
        for a, b in pairs:
            if a not in by_side or b not in by_side:
                continue
            for metric in _declared(group.workload, notes):
                va = [float(r.metrics[metric.metric]) for r in by_side[a] if measured(r) and metric.metric in r.metrics]
                vb = [float(r.metrics[metric.metric]) for r in by_side[b] if measured(r) and metric.metric in r.metrics]
                if not va or not vb:
                    missing.append(NotMeasured(group, a, b, metric, tuple(s for s, v in ((a, va), (b, vb)) if not v)))
                    continue
                rows.append(Row(group, a, b, metric, measure(metric.metric, va, vb, min_effect_pct=metric.min_effect_pct)))
    judged = judge([r.comparison for r in rows], HEADLINE_FAMILY)
    return [Row(r.group, r.a, r.b, r.metric, c) for r, c in zip(rows, judged)], missing


def checks(records: list[tuple[str, CellRecord]]) -> list[Check]:
    """Verdict and expectation testcases, counted per side and name."""
    out: dict[tuple[str, str], Check] = {}
    for side, rec in records:
        for s in rec.steps:
            if s.name.startswith(("verdict ", "expect ")):
                c = out.setdefault((side, s.name), Check(side, s.name))
                c.counts[s.status] = c.counts.get(s.status, 0) + 1
    return list(out.values())


def _counts(records: list[CellRecord]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[r.status] += 1
    return dict(counts)


def _failures(records: list[CellRecord]) -> list[tuple[CellRecord, Step]]:
    return [(r, s) for r in records for s in r.steps if s.status in (FAILED, ERROR)]


def default_pairs(variants: list[str]) -> list[tuple[str, str]]:
    return [(variants[0], v) for v in variants[1:]] if variants else []


def run_headline(name: str, records: list[CellRecord], pairs: list[tuple[str, str]], variants: list[str]) -> Headline:
    """The headline of one run: variants compared within each group."""
    sides: dict[Group, dict[str, list[CellRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        sides[group_of(r.cell)][str(r.cell.get("variant"))].append(r)
    order = list(dict.fromkeys(variants + [str(r.cell.get("variant")) for r in records]))
    notes: list[str] = []
    rows, missing = comparisons(sides, pairs or default_pairs(order), notes)
    tagged = [(str(r.cell.get("variant")), r) for r in records]
    return Headline(f"Matrix `{name}`", _counts(records), rows, missing, checks(tagged),
                    _failures(records), [r for r in records if r.status == NOT_RUN], notes, order,
                    tests=suite_headline(tagged, pairs or default_pairs(order)))


def two_run_headline(a: RunResults, b: RunResults, by: str = "kernel") -> Headline:
    """`orchestrator compare A B --by AXIS`: cells matched by their inputs except AXIS."""
    if by not in BY_CHOICES:
        raise UserError(f"--by {by!r}: not an axis to compare by", hint=f"one of: {', '.join(BY_CHOICES)}")
    la, lb = _run_labels(a, b)
    axis = None if by == "kernel" else by
    sides: dict[Group, dict[str, list[CellRecord]]] = defaultdict(lambda: defaultdict(list))
    tagged: list[tuple[str, CellRecord]] = []
    run_of: dict[str, str] = {}  # side label -> run label
    for label, run in ((la, a), (lb, b)):
        for rec, _ in run.records:
            side = label if axis is None else f"{axis_value(rec.cell, axis)} ({label})"
            run_of[side] = label
            sides[group_of(rec.cell, axis)][side].append(rec)
            tagged.append((side, rec))
    pairs: list[tuple[str, str]] = []
    common: list[Group] = []
    for g, by_side in sides.items():
        left = [k for k in by_side if run_of[k] == la]
        right = [k for k in by_side if run_of[k] == lb]
        if left and right:
            common.append(g)
            pairs += [(x, y) for x in left for y in right if (x, y) not in pairs]
    if not common:
        raise UserError(f"no cells of {a.directory} and {b.directory} share their inputs except {by}",
                        hint=f"{a.directory} has {_inputs(a, axis)}; {b.directory} has {_inputs(b, axis)}; "
                             "compare runs of the same matrix, or name the axis that differs with --by "
                             f"({', '.join(BY_CHOICES)})")
    notes: list[str] = []
    rows, missing = comparisons({g: sides[g] for g in common}, pairs, notes)
    # Only matched cells speak in the verdict; the rest are counted in one note.
    matched = {id(r) for g in common for recs in sides[g].values() for r in recs}
    kept = [(side, r) for side, r in tagged if id(r) in matched]
    for label in (la, lb):
        left_out = sum(1 for side, r in tagged if run_of[side] == label and id(r) not in matched)
        if left_out:
            notes.append(f"{left_out} cell(s) of {label} have no counterpart in the other run (other inputs) and are left out.")
    records = [r for _, r in kept]
    return Headline(f"`{a.directory}` → `{b.directory}` (by {by})", _counts(records), rows, missing,
                    checks(kept), _failures(records), [r for r in records if r.status == NOT_RUN], notes,
                    list(dict.fromkeys(s for s, _ in kept)), "run" if axis is None else f"{by} (run)",
                    tests=suite_headline(kept, pairs))


def _run_labels(a: RunResults, b: RunResults) -> tuple[str, str]:
    la, lb = a.directory.name or str(a.directory), b.directory.name or str(b.directory)
    if la == lb:  # results/default vs other/results/default: fall back to the full paths
        la, lb = str(a.directory), str(b.directory)
    return ("A", "B") if la == lb else (la, lb)


def _inputs(run: RunResults, axis: str | None) -> str:
    groups = sorted({group_of(r.cell, axis).label for r, _ in run.records})
    shown = "; ".join(groups[:3]) + (f" and {len(groups) - 3} more" if len(groups) > 3 else "")
    return shown or "no cells"
