"""Verdicts on a workload run: its own status, "path exercised", "no kernel
warnings", and the expectations declared per variant (patches/expectations.yaml).

Checks are tiny arithmetic comparisons over metric names, parsed here (never
eval'd), so a data file cannot run code.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator import datafiles
from orchestrator.errors import did_you_mean
from orchestrator.workload.outcome import WorkloadRun
from orchestrator.judge.metric_names import known_metric, known_metric_examples
from orchestrator.judge.steps import ERROR, FAILED, PASSED, SKIPPED, Step

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_CHECK = re.compile(r"^(?P<lhs>.+?)\s*(?P<op>>=|<=|==|>|<)\s*(?P<rhs>.+)$")
_TERM = re.compile(r"^(?:(?P<num>[0-9]+(?:\.[0-9]+)?)(?:\s*\*\s*(?P<m1>[A-Za-z_][\w.&()>-]*))?|(?P<m2>[A-Za-z_][\w.&()>-]*))$")


@dataclass(frozen=True)
class Expectation:
    name: str
    check: str
    why: str = ""


def metric_names(check: str) -> list[str]:
    """The metric names a check uses, in order (raises ValueError when it does not parse)."""
    m = _CHECK.match(check.strip())
    if not m:
        raise ValueError(f"expected `EXPR OP EXPR` with OP one of {', '.join(_OPS)}")
    return list(dict.fromkeys(_eval(m["lhs"], None)[1] + _eval(m["rhs"], None)[1]))


def _eval(expr: str, metrics: dict[str, float] | None) -> tuple[float, list[str]]:
    """Value of EXPR and the metric names it used; metrics=None only parses."""
    total, used = 0.0, []
    metrics = metrics if metrics is not None else {}
    for raw in expr.split("+"):
        m = _TERM.match(raw.strip())
        if not m:
            raise ValueError(f"cannot parse term {raw.strip()!r}")
        if m["m2"]:
            used.append(m["m2"])
            total += float(metrics.get(m["m2"], 0.0))
        elif m["m1"]:
            used.append(m["m1"])
            total += float(m["num"]) * float(metrics.get(m["m1"], 0.0))
        else:
            total += float(m["num"])
    return total, used


class NotMeasured(Exception):
    """A check names a metric the cell does not have: it cannot be judged, never as 0."""

    def __init__(self, names: list[str]):
        super().__init__(", ".join(names))
        self.names = names


def evaluate(check: str, metrics: dict[str, float]) -> tuple[bool, str]:
    missing = [n for n in metric_names(check) if n not in metrics]
    if missing:
        raise NotMeasured(missing)
    m = _CHECK.match(check.strip())
    if not m:
        raise ValueError(f"expected `EXPR OP EXPR` with OP one of {', '.join(_OPS)}")
    lhs, used_l = _eval(m["lhs"], metrics)
    rhs, used_r = _eval(m["rhs"], metrics)
    ok = _OPS[m["op"]](lhs, rhs)
    values = ", ".join(f"{k}={metrics.get(k, 0):g}" for k in dict.fromkeys(used_l + used_r))
    return ok, f"{lhs:g} {m['op']} {rhs:g} ({values})"


def load_expectations(path: Path, variant: str) -> list[Expectation]:
    """The expectations of one variant; every check parses and names only known metrics."""
    return load_all_expectations(path).get(variant, [])


_EXPECTATION = datafiles.Mapping({
    "name": datafiles.Field(datafiles.Str(numbers_as_text=True), required=True, help="the verdict's name"),
    "check": datafiles.Field(datafiles.Str(numbers_as_text=True), required=True,
                             help="EXPR OP EXPR over metric names, e.g. lock.mmu_lock.read.acquisitions >= 1"),
    "why": datafiles.Field(datafiles.Str(numbers_as_text=True), default="", help="the reason, shown with a failure"),
}, expected="{name: ..., check: ..., why: ...}")
EXPECTATIONS_SCHEMA = datafiles.MapOf(datafiles.List(_EXPECTATION, expected="a list of {name, check, why}"),
                                      expected="a mapping of variant: [expectations]")


def load_all_expectations(path: Path) -> dict[str, list[Expectation]]:
    if not path.is_file():
        return {}
    doc = datafiles.load(path, EXPECTATIONS_SCHEMA, what="expectations")
    out: dict[str, list[Expectation]] = {}
    for variant, items in doc.data.items():
        out[variant] = []
        for i, item in enumerate(items):
            at = (variant, i, "check")
            try:
                names = metric_names(item["check"])
            except ValueError as exc:
                raise doc.error(at, str(exc), hint="a check is EXPR OP EXPR; EXPR adds numbers, metrics and NUMBER * metric") from None
            for name in names:
                if not known_metric(name):
                    raise doc.error(at, f"unknown metric {name!r}{did_you_mean(name, known_metric_examples())}",
                                    hint="known metrics: " + ", ".join(known_metric_examples()))
            out[variant].append(Expectation(item["name"], item["check"], item["why"]))
    return out


AGING_CALLS = ("kprobe.age_gfn.hits", "kprobe.test_age_gfn.hits")
LOCK_ACQUISITIONS = ("lock.mmu_lock.write.acquisitions", "lock.mmu_lock.read.acquisitions")


def aging_calls(metrics: dict[str, float]) -> float:
    return sum(metrics.get(k, 0) for k in AGING_CALLS)


def verdict_steps(run: WorkloadRun, expectations: list[Expectation]) -> list[Step]:
    steps = [_path_exercised(run)]
    exercised = steps[0].status == PASSED
    m = run.metrics
    if "dmesg" in run.missing:
        # No kernel log, no claim either way: a pass here would be unfounded.
        steps.append(Step(f"verdict {run.name}: no kernel warnings", ERROR, 0.0,
                          "dmesg could not be fetched from the guest: warnings unknown"))
    elif run.crashes:
        first = run.crashes[0]
        titles = "; ".join(c.title for c in run.crashes)
        steps.append(Step(f"verdict {run.name}: no kernel warnings", FAILED, 0.0, f"{len(run.crashes)} report(s): {titles}",
                          excerpt=first.excerpt))
    else:
        steps.append(Step(f"verdict {run.name}: no kernel warnings", PASSED))
    for exp in expectations:
        name = f"expect {run.name}: {exp.name}"
        if not run.ages_kvm:
            steps.append(Step(name, SKIPPED, 0.0, f"not applicable: workload {run.name} does not age KVM memory"))
            continue
        try:
            ok, shown = evaluate(exp.check, m)
        except NotMeasured as exc:
            if run.timed:
                steps.append(Step(name, SKIPPED, 0.0, f"not applicable in a timed cell: needs {exc}, which nothing "
                                  "measures while a timed workload runs (see the evidence cells)"))
            else:
                steps.append(Step(name, ERROR, 0.0, f"not measured in this cell: {exc} (is the collector in this "
                                  "config set and tracepoint set?)"))
            continue
        if not exercised:
            steps.append(Step(name, SKIPPED if run.timed else FAILED, 0.0,
                              f"not checked: {steps[0].message or 'the aging path was not exercised'}"))
            continue
        steps.append(Step(name, PASSED if ok else FAILED, 0.0,
                          "" if ok else f"{exp.check}: {shown}", output=f"{exp.check}: {shown}\nwhy: {exp.why}"))
    return steps


def _path_exercised(run: WorkloadRun) -> Step:
    """Did the run age KVM memory, and did aging take mmu_lock?  Said only from what was measured."""
    name = f"verdict {run.name}: path exercised"
    m = run.metrics
    if not run.ages_kvm:
        return Step(name, SKIPPED, 0.0, f"not applicable: workload {run.name} does not age KVM memory (ages_kvm: false)")
    if run.timed:
        return Step(name, SKIPPED, 0.0, "not applicable in a timed cell: no probe or lock_stat was armed; "
                    "the evidence cells of the same variant, machine and workload prove the path")
    have_calls = any(k in m for k in AGING_CALLS)
    have_locks = any(k in m for k in LOCK_ACQUISITIONS)
    calls = aging_calls(m)
    lock_acq = sum(m.get(k, 0) for k in LOCK_ACQUISITIONS)
    seen = []
    if have_calls:
        seen.append(f"kvm_age_gfn+kvm_test_age_gfn calls={calls:g}")
    if have_locks:
        seen.append(f"mmu_lock acquisitions={lock_acq:g}")
    detail = ", ".join(seen)
    if not have_calls:
        return Step(name, ERROR, 0.0, "aging calls not measured: the workload's tracepoint set has no "
                    "kprobe on kvm_age_gfn/kvm_test_age_gfn", output=detail)
    if calls == 0:
        return Step(name, FAILED, 0.0, f"the run never aged KVM memory: {detail}", output=detail)
    if not have_locks:
        return Step(name, PASSED, 0.0, output=detail + "; mmu_lock not measured (no lock_stat in this config set)")
    if lock_acq == 0:
        return Step(name, FAILED, 0.0, f"KVM memory was aged but mmu_lock was never taken: {detail}", output=detail)
    return Step(name, PASSED, 0.0, output=detail)
