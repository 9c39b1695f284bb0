"""Tracepoint sets (tracepoints/*.yaml) rendered to guest shell scripts.

Event and symbol names are validated against strict patterns before they are
written into a script, and every value is quoted.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from orchestrator.errors import UserError
from orchestrator.paths import PROJECT_ROOT, safe_name

TRACEPOINTS_DIR = PROJECT_ROOT / "tracepoints"
TRACEFS = "/sys/kernel/tracing"
_EVENT = re.compile(r"^[a-z0-9_]+:[a-z0-9_]+$")
_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(\+0x[0-9a-f]+|\+[0-9]+)?$")
_PROBE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Event filter of a recorded probe: field comparisons joined by && / || (see
# Documentation/trace/events.rst, "Event filtering"), e.g. "ret != 0".
_FILTER = re.compile(r"^[A-Za-z0-9_ =!<>&|()\-]+$")
KPROBE_GROUP = "orch"


@dataclass(frozen=True)
class Kprobe:
    name: str
    symbol: str
    kind: str = "p"  # "p" entry probe, "r" return probe
    fetch: str = ""  # e.g. "ret=$retval" for return probes
    record: bool = False  # False: count hits only (kprobe_profile), record no events
    filter: str = ""  # with record: keep only matching events (e.g. "ret != 0"); hits still count all

    def definition(self) -> str:
        return f"{self.kind}:{KPROBE_GROUP}/{self.name} {self.symbol} {self.fetch}".strip()


@dataclass(frozen=True)
class TracepointSet:
    name: str
    events: tuple[str, ...]
    kprobes: tuple[Kprobe, ...]
    buffer_size_kb: int
    path: Path

    def setup_script(self) -> str:
        q = shlex.quote
        lines = [f"T={TRACEFS}", "echo 0 > $T/tracing_on", "echo > $T/trace",
                 f"echo {int(self.buffer_size_kb)} > $T/buffer_size_kb"]
        for kp in self.kprobes:
            lines.append(f"echo {q(kp.definition())} >> $T/kprobe_events")
            if not kp.record:
                # Count only: kprobe_profile counts hits even when the filter
                # drops every event, so the buffer stays free for tracepoints.
                lines.append(f"echo 'common_pid < 0' > $T/events/{KPROBE_GROUP}/{kp.name}/filter")
            elif kp.filter:
                # Rare events worth their fields (a lost race) stay in the buffer
                # instead of being overwritten by the common case.
                lines.append(f"echo {q(kp.filter)} > $T/events/{KPROBE_GROUP}/{kp.name}/filter")
            lines.append(f"echo 1 > $T/events/{KPROBE_GROUP}/{kp.name}/enable")
        for ev in self.events:
            group, name = ev.split(":")
            lines.append(f"echo 1 > $T/events/{group}/{name}/enable")
        lines += ["echo 1 > $T/tracing_on", "echo ORCH-TRACE-START > $T/trace_marker"]
        return "\n".join(lines)

    def teardown_script(self, outdir: str) -> str:
        """Stop, save trace, per-CPU stats and kprobe_profile under outdir, disable everything."""
        q = shlex.quote
        o = q(outdir)
        lines = [f"T={TRACEFS}", "echo ORCH-TRACE-END > $T/trace_marker", "echo 0 > $T/tracing_on",
                 f"for c in $T/per_cpu/cpu*; do echo \"== ${{c##*/}}\"; cat $c/stats; done > {o}/trace_stats",
                 f"cat $T/trace > {o}/trace", f"cat $T/kprobe_profile > {o}/kprobe_profile 2>/dev/null || true"]
        for ev in self.events:
            group, name = ev.split(":")
            lines.append(f"echo 0 > $T/events/{group}/{name}/enable")
        for kp in self.kprobes:
            lines.append(f"echo 0 > $T/events/{KPROBE_GROUP}/{kp.name}/enable")
            lines.append(f"echo {q('-:' + KPROBE_GROUP + '/' + kp.name)} >> $T/kprobe_events")
        return "\n".join(lines)


def load_tracepoint_set(name: str) -> TracepointSet:
    safe_name(name, what="tracepoint set")
    path = TRACEPOINTS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in TRACEPOINTS_DIR.glob("*.yaml")))
        raise UserError(f"unknown tracepoint set {name!r}", hint=f"known sets: {known}")
    data = yaml.safe_load(path.read_text()) or {}
    events = tuple(data.get("events") or ())
    for i, ev in enumerate(events):
        if not isinstance(ev, str) or not _EVENT.match(ev):
            raise UserError(f"{path}: events[{i}] = {ev!r}: expected group:event (lower case, digits, _)")
    kprobes = []
    for i, kp in enumerate(data.get("kprobes") or ()):
        if not isinstance(kp, dict) or not _PROBE_NAME.match(str(kp.get("name", ""))) or not _SYMBOL.match(str(kp.get("symbol", ""))):
            raise UserError(f"{path}: kprobes[{i}]: expected {{name: lower_snake, symbol: kernel_symbol[+off]}}")
        kind = str(kp.get("kind", "p"))
        fetch = str(kp.get("fetch", ""))
        if kind not in ("p", "r") or not re.fullmatch(r"[A-Za-z0-9_=$%+:()\- ]*", fetch):
            raise UserError(f"{path}: kprobes[{i}]: kind must be p or r; fetch args may use [A-Za-z0-9_=$%+:()- ]")
        record = bool(kp.get("record", False))
        filt = str(kp.get("filter", "")).strip()
        if filt and (not record or not _FILTER.match(filt)):
            raise UserError(f"{path}: kprobes[{i}].filter: {filt!r}: a filter needs record: true and may use "
                            "[A-Za-z0-9_ =!<>&|()-] only", hint='e.g. filter: "ret != 0"')
        kprobes.append(Kprobe(kp["name"], kp["symbol"], kind, fetch, record, filt))
    size = int(data.get("buffer_size_kb", 1024))
    if not 64 <= size <= 65536:
        raise UserError(f"{path}: buffer_size_kb must be 64..65536 (per CPU)")
    return TracepointSet(name, events, tuple(kprobes), size, path)
