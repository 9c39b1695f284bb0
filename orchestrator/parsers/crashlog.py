"""Console log -> crash reports, after syzkaller's pkg/report.

The formats live in crash_patterns.yaml (data: a new format is a new entry).
`find_crashes` reads the log once, line by line: a header line opens a report,
which collects lines until its end marker, the end of its first call trace
(formats without an end marker), a new report header, or a bounded number of
lines. Each report gets:

- a title naming the function, syzkaller style ("WARNING in kvm_age_gfn"),
- a fingerprint: sha256 of the title and the first 3 call trace frames
  (function names, no offsets), so the same bug in two runs compares equal
  while kernels with different code layout still match,
- the excerpt and the 1-based console line of its header.

Input is whatever came out of the serial port: printk timestamps, other
output interleaved, CRs, binary noise. Bytes are decoded with replacement,
control characters dropped, and lines cut at MAX_LINE_CHARS, so time stays
linear in the input size and nothing in the input can raise.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from ..errors import UserError

PATTERNS_FILE = Path(__file__).with_name("crash_patterns.yaml")
MAX_LINE_CHARS = 1024
TOP_FRAMES = 3

# printk prefixes: "<4>" (dmesg -r), "[   12.345678]", "[    T123]" / "[  C1]" (PRINTK_CALLER)
_PREFIX = re.compile(r"^(?:<\d{1,3}>)?(?:\[\s*\d+\.\d+\])?(?:\[\s*[TC]\d+\])?\s?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# arm64 dump_backtrace_entry: " %pSb" -> " func+0x1c/0x40" or " func+0x1c/0x40 [mod buildid]";
# lockdep's stack_trace_print indents with spaces the same way.
_FRAME = re.compile(r"^\s*(?P<func>[A-Za-z_.$][\w.$]*)\+0x[0-9a-fA-F]+/0x[0-9a-fA-F]+(?:\s+\[(?P<module>[^\]\s]+)[^\]]*\])?\s*$")
_CALL_TRACE = re.compile(r"^\s*Call trace:\s*$")
# register dump of show_regs: "x29: ffff... x28: ..."; a report without a kernel
# stack (soft lockup in user mode) ends with it
_REGS = re.compile(r"^\s*x\d+\s*: [0-9a-f]{16}")
# pr_fmt prefixes: "watchdog: BUG: soft lockup", "rcu: INFO: rcu_sched ..."
_SUBSYSTEM = re.compile(r"^[a-z][\w-]*(?: \[\d+\])?: ")
_FIELD = re.compile(r"{(\w+)}")
# gcc clones: "invoke_syscall.constprop.0" is invoke_syscall in another build
_CLONE_SUFFIX = re.compile(r"(?:\.(?:constprop|isra|part|cold|llvm)(?:\.\d+)?)+$")


@dataclass(frozen=True)
class Pattern:
    name: str
    kind: str
    header: re.Pattern[str]
    title: str
    end: re.Pattern[str] | None = None
    end_after_trace: bool = False
    detail: re.Pattern[str] | None = None
    part_of: tuple[str, ...] = ()
    max_lines: int = 200


@dataclass(frozen=True)
class PatternTable:
    patterns: tuple[Pattern, ...]
    skip_frames: tuple[re.Pattern[str], ...]
    any_header: re.Pattern[str]  # all headers in one alternation: one search per line

    def is_generic(self, func: str) -> bool:
        return any(p.search(func) for p in self.skip_frames)


@dataclass(frozen=True)
class Crash:
    kind: str                  # warning, bug, oops, panic, lockdep, rcu_stall, lockup, hung_task, kasan, ubsan
    pattern: str               # entry name in crash_patterns.yaml
    title: str
    fingerprint: str           # 16 hex digits
    line: int                  # 1-based console line of the header
    end_line: int              # last line of the excerpt
    excerpt: str               # console lines as printed (timestamps kept)
    frames: tuple[str, ...] = field(default=())  # first call trace, function names, generic frames dropped
    fields: dict[str, str] = field(default_factory=dict, compare=False)  # named groups of header/detail


def _compile(rx: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(rx)
    except re.error as exc:
        raise UserError(f"{where}: bad regular expression {rx!r}: {exc}", hint="fix the regex in the crash patterns file") from exc


def load_patterns(path: Path | str = PATTERNS_FILE) -> PatternTable:
    """Read and check a pattern table (the default one, or a user's own)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read crash patterns {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("patterns"), list):
        raise UserError(f"{path}: expected a mapping with a 'patterns' list", hint="see the comment at the top of crash_patterns.yaml")
    default_max = int(data.get("max_lines", 200))
    patterns: list[Pattern] = []
    names: set[str] = set()
    for i, entry in enumerate(data["patterns"]):
        where = f"{path}: patterns[{i}]"
        missing = [k for k in ("name", "kind", "header", "title") if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise UserError(f"{where}: missing {', '.join(missing)}", hint="each pattern needs name, kind, header and title")
        where = f"{path}: pattern {entry['name']!r}"
        if entry["name"] in names:
            raise UserError(f"{where}: duplicate name")
        header = _compile(entry["header"], where)
        detail = _compile(entry["detail"], where) if entry.get("detail") else None
        known = set(header.groupindex) | set(detail.groupindex if detail else ()) | {"frame"}
        unknown = set(_FIELD.findall(entry["title"])) - known
        if unknown:
            raise UserError(f"{where}: title uses {sorted(unknown)} which no regex group defines",
                            hint=f"available: {sorted(known)}")
        part_of = tuple(entry.get("part_of") or ())
        patterns.append(Pattern(
            name=entry["name"], kind=entry["kind"], header=header, title=entry["title"],
            end=_compile(entry["end"], where) if entry.get("end") else None,
            end_after_trace=bool(entry.get("end_after_trace", False)),
            detail=detail, part_of=part_of,
            max_lines=int(entry.get("max_lines", default_max)),
        ))
        names.add(entry["name"])
    for p in patterns:
        if bad := set(p.part_of) - names:
            raise UserError(f"{path}: pattern {p.name!r}: part_of names unknown patterns {sorted(bad)}")
    skip = tuple(_compile(rx, f"{path}: skip_frames") for rx in data.get("skip_frames") or ())
    # named groups cannot repeat across alternatives: the combined regex drops them
    unnamed = [re.sub(r"\(\?P<\w+>", "(?:", p.header.pattern) for p in patterns]
    any_header = re.compile("|".join(f"(?:{rx})" for rx in unnamed))
    return PatternTable(tuple(patterns), skip, any_header)


@lru_cache(maxsize=1)
def default_patterns() -> PatternTable:
    return load_patterns(PATTERNS_FILE)


def clean_line(raw: str | bytes) -> str:
    """One console line as text: decoded, CR and control characters dropped, bounded."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    return _CONTROL.sub("", raw[:MAX_LINE_CHARS].rstrip("\r\n"))


def strip_prefix(line: str) -> str:
    return _PREFIX.sub("", line, count=1)


def _lines(log: str | bytes | Iterable[str | bytes]) -> Iterator[str]:
    if isinstance(log, bytes):
        log = log.decode("utf-8", errors="replace")
    if isinstance(log, str):
        # split on \n only: str.splitlines would also split on \x0c, \x1c, ... and shift line numbers
        pieces = log.split("\n")
        if pieces and pieces[-1] == "":
            pieces.pop()  # the newline that ends the last line
        yield from (clean_line(x) for x in pieces)
    else:
        yield from (clean_line(x) for x in log)


class _Open:
    """A report being collected."""

    def __init__(self, pattern: Pattern, header: re.Match[str], lineno: int, raw: str) -> None:
        self.pattern = pattern
        self.groups = {k: v for k, v in header.groupdict().items() if v is not None}
        self.line = lineno
        self.lines = [raw]
        self.frames: list[str] = []
        self.trace_state = 0  # 0: before "Call trace:", 1: in it, 2: after it
        self.in_regs = False

    def add(self, raw: str, text: str) -> bool:
        """Take one line; True when the report is complete."""
        self.lines.append(raw)
        p = self.pattern
        if p.detail is not None and not any(k in self.groups for k in p.detail.groupindex):
            if m := p.detail.search(text):
                self.groups.update({k: v for k, v in m.groupdict().items() if v is not None})
        if self.trace_state == 0 and _CALL_TRACE.match(text):
            self.trace_state = 1
        elif self.trace_state == 0 and _REGS.match(text):
            self.in_regs = True
        elif self.trace_state == 0 and self.in_regs and p.end_after_trace:
            self.lines.pop()  # registers not followed by a kernel stack: user mode
            return True
        elif self.trace_state == 1:
            if m := _FRAME.match(text):
                self.frames.append(_CLONE_SUFFIX.sub("", m.group("func")))
            else:
                self.trace_state = 2
                if p.end_after_trace:
                    self.lines.pop()  # this line is not part of the report
                    return True
        if p.end is not None and p.end.search(text):
            return True
        return len(self.lines) >= p.max_lines


def _finish(report: _Open, table: PatternTable) -> Crash:
    frames = tuple(f for f in report.frames if not table.is_generic(f))
    values = dict(report.groups)
    template = report.pattern.title
    if frames:
        values["frame"] = frames[0]
    else:
        template = template.replace(" in {frame}", "")  # "BUG: soft lockup" rather than "... in ?"
    for k in _FIELD.findall(template):
        values.setdefault(k, "?")
    title = template.format(**values)
    digest = hashlib.sha256("\n".join((title, *frames[:TOP_FRAMES])).encode()).hexdigest()[:16]
    return Crash(
        kind=report.pattern.kind, pattern=report.pattern.name, title=title, fingerprint=digest,
        line=report.line, end_line=report.line + len(report.lines) - 1,
        excerpt="\n".join(report.lines), frames=frames, fields=dict(report.groups),
    )


def _match_header(table: PatternTable, text: str) -> tuple[Pattern, re.Match[str]] | None:
    """The first pattern whose header starts the line, with or without a pr_fmt prefix."""
    for candidate in (text, _SUBSYSTEM.sub("", text, count=1)):
        if table.any_header.match(candidate):
            for p in table.patterns:
                if m := p.header.match(candidate):
                    return p, m
    return None


def iter_crashes(log: str | bytes | Iterable[str | bytes], table: PatternTable | None = None) -> Iterator[Crash]:
    """Yield reports in console order as each one completes."""
    table = table or default_patterns()
    current: _Open | None = None
    for lineno, raw in enumerate(_lines(log), 1):
        text = strip_prefix(raw)
        match = _match_header(table, text)
        if match is not None:
            p, m = match
            if current is not None and current.pattern.name in p.part_of:
                current.groups.update({f"{p.name}.{k}": v for k, v in m.groupdict().items() if v})
                if current.add(raw, text):
                    yield _finish(current, table)
                    current = None
                continue
            if current is not None:
                yield _finish(current, table)
            current = _Open(p, m, lineno, raw)
            continue
        if current is not None and current.add(raw, text):
            yield _finish(current, table)
            current = None
    if current is not None:
        yield _finish(current, table)


def find_crashes(log: str | bytes | Iterable[str | bytes], table: PatternTable | None = None) -> list[Crash]:
    return list(iter_crashes(log, table))
