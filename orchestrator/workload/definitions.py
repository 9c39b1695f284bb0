"""Workload definitions (workloads/*.yaml) and their output parsers.

A workload is data: the guest program, its argument template, typed
parameters with defaults, a time limit and the tracepoint set to enable.
Values from YAML only ever reach the guest as shell-quoted arguments.
"""
from __future__ import annotations

import difflib
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import UserError
from orchestrator.paths import PROJECT_ROOT, safe_name
from orchestrator.vm.guest_paths import under_root

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
                 "better": "lower, higher or neither"}
# First component of every metric name the collectors and parsers emit
# (evidence.py, race_report.py, runner.py); a workload's own lines add its prefix.
METRIC_FAMILIES = ("boot", "kprobe", "lock", "lru_gen", "memcg", "nested_kvm", "phase", "race", "trace", "vmstat", "workload")


@dataclass(frozen=True)
class ComparedMetric:
    """A metric the report compares across variants, declared by the workload (`compare:`)."""
    metric: str
    label: str
    unit: str
    better: str  # one of BETTER

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
        return [under_root(self.program), *(a.format(**values) for a in self.args)]

    def command(self, given: dict[str, Any]) -> str:
        """Guest shell command: every element quoted."""
        return shlex.join(self.argv(given))


def load_workload(name: str) -> Workload:
    safe_name(name, what="workload name")
    path = WORKLOADS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in WORKLOADS_DIR.glob("*.yaml")))
        raise UserError(f"unknown workload {name!r}", hint=f"known workloads: {known}")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping")
    for key in ("program", "args", "timeout_s"):
        if key not in data:
            raise UserError(f"{path}: missing key {key!r}")
    output = str(data.get("output", "none"))
    if output not in OUTPUT_PARSERS:
        raise UserError(f"{path}: output: {output!r} is not a known output format",
                        hint=f"one of: {', '.join(OUTPUT_PARSERS)}")
    prefix = str(data.get("metric_prefix", name))
    if not _METRIC_NAME.fullmatch(prefix):
        raise UserError(f"{path}: metric_prefix: {prefix!r}: expected letters, digits, _ . - (starting with a letter)")
    params = {}
    for pname, spec in (data.get("params") or {}).items():
        if not isinstance(spec, dict) or "default" not in spec or "pattern" not in spec:
            raise UserError(f"{path}: params.{pname} needs default and pattern")
        params[pname] = ParamSpec(pname, spec["default"], spec["pattern"], spec.get("help", ""))
    return Workload(name, data.get("description", ""), data["program"], tuple(str(a) for a in data["args"]),
                    params, int(data["timeout_s"]), data.get("tracepoints"), output, path, prefix,
                    _compared(path, text, prefix), _flag(path, data, "ages_kvm", True))


def _closest(word: str, choices) -> str:
    near = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (closest: {near[0]!r})" if near else ""


def _flag(path: Path, data: dict, key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise UserError(f"{path}: {key}: expected true or false, got {value!r}")
    return value


def _compared(path: Path, text: str, prefix: str) -> tuple[ComparedMetric, ...]:
    """The `compare:` list, checked entry by entry; errors name file, line and field."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    node = next((v for k, v in root.value if k.value == "compare"), None) if isinstance(root, yaml.MappingNode) else None
    if node is None:
        return ()

    def where(n: yaml.Node, field: str) -> str:
        return f"{path}:{n.start_mark.line + 1}: {field}"

    example = "- {metric: workload.seconds, label: workload wall time, unit: s, better: lower}"
    if not isinstance(node, yaml.SequenceNode):
        raise UserError(f"{where(node, 'compare')}: expected a list of metric declarations", hint=f"entries like {example}")
    families = sorted({*METRIC_FAMILIES, prefix})
    out: list[ComparedMetric] = []
    for i, item in enumerate(node.value):
        field = f"compare[{i}]"
        if not isinstance(item, yaml.MappingNode):
            raise UserError(f"{where(item, field)}: expected a mapping with {', '.join(COMPARED_KEYS)}", hint=f"e.g. {example}")
        values: dict[str, str] = {}
        for k, v in item.value:
            if k.value not in COMPARED_KEYS:
                raise UserError(f"{where(k, field + '.' + str(k.value))}: unknown field{_closest(str(k.value), COMPARED_KEYS)}",
                                hint="fields: " + "; ".join(f"{n} ({d})" for n, d in COMPARED_KEYS.items()))
            if not isinstance(v, yaml.ScalarNode):
                raise UserError(f"{where(v, field + '.' + k.value)}: expected a string", hint=f"e.g. {example}")
            values[k.value] = str(v.value)
        missing = [k for k in COMPARED_KEYS if k not in values]
        if missing:
            raise UserError(f"{where(item, field)}: missing {', '.join(missing)}",
                            hint="fields: " + "; ".join(f"{n} ({d})" for n, d in COMPARED_KEYS.items()))
        metric, better = values["metric"], values["better"]
        if not _METRIC_NAME.fullmatch(metric) or metric.split(".")[0] not in families or "." not in metric:
            head = metric.split(".")[0]
            raise UserError(f"{where(item, field + '.metric')}: {metric!r} is not a metric name this workload can produce"
                            f"{_closest(head, families) if head not in families else ''}",
                            hint=f"names are FAMILY.NAME with FAMILY one of: {', '.join(families)}; "
                                 "see a cell's metrics.json for the exact names")
        if better not in BETTER:
            raise UserError(f"{where(item, field + '.better')}: {better!r}{_closest(better, BETTER)}",
                            hint=f"expected one of: {', '.join(BETTER)}")
        if metric in {c.metric for c in out}:
            raise UserError(f"{where(item, field + '.metric')}: {metric!r} is declared twice", hint="keep one entry")
        out.append(ComparedMetric(metric, values["label"], values["unit"], better))
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
