"""Tracepoint sets (tracepoints/*.yaml) rendered to guest shell scripts.

Event and symbol names are validated against strict patterns before they are
written into a script, and every value is quoted.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from orchestrator import datafiles
from orchestrator.paths import PROJECT_ROOT

TRACEPOINTS_DIR = PROJECT_ROOT / "tracepoints"
TRACEFS = "/sys/kernel/tracing"
_EVENT = re.compile(r"^[a-z0-9_]+:[a-z0-9_]+$")
_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(\+0x[0-9a-f]+|\+[0-9]+)?$")
_PROBE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Event filter of a recorded probe: field comparisons joined by && / || (see
# Documentation/trace/events.rst, "Event filtering"), e.g. "ret != 0".
_FILTER_TEXT = r"[A-Za-z0-9_ =!<>&|()\-]*"
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


_F = datafiles.Field
_KPROBE = datafiles.Mapping({
    "name": _F(datafiles.Str(pattern=_PROBE_NAME.pattern, matching="lower_snake (a-z, 0-9, _)"), required=True,
               help="probe name: metrics kprobe.NAME.hits"),
    "symbol": _F(datafiles.Str(pattern=_SYMBOL.pattern, matching="a kernel symbol, optionally +offset"), required=True,
                 help="kernel function to probe"),
    "kind": _F(datafiles.Str(choices=("p", "r")), default="p", help="p entry probe, r return probe"),
    "fetch": _F(datafiles.Str(pattern=r"[A-Za-z0-9_=$%+:()\- ]*", matching="fetch args of [A-Za-z0-9_=$%+:()- ]"),
                default="", help="fetch args, e.g. ret=$retval"),
    "record": _F(datafiles.Bool(), default=False, help="true: record events, not only count hits"),
    "filter": _F(datafiles.Str(pattern=_FILTER_TEXT, matching="an event filter of [A-Za-z0-9_ =!<>&|()-]",
                               hint='e.g. filter: "ret != 0"'), default="", help="with record: events to keep"),
}, expected="a mapping {name: lower_snake, symbol: kernel_symbol[+off]}")
TRACEPOINT_SET_SCHEMA = datafiles.Mapping({
    "name": _F(datafiles.Str(), help="the set's name (the file name is what counts)"),
    "buffer_size_kb": _F(datafiles.Int(64, 65536, hint="per-CPU trace buffer size in KiB"), default=1024,
                         help="per-CPU buffer, 64..65536"),
    "events": _F(datafiles.List(datafiles.Str(pattern=_EVENT.pattern, matching="group:event (lower case, digits, _)"),
                                expected="a list of group:event names"), default=[], help="tracepoints to enable"),
    "kprobes": _F(datafiles.List(_KPROBE, expected="a list of kprobes"), default=[], help="kprobes to count or record"),
})


def load_tracepoint_set(name: str) -> TracepointSet:
    path = datafiles.named_file(TRACEPOINTS_DIR, name, what="tracepoint set", plural="tracepoint sets")
    doc = datafiles.load(path, TRACEPOINT_SET_SCHEMA, what="tracepoint set")
    kprobes = []
    for i, kp in enumerate(doc.data["kprobes"]):
        filt = kp["filter"].strip()
        if filt and not kp["record"]:
            raise doc.error(("kprobes", i, "filter"), f"{filt!r}: a filter needs record: true",
                            hint="add `record: true` or drop the filter (a count-only probe records nothing)")
        kprobes.append(Kprobe(kp["name"], kp["symbol"], kp["kind"], kp["fetch"], kp["record"], filt))
    return TracepointSet(name, tuple(doc.data["events"]), tuple(kprobes), doc.data["buffer_size_kb"], path)
