"""Workload definitions (workloads/*.yaml) and their output parsers.

A workload is data: the guest program, its argument template, typed
parameters with defaults, a time limit and the tracepoint set to enable.
Values from YAML only ever reach the guest as shell-quoted arguments.
"""
from __future__ import annotations

import functools
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import datafiles
from orchestrator.errors import UserError
from orchestrator.paths import PROJECT_ROOT
from orchestrator.guest_paths import under_root
from orchestrator.workload.suite_spec import RESULT_PARSERS, SuiteSpec, suite_from, suite_schema

WORKLOADS_DIR = PROJECT_ROOT / "workloads"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    pattern: str
    help: str = ""


# How a compared metric moves when things get better.
# "neither" is for evidence counts (lock acquisitions, aging calls) whose
# change is the point of a series but is no improvement in itself.
BETTER = ("lower", "higher", "neither")
COMPARED_KEYS = {"metric": "metric name as in metrics.json (e.g. lock.mmu_lock.write.acquisitions)",
                 "label": "what the report calls it", "unit": "unit shown after values (\"\" for a count)",
                 "better": "lower, higher or neither",
                 "min_effect_pct": "optional: the smallest change (%) that matters; a change whose whole 95% interval "
                                   "lies inside +-this is reported as ruled out"}
# First component of every metric name the collectors and parsers emit
# (workload/evidence.py, parsers/race_trace.py, matrix/cell.py); a workload's own lines add its prefix.
METRIC_FAMILIES = ("boot", "kprobe", "lock", "lru_gen", "memcg", "nested_kvm", "phase", "race", "trace", "vmstat", "workload")


