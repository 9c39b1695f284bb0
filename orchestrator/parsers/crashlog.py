"""Console log -> crash reports titled like syzkaller (syzbot, KernelCI).

The formats live in crash_patterns.yaml (data: a new format is a new entry
plus a console log that shows it).  This module only knows how to read a
console and how to apply an entry:

- a header line opens a report (the header regex is searched in the line, so
  a login prompt or "** N printk messages dropped **" in front of it does not
  hide it); the report collects lines until its end marker, the end of its
  first call trace, a new report header, or `max_lines`;
- the guilty frame comes from the entry's `frames` sources in order (the
  pc/RIP line, the header, lines after a marker such as lockdep's "at:",
  the first call trace), dropping frames that match `skip_frames` (helpers
  that say how a report was printed, not where the bug is) and gcc clone
  suffixes (".constprop.0", ".isra.0", ".part.0", ".cold");
- the title is the entry's template, then made stable the way syzkaller does
  it: addresses become ADDR, numbers NUM, "file.c:123" "file.c:LINE";
- a report is `corrupted` (truncated, interleaved, or only the panic that
  follows a real report) when the rules cannot name it; it keeps its title
  prefix and says why, instead of being mistitled;
- the fingerprint is a hash of the title and the top frames from the guilty
  one down (function names only), so the same bug in two runs, or on two
  kernels with different code layout, compares equal.

Speed and memory: the input is read in chunks; within a chunk the literal
keywords of all headers are found in one Aho-Corasick pass (ahocorasick-rs)
and only lines that contain one, plus the lines of open reports, are decoded
and matched.  Memory
is bounded by the chunk size and `max_lines`; nothing in the input can raise.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import BinaryIO

try:  # the regex parser, to find the literal keyword of each header
    import re._parser as _sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_parse as _sre_parse  # type: ignore[no-redef]

import ahocorasick_rs

from orchestrator import datafiles

PATTERNS_FILE = Path(__file__).with_name("crash_patterns.yaml")
MAX_LINE_CHARS = 1024
TOP_FRAMES = 3
CHUNK_BYTES = 4 << 20
TITLE_MAX = 120  # syzkaller's bound: interleaved lines can be very long
ATTACH_WINDOW = 40  # lines between a report and the panic it causes

# printk prefixes: "<4>" (dmesg -r), "[   12.345678]", "[    T123]" / "[  C1]" (PRINTK_CALLER),
# and, as syzkaller allows, "** 5 printk messages dropped ** " or a login prompt in front
_PREFIX = re.compile(r"^(?:\*\* \d+ printk messages dropped \*\* )?(?:.{0,80} login: )?"
                     r"(?:<\d{1,3}>)?(?:\[\s*\d+\.\d+\])?(?:\[\s*[TC]\d+\])?\s?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# One stack frame: arm64 " func+0x1c/0x40 [mod]", x86 " func+0x1c/0x40" or
# " ? func+0x..." (unreliable, ignored), "[<ffff...>] func+0x..." (older and
# kmemleak), symbolized "func+0x1c/0x40 file.c:12", before 4.15 also after a
# marker on the same line (" <EOI>  [<ffff..>] func+0x.."); the name ends at the
# first dot, which drops gcc clone suffixes.
_FRAME = re.compile(r"^\s*(?:<(?:/?IRQ|/?TASK|/?NMI|EOI)>\s+)?(?:\[<?(?:0x)?[0-9a-f]+>?\]\s*)?(?P<q>\?\s+)?(?P<func>[A-Za-z_$][\w$]*)[\w.$]*\+0x[0-9a-fA-F]+/0x[0-9a-fA-F]+")
# a symbolized inline frame has no offset: " __dump_stack lib/dump_stack.c:88 [inline]"
_INLINE = re.compile(r"^\s*(?:\[<?(?:0x)?[0-9a-f]+>?\]\s*)?(?P<func>[A-Za-z_][\w]*)[\w.]* \S+:\d+ \[inline\]\s*$")
_TRACE_MARKER = re.compile(r"^\s*(?:<(?:/?IRQ|/?TASK|/?NMI|EOI)>|---\[ end of stack)\s*$")
_CALL_TRACE = re.compile(r"^\s*(?:Call [Tt]race:|Backtrace:)\s*$")
# the faulting PC: arm64 "pc : func+0x..", x86 "RIP: 0010:func+0x.." (before 4.15 also
# "RIP: 0010:[<ffff..>]  [<ffff..>] func+0x.." and "IP: [<ffff..>] func+0x.."), arm32
# "PC is at func+0x..", ppc "NIP [..] func+0x.."; a user-space RIP ("0033:0x7f..") has no name
_PC = re.compile(r"^\s*(?:pc\s*:|R?IP:\s*(?:[0-9a-f]{4}:)?|PC is at|NIP:?)\s*(?:\[<?(?:0x)?[0-9a-f]+>?\]\s*){0,2}"
                 r"(?P<func>[A-Za-z_][\w]*)[\w.]*\+0x")
# x86 pt_regs printed inside a call trace (an interrupt or exception frame: the RIP line
# then these); they neither end the trace nor are frames
_X86_REGS = re.compile(r"^\s*(?:R[A-Z0-9]{1,2}|[A-Z]S|CR\d|DR\d|Code|PKRU|EFLAGS|ORIG_RAX)\s*:")
# any "func+0x1/0x2" in a line (lockdep's "at: func+0x..", "[<ffff>] func+0x..")
_ANY_FUNC = re.compile(r"(?:^|[\s(<>\]])(?P<func>[A-Za-z_][\w]*)[\w.]*\+0x[0-9a-fA-F]+/0x[0-9a-fA-F]+")
# register dump of show_regs: "x29: ffff... x28: ..."; a report without a kernel
# stack (soft lockup in user mode) ends with it
_REGS = re.compile(r"^\s*x\d+\s*: [0-9a-f]{16}")
_FIELD = re.compile(r"{(\w+)}")
_TIMESTAMP = re.compile(r"\[\s*\d+\.\d+\]")

# syzkaller's dynamic title replacement (pkg/report): parts of a title that
# differ between two runs of the same bug.  Applied in this order.
_TITLE_REPLACEMENTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"([^a-zA-Z0-9])(?:0x)?[0-9a-f]{6,}"), r"\1ADDR"),
    (re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"), "IP"),
    (re.compile(r"(\.\w+)(:[0-9]+)+"), r"\1:LINE"),
    (re.compile(r"([a-zA-Z][a-zA-Z0-9_.]+)\+0x[0-9a-z]+/0x[0-9a-z]+"), r"\1"),
    (re.compile(r"CPU#[0-9]+"), "CPU"),
    (re.compile(r"(\W)(\d+)(\W|$)"), r"\1NUM\3"),
    (re.compile(r"\d{7,}"), "NUM"),
)


@dataclass(frozen=True)
class AfterMarker:
    """Frames from the lines that follow a marker line (lockdep's "... at: func+0x")."""
    marker: re.Pattern[str]


FrameSource = str | AfterMarker  # "pc", "header", "trace", "interrupted" or lines after a marker


@dataclass(frozen=True)
class Pattern:
    name: str
    kind: str
    header: re.Pattern[str]
    title: str
    keyword: bytes
    frames: tuple[FrameSource, ...] = ()
    skip: tuple[re.Pattern[str], ...] = ()
    extractor: str = ""  # "", "stall" or "hang"
    end: re.Pattern[str] | None = None
    end_after_trace: bool = False
    detail: tuple[re.Pattern[str], ...] = ()
    part_of: tuple[str, ...] = ()
    attach_to_previous: bool = False
    corrupted: str = ""  # this format alone is a sign of a damaged log: why
    max_lines: int = 200

    @cached_property
    def keyword_text(self) -> str:
        return self.keyword.decode()


@dataclass(frozen=True)
class PatternTable:
    patterns: tuple[Pattern, ...]
    skip_frames: tuple[re.Pattern[str], ...]
    frame_prefixes: tuple[str, ...]
    interrupt_frames: re.Pattern[str] | None
    stall_anchors: tuple[re.Pattern[str], ...]
    stall_self_anchors: tuple[tuple[re.Pattern[str], str], ...]
    hang_anchors: dict[str, str]
    hang_skip: tuple[str, ...]
    keywords: tuple[bytes, ...]
    ignore: tuple[re.Pattern[str], ...]  # lines that are never a header (user-space faults, tool chatter)
    finder: ahocorasick_rs.BytesAhoCorasick = field(compare=False, repr=False)

    def keyword_hits(self, buf: bytes) -> list[int]:
        """Offsets in `buf` where a header keyword starts (Aho-Corasick: one pass for all of them)."""
        return [start for _, start, _ in self.finder.find_matches_as_indexes(buf)]

    def is_generic(self, func: str, extra: tuple[re.Pattern[str], ...] = ()) -> bool:
        return any(p.search(func) for p in self.skip_frames) or any(p.search(func) for p in extra)

    def strip_prefix(self, func: str) -> str:
        """"__arm64_sys_write" and "__x64_sys_write" are the same frame: the shortest stripping."""
        best = func
        for prefix in self.frame_prefixes:
            if func.startswith(prefix) and len(func) - len(prefix) < len(best):
                best = func[len(prefix):]
        return best


@dataclass(frozen=True)
class Crash:
    kind: str                  # warning, bug, oops, panic, lockdep, rcu_stall, lockup, hung_task, kasan, ubsan, ...
    pattern: str               # entry name in crash_patterns.yaml
    title: str                 # syzkaller-style, stable across runs
    fingerprint: str           # 16 hex digits: title + top frames from the guilty one
    line: int                  # 1-based console line of the header
    end_line: int              # last line of the excerpt
    excerpt: str               # console lines as printed (timestamps kept)
    frames: tuple[str, ...] = field(default=())  # candidate frames in order, generic ones dropped
    fields: dict[str, str] = field(default_factory=dict, compare=False)  # named groups of header/detail
    corrupted: bool = False    # truncated / interleaved / only a consequence: the title may not name the bug
    corrupted_reason: str = ""


# --------------------------------------------------------------------------- loading

def _literal_keyword(rx: str) -> str:
    """The longest run of literal characters that every match of `rx` contains
    (literals inside plain groups count: "INFO: (?P<f>rcu_\\w+)" gives "INFO: rcu_")."""
    try:
        parsed = _sre_parse.parse(rx)
    except Exception:  # noqa: BLE001 - compile() already reported real errors
        return ""

    def items(seq):  # literal characters, None where the run breaks
        for op, arg in seq:
            if str(op) == "LITERAL":
                yield chr(arg)
            elif str(op) == "SUBPATTERN":
                yield from items(arg[-1])
            else:
                yield None

    best, run = "", ""
    for ch in items(parsed):
        if ch is None:
            best, run = max(best, run, key=len), ""
        else:
            run += ch
    return max(best, run, key=len)


_F, _Str, _Regex, _List = datafiles.Field, datafiles.Str, datafiles.Regex, datafiles.List
_FRAME_SOURCE = datafiles.OneOf((
    _Str(choices=("pc", "header", "trace", "interrupted")),
    datafiles.Mapping({"after": _F(_Regex(), required=True, help="frames on the lines after a line matching this")}),
), expected="pc, header, trace, interrupted or {after: REGEX}", hint="list where the guilty frame comes from, in order")
PATTERN_SCHEMA = datafiles.Mapping({
    "name": _F(_Str(), required=True, help="unique id"),
    "kind": _F(_Str(), required=True, help="category: warning, bug, oops, panic, lockdep, ..."),
    "source": _F(_Str(), help="the kernel's printk format (file function)"),
    "header": _F(_Regex(), required=True, help="regex searched in each line; named groups usable in title"),
    "keyword": _F(_Str(), help="a literal every header line contains (found automatically)"),
    "title": _F(_Str(), required=True, help="str.format template; {frame} is the guilty frame"),
    "frames": _F(_List(_FRAME_SOURCE, expected="a list of frame sources"), default=[],
                 help="where the guilty frame comes from, in order"),
    "skip": _F(_List(_Regex()), default=[], help="regexes of frames this format skips"),
    "extractor": _F(_Str(choices=("stall", "hang")), default="", help="stall or hang"),
    "end": _F(_Regex(), help="regex: the report ends at this line"),
    "end_after_trace": _F(datafiles.Bool(), default=False, help="the report ends after its first call trace"),
    "detail": _F(datafiles.OneOf((_Regex(), _List(_Regex())), expected="a regex or a list of regexes"), default=[],
                 help="regexes searched in the following lines"),
    "part_of": _F(_List(_Str()), default=[], help="names of reports this header continues"),
    "attach_to_previous": _F(datafiles.Bool(), default=False, help="a panic caused by the report before it"),
    "corrupted": _F(datafiles.Scalar(), default="", help="a reason: this format means the log lost the real report"),
    "max_lines": _F(datafiles.Int(1), help="bound on the excerpt"),
}, hint="see the comment at the top of crash_patterns.yaml")
PATTERNS_SCHEMA = datafiles.Mapping({
    "max_lines": _F(datafiles.Int(1), default=200, help="default bound on an excerpt"),
    "patterns": _F(_List(PATTERN_SCHEMA, expected="a list of report formats"), required=True,
                   help="report formats, most specific first"),
    "skip_frames": _F(_List(_Regex()), default=[], help="regexes of generic frames"),
    "ignore": _F(_List(_Regex()), default=[], help="regexes of lines that are never a report header"),
    "frame_prefixes": _F(_List(_Str()), default=[], help="prefixes stripped from frame names"),
    "stall": _F(datafiles.Mapping({
        "interrupt_frames": _F(_Regex(), help="frames of interrupt entry"),
        "anchors": _F(_List(_Regex()), default=[], help="dispatcher frames"),
        "self_anchors": _F(datafiles.MapOf(datafiles.Scalar()), default={},
                           help="regex: name, dispatchers that name the report themselves"),
    }), default={}, help="extractor: stall"),
    "hang": _F(datafiles.Mapping({
        "anchors": _F(datafiles.MapOf(datafiles.Scalar()), default={}, help="frame: group name"),
        "skip": _F(_List(_Str(numbers_as_text=True)), default=[], help="words of frames to pass over"),
    }), default={}, help="extractor: hang"),
}, expected="a mapping with a 'patterns' list", hint="see the comment at the top of crash_patterns.yaml")


def _load_pattern(doc: datafiles.Document, i: int, entry: dict, default_max: int) -> Pattern:
    """One checked entry; what the schema cannot say (title fields, keyword) is checked here."""
    at = ("patterns", i)
    header: re.Pattern[str] = entry["header"]
    detail = entry["detail"]
    if isinstance(detail, re.Pattern):
        detail = (detail,) if detail.pattern else ()  # `detail: ""` is no detail
    detail = tuple(detail)
    frames = tuple(AfterMarker(x["after"]) if isinstance(x, dict) else x for x in entry["frames"])
    known = set(header.groupindex) | {g for d in detail for g in d.groupindex} | {"frame", "text"}
    used = set(_FIELD.findall(entry["title"]))
    if unknown := used - known:
        raise doc.error((*at, "title"), f"title uses {sorted(unknown)} which no regex group defines",
                        hint=f"available: {sorted(known)}")
    if "frame" in used and not frames:
        raise doc.error((*at, "title"), "title uses {frame} but the pattern has no `frames`",
                        hint="add e.g. `frames: [pc, trace]`")
    keyword = entry.get("keyword") or _literal_keyword(header.pattern)
    if len(keyword) < 3:
        raise doc.error((*at, "header"), "cannot find a literal keyword of at least 3 characters in the header regex",
                        hint="add `keyword: TEXT`, a literal that every header line contains")
    end = entry.get("end")
    corrupted = entry["corrupted"]
    return Pattern(
        name=entry["name"], kind=entry["kind"], header=header, title=entry["title"],
        keyword=keyword.encode(), frames=frames, skip=tuple(entry["skip"]), extractor=entry["extractor"],
        end=end if end is not None and end.pattern else None,  # `end: ""` is no end
        end_after_trace=entry["end_after_trace"], detail=detail, part_of=tuple(entry["part_of"]),
        attach_to_previous=entry["attach_to_previous"],
        corrupted="report format marks a damaged log" if corrupted is True else str(corrupted or ""),
        max_lines=entry.get("max_lines", default_max),
    )


def load_patterns(path: Path | str = PATTERNS_FILE) -> PatternTable:
    """Read and check a pattern table (the default one, or a user's own)."""
    doc = datafiles.load(Path(path), PATTERNS_SCHEMA, what="crash patterns", wording=datafiles.KeyNamedInText())
    data = doc.data
    patterns: list[Pattern] = []
    for i, entry in enumerate(data["patterns"]):
        p = _load_pattern(doc, i, entry, data["max_lines"])
        if any(q.name == p.name for q in patterns):
            raise doc.error(("patterns", i, "name"), f"pattern {p.name!r}: duplicate name", hint="names are unique ids")
        patterns.append(p)
    names = {p.name for p in patterns}
    for i, p in enumerate(patterns):
        if bad := set(p.part_of) - names:
            raise doc.error(("patterns", i, "part_of"), f"pattern {p.name!r}: part_of names unknown patterns {sorted(bad)}",
                            hint=f"known: {', '.join(sorted(names))}")
    stall, hang = data["stall"], data["hang"]
    return PatternTable(
        patterns=tuple(patterns), skip_frames=tuple(data["skip_frames"]),
        frame_prefixes=tuple(data["frame_prefixes"]),
        interrupt_frames=irq if (irq := stall.get("interrupt_frames")) is not None and irq.pattern else None,
        stall_anchors=tuple(stall.get("anchors", ())),
        stall_self_anchors=_self_anchors(doc, stall.get("self_anchors", {})),
        ignore=tuple(data["ignore"]),
        hang_anchors={str(k): str(v or "") for k, v in hang.get("anchors", {}).items()},
        hang_skip=tuple(hang.get("skip", ())),
        keywords=(kw := _minimal_keywords(p.keyword for p in patterns)),
        finder=ahocorasick_rs.BytesAhoCorasick(list(kw)),
    )


def _self_anchors(doc: datafiles.Document, entries: dict) -> tuple[tuple[re.Pattern[str], str], ...]:
    out = []
    for k, v in entries.items():
        try:
            out.append((re.compile(str(k)), str(v)))
        except re.error as exc:
            raise doc.error(("stall", "self_anchors", k), f"bad regular expression {k!r}: {exc}",
                            hint="a Python regex searched in the frame name") from None
    return tuple(out)


def _minimal_keywords(words: Iterable[bytes]) -> tuple[bytes, ...]:
    """Keywords to search: one that contains another ("BUG: KASAN: " has "BUG: ")
    is found by that one's search, so only the shortest are searched."""
    unique = list(dict.fromkeys(words))
    return tuple(w for w in unique if not any(o != w and o in w for o in unique))


@lru_cache(maxsize=1)
def default_patterns() -> PatternTable:
    return load_patterns(PATTERNS_FILE)


# --------------------------------------------------------------------------- lines

def clean_line(raw: str | bytes) -> str:
    """One console line as text: decoded, CR and control characters dropped, bounded."""
    if isinstance(raw, bytes):
        raw = raw[:MAX_LINE_CHARS * 4].decode("utf-8", errors="replace")
    return _CONTROL.sub("", raw[:MAX_LINE_CHARS].rstrip("\r\n"))


def strip_prefix(line: str) -> str:
    return _PREFIX.sub("", line, count=1)


def sanitize_title(title: str) -> str:
    """syzkaller's title normalisation: nothing that changes from run to run."""
    for rx, repl in _TITLE_REPLACEMENTS:
        while True:  # overlapping matches ("0,1,2") need several passes
            new = rx.sub(repl, title)
            if new == title:
                break
            title = new
    title = re.sub(r"\s+", " ", title.replace("\t", " "))
    return "".join(ch for ch in title if " " <= ch < "\x7f")[:TITLE_MAX].strip()


# --------------------------------------------------------------------------- one report

class _Open:
    """A report being collected."""

    def __init__(self, pattern: Pattern, header: re.Match[str], lineno: int, raw: str, text: str) -> None:
        self.pattern = pattern
        self.groups = {k: v for k, v in header.groupdict().items() if v is not None}
        self.groups["text"] = text[header.start():]
        self.line = lineno
        self.lines = [raw]
        self.pc: str | None = None
        self.header_func = self.groups.get("func")
        self.traces: list[list[str]] = []  # call traces in order (one unless the pattern reads on)
        self.after: dict[int, list[str]] = {}  # index in pattern.frames -> frames
        self.armed: dict[int, int] = {}  # index -> 1 armed (waiting), 2 collecting
        self.trace_state = 0  # 0: before "Call trace:", 1: in it, 2: after it
        self.in_regs = False
        self.empty_trace = False
        self.interrupted = False
        self.truncated = False  # the input ended while the report was open
        self.ended = False  # reached its end marker / end of trace
        self.attached: list[str] = []  # consequence reports folded in (panic after a WARNING)
        self._watch(text, header_line=True)

    @property
    def trace(self) -> list[str]:
        """The first call trace."""
        return self.traces[0] if self.traces else []

    def _watch(self, text: str, header_line: bool = False) -> None:
        for i, src in enumerate(self.pattern.frames):
            if not isinstance(src, AfterMarker):
                continue
            state = self.armed.get(i, 0)
            if state == 0:
                if src.marker.search(text):
                    self.armed[i] = 1
                    m = _ANY_FUNC.search(text[src.marker.search(text).end():])  # type: ignore[union-attr]
                    if m:
                        self.after.setdefault(i, []).append(m.group("func"))
                        self.armed[i] = 2
                continue
            if state == 3 or header_line:
                continue
            m = _ANY_FUNC.search(text)
            if m:
                self.after.setdefault(i, []).append(m.group("func"))
                self.armed[i] = 2
            elif state == 2 and not _INLINE.match(text):
                # the block of frames after the marker ended (a symbolized inline
                # frame has no offset: syzkaller does not count it, nor does it end the block)
                self.armed[i] = 3

    def add(self, raw: str, text: str) -> bool:
        """Take one line; True when the report is complete."""
        self.lines.append(raw)
        p = self.pattern
        for d in p.detail:
            if not all(k in self.groups for k in d.groupindex) and (m := d.search(text)):
                self.groups.update({k: v for k, v in m.groupdict().items() if v is not None and k not in self.groups})
        if self.pc is None and self.trace_state == 0 and (m := _PC.match(text)):
            self.pc = m.group("func")
        self._watch(text)
        if self.trace_state != 1 and _CALL_TRACE.match(text) and (self.trace_state == 0 or not p.end_after_trace):
            self.trace_state = 1
            self.traces.append([])
        elif self.trace_state == 0 and _REGS.match(text):
            self.in_regs = True
        elif self.trace_state == 0 and self.in_regs and p.end_after_trace and not _PC.match(text):
            self.lines.pop()  # registers not followed by a kernel stack: user mode
            self.ended = True
            return True
        elif self.trace_state == 1:
            m = _FRAME.match(text)
            if m:
                if not m.group("q"):  # "? func": not a reliable frame
                    self.traces[-1].append(m.group("func"))
            elif (m := _PC.match(text)) is not None:
                # x86 prints the interrupted or faulting RIP inside the trace (after
                # the interrupt/exception entry frame): the code below it starts there
                self.traces[-1].append(m.group("func"))
            elif not (_TRACE_MARKER.match(text) or _INLINE.match(text) or _X86_REGS.match(text)):
                # registers of that pt_regs, <IRQ>/<TASK> markers and symbolized inline
                # frames (syzkaller ignores them) do not end the trace; anything else does
                self.trace_state = 2
                self.empty_trace = self.empty_trace or not self.traces[-1]
                if p.end_after_trace:
                    self.lines.pop()  # this line is not part of the report
                    self.ended = True
                    return True
        if p.end is not None and p.end.search(text):
            self.ended = True
            return True
        return len(self.lines) >= p.max_lines


def _candidates(report: _Open, table: PatternTable) -> list[str]:
    """Frames in the order the pattern's sources give them, generic ones and clone suffixes dropped."""
    p = report.pattern
    raw: list[str] = []
    # a title without a function still has frames for the fingerprint
    for i, src in enumerate(p.frames or ("pc", "trace")):
        if src == "pc" and report.pc:
            raw.append(report.pc)
        elif src == "header" and report.header_func:
            raw.append(report.header_func.split(".")[0])
        elif src == "trace":
            trace = report.trace
            if p.extractor == "stall" and table.interrupt_frames is not None:
                # stalls and lockups are reported from the timer interrupt: the interrupted
                # code is below the last interrupt entry frame (syzkaller: apic_timer_interrupt)
                last = max((j for j, f in enumerate(trace) if table.interrupt_frames.search(f)), default=-1)
                if last >= 0:
                    trace = trace[last + 1:]
                    raw = []  # the pc line was the interrupt handler's
            raw.extend(trace)
        elif src == "interrupted" and table.interrupt_frames is not None:
            # RCU stalls: the stalled code is below the interrupt entry (x86
            # apic_timer_interrupt then RIP, arm64 el1h_64_irq) of the first trace
            # that has one; when one is found, the sources after this one are not read
            # (arm64 6.x prints the stalled CPU's registers instead: pc and trace)
            hit = next((t for t in report.traces if any(table.interrupt_frames.search(f) for f in t)), None)
            if hit is not None:
                last = max(j for j, f in enumerate(hit) if table.interrupt_frames.search(f))
                raw.extend(hit[last + 1:])
                break
        elif isinstance(src, AfterMarker):
            raw.extend(report.after.get(i, []))
    out: list[str] = []
    for f in raw:
        if table.is_generic(f, p.skip):
            continue
        f = table.strip_prefix(f)
        if not out or out[-1] != f:  # the pc function is also the first trace frame
            out.append(f)
    return out


def _guilty(p: Pattern, frames: list[str], table: PatternTable) -> tuple[int, str]:
    """Index of the frame that names the report (-1 if none) and the name the title uses."""
    if not frames:
        return -1, ""
    if p.extractor == "stall":
        # a loop is caught at a random point: name it by the frame above the first
        # dispatcher (syscall, workqueue, timer ...) instead of the top frame; some
        # dispatchers name the report themselves (smp_call_function_many_cond ->
        # smp_call_function: its callers vary)
        for j, f in enumerate(frames):
            if any(a.search(f) for a in table.stall_anchors):
                for rx, name in table.stall_self_anchors:
                    if rx.search(f):
                        return j, name
                return max(j - 1, 0), frames[max(j - 1, 0)]
        return -1, ""
    if p.extractor == "hang":
        for j, f in enumerate(frames):
            for anchor, name in table.hang_anchors.items():
                if anchor in f:
                    return j, name or f
        for j, f in enumerate(frames):
            if not any(s in f for s in table.hang_skip):
                return j, f
        return -1, ""
    return 0, frames[0]


def _finish(report: _Open, table: PatternTable) -> Crash:
    p = report.pattern
    frames = _candidates(report, table)
    guilty, name = _guilty(p, frames, table)
    values = dict(report.groups)
    for k in ("func",):
        if k in values:
            values[k] = values[k].split(".")[0]
    template = p.title
    reason = p.corrupted
    if "{frame}" in template:
        if guilty >= 0:
            values["frame"] = name
        else:
            # syzkaller's title for a report whose frame cannot be found: "... in corrupted"
            values["frame"] = "corrupted"
            if not reason:
                reason = ("call trace without frames" if report.empty_trace
                          else "no stack frame to name the function" if report.trace or report.pc
                          else "no call trace in the report")
    for k in _FIELD.findall(template):
        if k not in values:
            template = re.sub(r"\s?\{" + k + r"\}", "", template)
            reason = reason or f"report lacks its {k} line"
    title = sanitize_title(template.format(**values))
    if not reason and _TIMESTAMP.search(template.format(**values)):
        reason = "another message was printed into the title line"
    wants_trace = "trace" in p.frames and not report.ended
    if not reason and report.interrupted and not report.trace and wants_trace:
        reason = "interrupted by another report before its call trace"
    if not reason and report.truncated and not report.trace and wants_trace:
        reason = "the log ends before its call trace"
    top = frames[guilty:guilty + TOP_FRAMES] if guilty >= 0 else frames[:TOP_FRAMES]
    digest = hashlib.sha256("\n".join((title, *top)).encode()).hexdigest()[:16]
    excerpt = "\n".join(report.lines + report.attached)
    return Crash(
        kind=p.kind, pattern=p.name, title=title, fingerprint=digest,
        line=report.line, end_line=report.line + len(report.lines) + len(report.attached) - 1,
        excerpt=excerpt, frames=tuple(frames), fields=dict(report.groups),
        corrupted=bool(reason), corrupted_reason=reason,
    )


# --------------------------------------------------------------------------- the scanner

def _match_header(table: PatternTable, text: str) -> tuple[Pattern, re.Match[str]] | None:
    """The first pattern whose keyword and header are in the line."""
    for p in table.patterns:
        if p.keyword_text in text and (m := p.header.search(text)):
            if any(rx.search(text) for rx in table.ignore):
                return None
            return p, m
    return None


class _Scanner:
    """State that survives chunk boundaries: the open report, the last finished one
    (held back: the panic it causes may follow), line numbers."""

    def __init__(self, table: PatternTable) -> None:
        self.table = table
        self.current: _Open | None = None
        self.host: _Open | None = None  # when `current` is a panic folded into this report
        self.pending: tuple[_Open, Crash] | None = None
        self.lineno = 0  # lines consumed so far

    def _flush(self, out: list[Crash]) -> None:
        if self.pending is not None:
            out.append(self.pending[1])
            self.pending = None

    def _close(self, out: list[Crash]) -> None:
        """The open report is complete: it becomes the pending one."""
        cur, self.current = self.current, None
        if cur is None:
            return
        if self.host is not None:
            host, self.host = self.host, None
            host.attached.extend(cur.lines)
            if host.pc is None and not host.trace and "trace" in host.pattern.frames:
                # before 4.15 (x86) a WARNING with panic_on_warn printed no stack of its own: the
                # panic's stack has it, below invalid_op, from the RIP line on (syzkaller's
                # warningStackFmt reads the whole report); the panic's helpers are skipped
                host.pc, host.traces = cur.pc, cur.traces
            host.groups.update({f"{cur.pattern.name}.{k}": v for k, v in cur.groups.items() if k != "text"})
            self.pending = (host, _finish(host, self.table))
            return
        self._flush(out)
        self.pending = (cur, _finish(cur, self.table))

    def _header(self, p: Pattern, m: re.Match[str], raw: str, text: str, out: list[Crash]) -> None:
        cur = self.current
        if cur is not None and self.host is None and cur.pattern.name in p.part_of:
            # arm64 prints "Unable to handle ..." then "Internal error: Oops ..." for one fault
            cur.groups.update({f"{p.name}.{k}": v for k, v in m.groupdict().items() if v})
            if cur.add(raw, text):
                self._close(out)
            return
        if p.attach_to_previous and self.host is None:
            if cur is not None:
                self._close(out)
            if self.pending is not None and self.lineno - self.pending[1].end_line <= ATTACH_WINDOW:
                # the panic that a WARNING, oops or hung task causes belongs to that report
                self.host = self.pending[0]
                self.pending = None
                self.current = _Open(p, m, self.lineno, raw, text)
                return
        if cur is not None:
            cur.interrupted = cur.trace_state == 0
            self._close(out)
        self._flush(out)
        self.current = _Open(p, m, self.lineno, raw, text)

    def line(self, raw_bytes: bytes, out: list[Crash]) -> None:
        """Process one console line."""
        self.lineno += 1
        raw = clean_line(raw_bytes)
        text = strip_prefix(raw)
        cur = self.current
        if cur is not None and cur.pattern.end is not None and cur.pattern.end.search(text):
            # "---[ end Kernel panic - not syncing: ... ]---" ends a report, it does not start one
            cur.add(raw, text)
            self._close(out)
            return
        found = _match_header(self.table, text) if self.table.finder.find_matches_as_indexes(raw_bytes) else None
        if found is not None and cur is not None and self.host is None:
            # a line that continues the open report wins over a more generic match
            # ("Internal error: Oops - BUG: ..." after "kernel BUG at ...")
            for p in self.table.patterns:
                if cur.pattern.name in p.part_of and p.keyword_text in text and (m := p.header.search(text)):
                    found = (p, m)
                    break
        if found is not None:
            self._header(found[0], found[1], raw, text, out)
        elif self.current is not None and self.current.add(raw, text):
            self._close(out)

    def finish(self, out: list[Crash]) -> None:
        if self.current is not None:
            self.current.truncated = True
        self._close(out)
        self._flush(out)

    def chunk(self, buf: bytes, out: list[Crash], n: int | None = None) -> None:
        """The whole lines in buf[:n]: jump to the lines that contain a header
        keyword unless a report is open."""
        pos, n = 0, len(buf) if n is None else n
        hits = self.table.keyword_hits(buf if n == len(buf) else memoryview(buf)[:n])
        h = 0
        while pos < n:
            if self.current is None:
                while h < len(hits) and hits[h] < pos:
                    h += 1
                if h == len(hits):
                    self.lineno += buf.count(b"\n", pos, n) + (0 if buf[n - 1:n] == b"\n" else 1)
                    return
                start = buf.rfind(b"\n", pos, hits[h]) + 1 or pos
                self.lineno += buf.count(b"\n", pos, start)
                pos = start
            end = buf.find(b"\n", pos, n)
            end = n if end < 0 else end
            self.line(buf[pos:end], out)
            pos = end + 1


def _chunks(log: str | bytes | Iterable[str | bytes] | BinaryIO) -> Iterator[bytes]:
    """The input as chunks of whole lines (a line longer than a chunk is cut)."""
    if isinstance(log, str):
        log = log.encode("utf-8", errors="replace")
    if isinstance(log, (bytes, bytearray, memoryview)):
        data = bytes(log)
        for i in range(0, len(data), CHUNK_BYTES):
            yield data[i:i + CHUNK_BYTES]
        return
    if hasattr(log, "read"):
        reader = log  # a binary file
        while block := reader.read(CHUNK_BYTES):  # type: ignore[union-attr]
            yield block if isinstance(block, bytes) else block.encode("utf-8", errors="replace")
        return
    for x in log:  # type: ignore[union-attr]
        b = x.encode("utf-8", errors="replace") if isinstance(x, str) else bytes(x)
        yield b if b.endswith(b"\n") else b + b"\n"


def iter_crashes(log: str | bytes | Iterable[str | bytes] | BinaryIO, table: PatternTable | None = None) -> Iterator[Crash]:
    """Yield reports in console order.  A finished report is held back until the
    next report starts (or the input ends), because a panic that follows it is
    folded into it."""
    scanner = _Scanner(table or default_patterns())
    carry = b""
    out: list[Crash] = []
    for block in _chunks(log):
        buf = carry + block
        cut = buf.rfind(b"\n")
        if cut < 0:
            if len(buf) < CHUNK_BYTES:
                carry = buf
                continue
            cut = len(buf) - 1  # no newline for a whole chunk: cut the line here
            buf = buf[:cut] + b"\n" + buf[cut:]
        carry = buf[cut + 1:]
        scanner.chunk(buf, out, cut + 1)  # no copy of the chunk: bounded by n
        yield from out
        out.clear()
    if carry:
        scanner.chunk(carry, out)
    scanner.finish(out)
    yield from out


def find_crashes(log: str | bytes | Iterable[str | bytes] | BinaryIO, table: PatternTable | None = None) -> list[Crash]:
    return list(iter_crashes(log, table))


def scan_file(path: Path | str, table: PatternTable | None = None) -> list[Crash]:
    """Reports of a console log file, read in chunks (constant memory)."""
    with open(path, "rb") as f:
        return find_crashes(f, table)
