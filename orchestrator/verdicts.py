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

import yaml

from .errors import UserError
from .evidence import WorkloadRun
from .results import ERROR, FAILED, PASSED, Step

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_CHECK = re.compile(r"^(?P<lhs>.+?)\s*(?P<op>>=|<=|==|>|<)\s*(?P<rhs>.+)$")
_TERM = re.compile(r"^(?:(?P<num>[0-9]+(?:\.[0-9]+)?)(?:\s*\*\s*(?P<m1>[A-Za-z_][\w.&()>-]*))?|(?P<m2>[A-Za-z_][\w.&()>-]*))$")


@dataclass(frozen=True)
class Expectation:
    name: str
    check: str
    why: str = ""


def _eval(expr: str, metrics: dict[str, float]) -> tuple[float, list[str]]:
    total, used = 0.0, []
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


def evaluate(check: str, metrics: dict[str, float]) -> tuple[bool, str]:
    m = _CHECK.match(check.strip())
    if not m:
        raise ValueError(f"expected `EXPR OP EXPR` with OP one of {', '.join(_OPS)}")
    lhs, used_l = _eval(m["lhs"], metrics)
    rhs, used_r = _eval(m["rhs"], metrics)
    ok = _OPS[m["op"]](lhs, rhs)
    values = ", ".join(f"{k}={metrics.get(k, 0):g}" for k in dict.fromkeys(used_l + used_r))
    return ok, f"{lhs:g} {m['op']} {rhs:g} ({values})"


def load_expectations(path: Path, variant: str) -> list[Expectation]:
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    items = data.get(variant) or []
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "check" not in item or "name" not in item:
            raise UserError(f"{path}: {variant}[{i}]: expected {{name: ..., check: ..., why: ...}}")
        try:
            evaluate(str(item["check"]), {})
        except ValueError as exc:
            raise UserError(f"{path}: {variant}[{i}].check: {exc}") from None
        out.append(Expectation(str(item["name"]), str(item["check"]), str(item.get("why", ""))))
    return out


def aging_calls(metrics: dict[str, float]) -> float:
    return metrics.get("kprobe.age_gfn.hits", 0) + metrics.get("kprobe.test_age_gfn.hits", 0)


def verdict_steps(run: WorkloadRun, expectations: list[Expectation]) -> list[Step]:
    steps = []
    m = run.metrics
    calls = aging_calls(m)
    lock_acq = m.get("lock.mmu_lock.write.acquisitions", 0) + m.get("lock.mmu_lock.read.acquisitions", 0)
    detail = (f"kvm_age_gfn+kvm_test_age_gfn calls={calls:g}, kvm_age_hva events written="
              f"{m.get('trace.events_written', 0):g}, mmu_lock acquisitions={lock_acq:g}")
    exercised = calls > 0 and lock_acq > 0
    steps.append(Step(f"verdict {run.name}: path exercised", PASSED if exercised else FAILED, 0.0,
                      "" if exercised else "the run never aged KVM memory: " + detail, output=detail))
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
        if not exercised:
            steps.append(Step(f"expect {run.name}: {exp.name}", FAILED, 0.0, "not checked: the aging path was not exercised"))
            continue
        ok, shown = evaluate(exp.check, m)
        steps.append(Step(f"expect {run.name}: {exp.name}", PASSED if ok else FAILED, 0.0,
                          "" if ok else f"{exp.check}: {shown}", output=f"{exp.check}: {shown}\nwhy: {exp.why}"))
    return steps