@dataclass(frozen=True)
class ComparedMetric:
    """A metric the report compares across variants, declared by the workload (`compare:`)."""
    metric: str
    label: str
    unit: str
    better: str  # one of BETTER
    min_effect_pct: float | None = None  # declared minimum effect of interest (reports/stats.py: equivalence)

    def title(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    program: str  # relative to guest_paths.GUEST_ROOT (selftests/, bin/, workloads/)
    args: tuple[str, ...]
    params: dict[str, ParamSpec]
    timeout_s: int
    tracepoints: str | None
    output: str  # one of OUTPUT_PARSERS
    path: Path
    metric_prefix: str = ""  # metric-lines: names become <prefix>.<name>; default the workload name
    compared: tuple[ComparedMetric, ...] = ()  # `compare:`, in report order
    ages_kvm: bool = True  # `ages_kvm: false`: not an aging workload; "path exercised" and expectations do not apply
    results: str = "none"  # `results: ktap`: per-test results from the output (parsers/ktap.py)
    suite: SuiteSpec | None = None  # `suite:`: a test suite (workload/suite_spec.py)

    def resolve_params(self, given: dict[str, Any]) -> dict[str, str]:
        unknown = set(given) - set(self.params)
        if unknown:
            raise UserError(f"workload {self.name}: unknown parameter(s) {', '.join(sorted(unknown))}",
                            hint=f"parameters of {self.path}: {', '.join(self.params)}")
        out = {}
        for name, spec in self.params.items():
            value = str(given.get(name, spec.default))
            if not re.fullmatch(spec.pattern, value):
                raise UserError(f"workload {self.name}: parameter {name}={value!r} does not match {spec.pattern}",
                                hint=spec.help or f"see {self.path}")
            out[name] = value
        return out

    def argv(self, given: dict[str, Any]) -> list[str]:
        values = self.resolve_params(given)
        if self.suite is not None:  # the suite's runner: its options, then the tests
            return [under_root(self.program), *self.suite.runner_options(),
                    *(a.format(**values) for a in self.args), *(self.suite.tests(values.get("tests", "all")) or ["all"])]
        return [under_root(self.program), *(a.format(**values) for a in self.args)]

    def limit_s(self, given: dict[str, Any]) -> int:
        """The run's time limit: timeout_s, or less for a subset of a suite."""
        if self.suite is None:
            return self.timeout_s
        values = self.resolve_params(given)
        return self.suite.host_limit_s(self.suite.tests(values.get("tests", "all")), self.timeout_s,
                                       int(values.get("override_timeout", 0) or 0))

    def command(self, given: dict[str, Any]) -> str:
        """Guest shell command: every element quoted."""
        return shlex.join(self.argv(given))


COMPARE_EXAMPLE = "- {metric: workload.seconds, label: workload wall time, unit: s, better: lower}"


@functools.cache
def workload_schema() -> datafiles.Mapping:
    """What a workloads/*.yaml file may say (built on first use: OUTPUT_PARSERS is defined below)."""
    F, Str = datafiles.Field, datafiles.Str
    compared = datafiles.Mapping(
        {"metric": F(Str(numbers_as_text=True), required=True, help=COMPARED_KEYS["metric"]),
         "label": F(Str(numbers_as_text=True), required=True, help=COMPARED_KEYS["label"]),
         "unit": F(Str(numbers_as_text=True), required=True, help=COMPARED_KEYS["unit"]),
         "better": F(Str(choices=BETTER), required=True, help=COMPARED_KEYS["better"]),
         "min_effect_pct": F(datafiles.Int(1, 1000, expected="a percentage from 1 to 1000"),
                             help=COMPARED_KEYS["min_effect_pct"])},
        noun="field", expected=f"a mapping with {', '.join(COMPARED_KEYS)}")
    param = datafiles.Mapping({
        "default": F(datafiles.Scalar(), required=True, help="value when the matrix gives none"),
        "pattern": F(Str(), required=True, help="regular expression every value must match"),
        "help": F(Str(), default="", help="what the parameter means"),
    })
    return datafiles.Mapping({
        "name": F(Str(), help="the workload's name (the file name is what counts)"),
        "description": F(Str(numbers_as_text=True), default="", help="one line for reports"),
        "program": F(Str(), required=True, help="guest program under the guest root (selftests/, bin/, workloads/)"),
        "args": F(datafiles.List(datafiles.Scalar(), expected="a list of arguments"), required=True,
                  help="arguments, with {param} fields"),
        "params": F(datafiles.MapOf(param, expected="a mapping of parameter: {default, pattern, help}"), default={},
                    help="typed parameters"),
        "timeout_s": F(datafiles.Int(), required=True, help="time limit in seconds"),
        "tracepoints": F(Str(), help="tracepoint set (tracepoints/NAME.yaml)"),
        "output": F(Str(choices=OUTPUT_PARSERS), default="none", help="how metrics are read from the output"),
        "metric_prefix": F(Str(pattern=_METRIC_NAME.pattern, matching=_PREFIX_RULE),
                           help="metric-lines names become PREFIX.NAME"),
        "compare": F(datafiles.List(compared, expected="a list of metric declarations", hint=f"entries like {COMPARE_EXAMPLE}"),
                     default=[], help="metrics compared across variants"),
        "ages_kvm": F(datafiles.Bool(), default=True, help="false: not an aging workload"),
        "results": F(Str(choices=RESULT_PARSERS), default="none", help="how per-test results are read from the output"),
        "suite": F(suite_schema(), help="a test suite: collection, list, timeout_factor, known, test_args"),
    })


_PREFIX_RULE = "letters, digits, _ . - (starting with a letter)"


def load_workload(name: str) -> Workload:
    path = datafiles.named_file(WORKLOADS_DIR, name, what="workload", plural="workloads")
    doc = datafiles.load(path, workload_schema(), what="workload")
    data = doc.data
    prefix = data.get("metric_prefix", name)
    if not _METRIC_NAME.fullmatch(prefix):  # the file name, when no prefix is given
        raise doc.error(("metric_prefix",), f"{prefix!r}: expected {_PREFIX_RULE}",
                        hint="add `metric_prefix:` or rename the file")
    params = {pname: ParamSpec(pname, spec["default"], spec["pattern"], spec["help"])
              for pname, spec in data["params"].items()}
    return Workload(name, data["description"], data["program"], tuple(str(a) for a in data["args"]),
                    params, data["timeout_s"], data.get("tracepoints"), data["output"], path, prefix,
                    _compared(doc, prefix), data["ages_kvm"], data["results"], suite_from(data.get("suite")))


def _compared(doc: datafiles.Document, prefix: str) -> tuple[ComparedMetric, ...]:
    """The `compare:` list (its shape checked by the schema): every metric one this workload can produce, once."""
    families = sorted({*METRIC_FAMILIES, prefix})
    out: list[ComparedMetric] = []
    for i, values in enumerate(doc.data["compare"]):
        metric, at = values["metric"], ("compare", i, "metric")
        head = metric.split(".")[0]
        if not _METRIC_NAME.fullmatch(metric) or head not in families or "." not in metric:
            raise doc.error(at, f"{metric!r} is not a metric name this workload can produce"
                                f"{datafiles.closest(head, families) if head not in families else ''}",
                            hint=f"names are FAMILY.NAME with FAMILY one of: {', '.join(families)}; "
                                 "see a cell's metrics.json for the exact names")
        if metric in {c.metric for c in out}:
            raise doc.error(at, f"{metric!r} is declared twice", hint="keep one entry")
        out.append(ComparedMetric(metric, values["label"], values["unit"], values["better"], values.get("min_effect_pct")))
    return tuple(out)


_PHASE = re.compile(r"^(?P<phase>[A-Za-z][A-Za-z0-9 /_-]*?)\s*:\s*(?P<sec>\d+\.\d+)s\s*$")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def parse_phase_timings(output: str) -> dict[str, float]:
    """`<phase> : <seconds>s` lines (access_tracking_perf_test and friends).

    A phase that repeats gets _2, _3 ... suffixes; totals per phase name too.
    """
    metrics: dict[str, float] = {}
    seen: dict[str, int] = {}
    for line in output.splitlines():
        m = _PHASE.match(line.strip())
        if not m:
            continue
        name = slug(m["phase"])
        seen[name] = seen.get(name, 0) + 1
        key = f"phase.{name}_s" if seen[name] == 1 else f"phase.{name}_{seen[name]}_s"
        metrics[key] = float(m["sec"])
        metrics[f"phase.{name}_total_s"] = round(metrics.get(f"phase.{name}_total_s", 0.0) + float(m["sec"]), 9)
    return metrics


_METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_METRIC_LINE = re.compile(r"^ORCH-METRIC\s+(?P<name>\S+)\s+(?P<value>\S+)\s*$")


def parse_metric_lines(output: str, prefix: str) -> dict[str, float]:
    """`ORCH-METRIC <name> <value>` lines (the project's guest programs) -> {prefix.name: value}.

    Lines with a malformed name or a value that is not a finite number are
    skipped; a repeated name keeps its last value (a program may print a
    running total).
    """
    metrics: dict[str, float] = {}
    for line in output.splitlines():
        m = _METRIC_LINE.match(line.strip())
        if not m or not _METRIC_NAME.fullmatch(m["name"]):
            continue
        try:
            value = float(m["value"])
        except ValueError:
            continue
        if math.isfinite(value):
            metrics[f"{prefix}.{m['name']}"] = value
    return metrics


OUTPUT_PARSERS = ("none", "phase-timings", "metric-lines", "both")


def parse_workload_output(workload: Workload, output: str) -> dict[str, float]:
    """Metrics from a workload's output, by its `output:` format."""
    metrics: dict[str, float] = {}
    if workload.output in ("phase-timings", "both"):
        metrics.update(parse_phase_timings(output))
    if workload.output in ("metric-lines", "both"):
        metrics.update(parse_metric_lines(output, workload.metric_prefix or workload.name))
    return metrics
