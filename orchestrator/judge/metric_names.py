"""The metric names a cell can have, so a data file naming one that cannot
exist (a typo in patches/expectations.yaml) is an error when it is loaded,
not a check that quietly evaluates "0 >= 0".

Names come from the collectors (orchestrator/workload/evidence.py), the tracepoint
sets (kprobe names, tracepoint events) and the workloads (their output
parser and metric prefix); workload output metrics are open-ended, so those
are known by prefix.
"""
from __future__ import annotations

import functools

from orchestrator import datafiles
from orchestrator.errors import UserError
from orchestrator.workload.outcome import LOCK_CLASSES
from orchestrator.parsers.lockstat import METRIC_FIELDS
from orchestrator.paths import PROJECT_ROOT

_EXACT_FIXED = ("trace.events_written", "trace.events_lost", "trace.events_in_buffer", "workload.seconds",
                "memcg.oom_kill", "lru_gen.enabled", "lru_gen.memcgs", "boot.ready_s", "nested_kvm.ok")
# Families whose members depend on the run (call sites, vmstat keys, workload output).
_FIXED_PREFIXES = ("vmstat.", "host.", "race.")


def _yaml_files(folder: str) -> list[dict]:
    out = []
    for path in sorted((PROJECT_ROOT / folder).glob("*.yaml")):
        try:
            data = datafiles.read_data(path, what=folder)
        except UserError:
            continue  # its own loader reports it
        if isinstance(data, dict):
            out.append(data)
    return out


@functools.lru_cache(maxsize=1)
def _known() -> tuple[frozenset[str], tuple[str, ...]]:
    exact = set(_EXACT_FIXED)
    prefixes = list(_FIXED_PREFIXES)
    for alias in LOCK_CLASSES.values():
        exact.add(f"{alias}.present")
        exact.update(f"{alias}.{side}.{f}" for side in ("write", "read") for f in METRIC_FIELDS)
        prefixes += [f"{alias}.contention_point.", f"{alias}.contending_point."]
    for tp in _yaml_files("tracepoints"):
        for kp in tp.get("kprobes") or []:
            if isinstance(kp, dict) and "name" in kp:
                exact.update({f"kprobe.{kp['name']}.hits", f"kprobe.{kp['name']}.missed"})
        for ev in tp.get("events") or []:
            short = str(ev).split(":", 1)[-1]
            exact.update({f"trace.{short}.count", f"trace.{short}.rate_per_s"})
    for wl in _yaml_files("workloads"):
        output = str(wl.get("output", "none"))
        if output in ("phase-timings", "both"):
            prefixes.append("phase.")
        if output in ("metric-lines", "both"):
            prefixes.append(f"{wl.get('metric_prefix') or wl.get('name')}.")
    return frozenset(exact), tuple(dict.fromkeys(prefixes))


def known_metric(name: str) -> bool:
    exact, prefixes = _known()
    return name in exact or any(name.startswith(p) and len(name) > len(p) for p in prefixes)


def known_metric_examples() -> list[str]:
    """Every exact name, then each open family as PREFIX* (for error messages)."""
    exact, prefixes = _known()
    return sorted(exact) + [f"{p}*" for p in prefixes]

