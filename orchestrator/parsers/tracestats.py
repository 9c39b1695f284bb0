"""Tracing output: the trace file (streamed), per-CPU ring buffer stats,
hist trigger files and kprobe_profile.

A trace of millions of events does not fit the ring buffer (the oldest are
overwritten) and must not be held in memory here either: `summarize_trace`
iterates lines and keeps only counters. True event totals come from
per_cpu/cpuN/stats (entries still in the buffer + overrun) or, cheaper,
from a hist trigger or kprobe_profile, which count in the kernel.

Formats (kernel/trace/trace_output.c, trace.c tracing_stats_read,
trace_events_hist.c hist_trigger_show, trace_kprobe.c probes_profile_seq_show).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# "  <comm>-<pid>  [(tgid)] [cpu] flags  ts: event: payload"; flags absent
# with options/irq-info off, tgid present with options/record-tgid.
_EVENT = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s\[]{4,5})\s+)?(?P<ts>\d+(?:\.\d+)?):\s+(?P<event>[\w.:-]+?):\s?(?P<payload>.*)$"
)
_LOST = re.compile(r"^CPU:(?P<cpu>\d+) \[LOST (?P<n>\d+) EVENTS\]")
_ENTRIES = re.compile(r"^# entries-in-buffer/entries-written: (?P<buf>\d+)/(?P<written>\d+)\s+#P:(?P<cpus>\d+)")

# Numeric fields of the events this project traces, by event name: named
# groups of the regex are the field names (the TP_printk formats of
# include/trace/events/kvm.h do not print "name=value").
DEFAULT_FIELDS: dict[str, str] = {
    "kvm_age_hva": r"age hva: (?P<start>0x[0-9a-fA-F]+) -- (?P<end>0x[0-9a-fA-F]+)",
    "kvm_test_age_hva": r"test age hva: (?P<hva>0x[0-9a-fA-F]+)",
    "kvm_unmap_hva_range": r"unmap range: (?P<start>0x[0-9a-fA-F]+) -- (?P<end>0x[0-9a-fA-F]+)",
}
_KV = re.compile(r"(?P<k>[A-Za-z_]\w*)=(?P<v>-?(?:0x[0-9a-fA-F]+|\d+))\b")


@dataclass
class FieldSummary:
    count: int = 0
    min: int | None = None
    max: int | None = None
    total: int = 0

    def add(self, v: int) -> None:
        self.count += 1
        self.total += v
        self.min = v if self.min is None or v < self.min else self.min
        self.max = v if self.max is None or v > self.max else self.max


@dataclass
class EventSummary:
    name: str
    count: int = 0
    per_cpu: dict[int, int] = field(default_factory=dict)
    first_ts: float | None = None
    last_ts: float | None = None
    fields: dict[str, FieldSummary] = field(default_factory=dict)

    @property
    def rate_per_s(self) -> float | None:
        """Events per second between the first and the last event seen."""
        if self.first_ts is None or self.last_ts is None or self.last_ts <= self.first_ts:
            return None
        return (self.count - 1) / (self.last_ts - self.first_ts) if self.count > 1 else None


@dataclass
class TraceSummary:
    events: dict[str, EventSummary]
    lines: int
    unparsed: int                    # non-comment lines that are not events
    lost: dict[int, int]             # cpu -> "[LOST N EVENTS]" total (consuming reads)
    entries_in_buffer: int | None    # from the header, when present
    entries_written: int | None
    cpus: int | None

    def count(self, event: str) -> int:
        e = self.events.get(event)
        return e.count if e else 0


def _number(v: str) -> int:
    return int(v, 16) if v.lower().startswith(("0x", "-0x")) else int(v)


def summarize_trace(lines: Iterable[str], fields: Mapping[str, str] | None = None) -> TraceSummary:
    """Count events in a trace/trace_pipe text, in constant memory.

    fields: event name -> regex with named numeric groups to summarize
    (DEFAULT_FIELDS if None). Events without an entry get their `name=value`
    pairs summarized; a `start`/`end` pair also yields `span` = end - start.
    """
    specs = {k: re.compile(v) for k, v in (DEFAULT_FIELDS if fields is None else fields).items()}
    events: dict[str, EventSummary] = {}
    lost: dict[int, int] = {}
    n = unparsed = 0
    buf = written = cpus = None
    for raw in lines:
        n += 1
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if line.startswith("#"):
            if m := _ENTRIES.match(line):
                buf, written, cpus = int(m["buf"]), int(m["written"]), int(m["cpus"])
            continue
        m = _EVENT.match(line)
        if m is None:
            if lm := _LOST.match(line):
                lost[int(lm["cpu"])] = lost.get(int(lm["cpu"]), 0) + int(lm["n"])
            else:
                unparsed += 1
            continue
        name = m["event"]
        ev = events.get(name)
        if ev is None:
            ev = events[name] = EventSummary(name)
        ev.count += 1
        cpu = int(m["cpu"])
        ev.per_cpu[cpu] = ev.per_cpu.get(cpu, 0) + 1
        ts = float(m["ts"])
        if ev.first_ts is None:
            ev.first_ts = ts
        ev.last_ts = ts
        spec = specs.get(name)
        if spec is not None:
            fm = spec.search(m["payload"])
            values = {k: _number(v) for k, v in fm.groupdict().items() if v is not None} if fm else {}
        else:
            values = {k.group("k"): _number(k.group("v")) for k in _KV.finditer(m["payload"])}
        if "start" in values and "end" in values:
            values["span"] = values["end"] - values["start"]
        for k, v in values.items():
            ev.fields.setdefault(k, FieldSummary()).add(v)
    return TraceSummary(events, n, unparsed, lost, buf, written, cpus)


@dataclass(frozen=True)
class CpuBufferStats:
    """per_cpu/cpuN/stats; counts are events, bytes are bytes."""
    entries: int            # events now in the buffer
    overrun: int            # events overwritten (lost to the reader)
    commit_overrun: int     # events lost while the buffer was being written
    bytes: int
    oldest_event_ts: float | None
    now_ts: float | None
    dropped_events: int     # events not recorded (buffer full, overwrite off)
    read_events: int        # events consumed by trace_pipe reads

    @property
    def written(self) -> int:
        """Events that reached the buffer: still there + overwritten + consumed."""
        return self.entries + self.overrun + self.read_events

    @property
    def lost(self) -> int:
        return self.overrun + self.commit_overrun + self.dropped_events


_STAT_LINE = re.compile(r"^(?P<k>[a-z ]+):\s+(?P<v>-?\d+(?:\.\d+)?)\s*$")


def parse_cpu_stats(text: str) -> CpuBufferStats:
    vals: dict[str, str] = {}
    for line in text.splitlines():
        if m := _STAT_LINE.match(line.strip()):
            vals[m["k"]] = m["v"]
    missing = [k for k in ("entries", "overrun") if k not in vals]
    if missing:
        raise ValueError(f"not a per_cpu stats file: no {', '.join(missing)} line")

    def i(k: str) -> int:
        return int(float(vals.get(k, "0")))

    def f(k: str) -> float | None:
        return float(vals[k]) if k in vals else None

    return CpuBufferStats(i("entries"), i("overrun"), i("commit overrun"), i("bytes"),
                          f("oldest event ts"), f("now ts"), i("dropped events"), i("read events"))


@dataclass(frozen=True)
class BufferTotals:
    entries: int
    overrun: int
    written: int
    lost: int
    per_cpu: Mapping[int, CpuBufferStats]


def buffer_totals(per_cpu: Mapping[int, CpuBufferStats]) -> BufferTotals:
    s = per_cpu.values()
    return BufferTotals(sum(c.entries for c in s), sum(c.overrun for c in s),
                        sum(c.written for c in s), sum(c.lost for c in s), dict(per_cpu))


@dataclass(frozen=True)
class HistEntry:
    key: dict[str, str]       # field -> value as printed (stripped)
    values: dict[str, int]    # "hitcount" and any other value fields


@dataclass
class Histogram:
    trigger: str              # "hist:keys=common_pid:vals=hitcount:sort=hitcount:size=2048 [active]"
    entries: list[HistEntry] = field(default_factory=list)
    hits: int | None = None
    n_entries: int | None = None
    dropped: int | None = None

    def total(self, value: str = "hitcount") -> int:
        return sum(e.values.get(value, 0) for e in self.entries)


_HIST_LINE = re.compile(r"^\{(?P<key>.*)\}(?P<vals>.*)$")
_HIST_KEY = re.compile(r"(?:^|,)\s*(?P<k>[\w.]+):\s+")
_HIST_VAL = re.compile(r"(?P<k>[\w.]+(?: \(%\))?):\s+(?P<v>[0-9a-fA-F.]+)")
_TOTAL = re.compile(r"^\s+(?P<k>Hits|Entries|Dropped):\s+(?P<v>\d+)")


def parse_hist(text: str) -> list[Histogram]:
    """events/SYS/EVENT/hist: one Histogram per trigger on the event.
    Stacktrace keys (multi-line) are kept as their first line."""
    hists: list[Histogram] = []
    cur: Histogram | None = None
    for line in text.splitlines():
        if line.startswith("# trigger info: "):
            cur = Histogram(line[len("# trigger info: "):].strip())
            hists.append(cur)
            continue
        if cur is None:
            continue
        if m := _HIST_LINE.match(line):
            body = m["key"]
            starts = list(_HIST_KEY.finditer(body))
            key = {s["k"]: body[s.end(): starts[j + 1].start() if j + 1 < len(starts) else len(body)].strip()
                   for j, s in enumerate(starts)}
            values = {}
            for v in _HIST_VAL.finditer(m["vals"]):
                try:
                    values[v["k"]] = int(v["v"])
                except ValueError:
                    continue  # percent / graph columns
            cur.entries.append(HistEntry(key, values))
        elif m := _TOTAL.match(line):
            setattr(cur, {"Hits": "hits", "Entries": "n_entries", "Dropped": "dropped"}[m["k"]], int(m["v"]))
    return hists


@dataclass(frozen=True)
class KprobeHits:
    nhit: int
    nmissed: int


def parse_kprobe_profile(text: str) -> dict[str, KprobeHits]:
    """kprobe_profile: `  name  nhit  nmissed` per probe event."""
    out: dict[str, KprobeHits] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out[parts[0]] = KprobeHits(int(parts[1]), int(parts[2]))
    return out
