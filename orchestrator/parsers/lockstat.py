"""/proc/lock_stat (version 0.4) -> per lock class records, read and write apart.

Format (kernel/locking/lockdep_proc.c, seq_stats):
- a class whose write side was acquired prints `%40s:` when nothing took it
  for reading (plain spinlocks, mutexes), or `%38s-W:` then `%38s-R:` when
  both sides were used (rwlocks such as &(kvm)->mmu_lock on arm64). A class
  only read-acquired prints just `-R:`. Classes never acquired since the
  last `echo 0 > /proc/lock_stat` print nothing.
- 12 columns: con-bounces contentions waittime-min/max/total/avg acq-bounces
  acquisitions holdtime-min/max/total/avg; times in microseconds, always
  printed with two decimals.
- if the class was contended: a `-` line, up to 4 contention points (where a
  waiter waited), a `-` line, up to 4 contending points (where the holder
  took the lock), then a `.` line. Each point is
  `NAME  COUNT  [<ADDR>] symbol+0xoff/0xsize`. The kernel keeps the points
  per class, not per side: a read waiter and a write waiter share them.
- names longer than 37 characters are cut by the kernel; `#N` (name version)
  and `/N` (subclass) suffixes are part of the printed name.

Parsing is line by line (`iter_classes` takes any iterable of lines), so a
large file is never held twice, and a truncated file yields every complete
record: a line with fewer than 12 well-formed columns is skipped, not guessed.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

_TIME = r"\d+\.\d{2}"  # snprint_time: "%lld.%02d"
_INT = r"\d+"
_COLUMNS = [_INT, _INT, _TIME, _TIME, _TIME, _TIME, _INT, _INT, _TIME, _TIME, _TIME, _TIME]
_STATS = re.compile(
    r"^\s*(?P<name>\S.*?)(?:-(?P<side>[RW]))?:"
    + "".join(rf"\s+({c})" if i else rf"\s*({c})" for i, c in enumerate(_COLUMNS))
    + r"\s*$"
)
_POINT = re.compile(
    r"^\s*(?P<name>\S.*?)\s+(?P<count>\d+)\s+\[<(?P<addr>[0-9a-fA-Fx]+)>\]\s+"
    r"(?P<symbol>\S+)(?:\s+\[(?P<module>[^\]]+)\])?\s*$"
)
_DASHES = re.compile(r"^\s*-{4,}\s*$")
_DOTS = re.compile(r"^\s*\.{4,}\s*$")
_VERSION = re.compile(r"^lock_stat version (\S+)")
_MAX_LINE = 1024  # the widest real line (a point with a long symbol) is ~300
_SYMBOL_OFFSET = re.compile(r"\+0x[0-9a-fA-F]+(?:/0x[0-9a-fA-F]+)?$")


@dataclass(frozen=True)
class LockSide:
    """One side (write or read) of a lock class; times in microseconds."""
    con_bounces: int
    contentions: int
    waittime_min_us: float
    waittime_max_us: float
    waittime_total_us: float
    waittime_avg_us: float
    acq_bounces: int
    acquisitions: int
    holdtime_min_us: float
    holdtime_max_us: float
    holdtime_total_us: float
    holdtime_avg_us: float


METRIC_FIELDS = tuple(LockSide.__dataclass_fields__)
_ZERO_SIDE = LockSide(0, 0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class CallSite:
    """A contention or contending point."""
    count: int
    address: str          # as printed: hashed unless booted with no_hash_pointers
    symbol: str           # "kvm_mmu_notifier_clear_young+0x5c/0x1a0"
    module: str | None = None

    @property
    def function(self) -> str:
        return function_name(self.symbol)


@dataclass
class LockClass:
    name: str                       # as printed, e.g. "&(kvm)->mmu_lock"
    write: LockSide | None = None   # also the only side of a plain (unsuffixed) lock
    read: LockSide | None = None
    split: bool = False             # printed with -W/-R suffixes
    contention_points: list[CallSite] = field(default_factory=list)
    contending_points: list[CallSite] = field(default_factory=list)
    line: int = 0                   # 1-based line of the first stats line

    def side(self, which: str) -> LockSide:
        """'write' or 'read'; an absent side is all zeros (not acquired in the window)."""
        if which not in ("write", "read"):
            raise ValueError(f"side must be 'write' or 'read', not {which!r}")
        return (self.write if which == "write" else self.read) or _ZERO_SIDE


@dataclass
class LockStat:
    version: str | None
    lockdep_disabled: bool   # "*WARNING* lock debugging disabled!!": counts stopped at a lockdep splat
    classes: list[LockClass]


def function_name(symbol: str) -> str:
    """`func+0x1c/0x40` -> `func`; a raw address stays as it is."""
    return _SYMBOL_OFFSET.sub("", symbol)


def _side(groups: tuple[str, ...]) -> LockSide:
    vals = [float(g) if "." in g else int(g) for g in groups]
    return LockSide(*vals)  # type: ignore[arg-type]


def iter_classes(lines: Iterable[str], header: dict | None = None) -> Iterator[LockClass]:
    """Yield each class as soon as it is complete. `header`, if given, receives
    'version' and 'lockdep_disabled' as they are seen."""
    current: LockClass | None = None
    section = 0  # 0: stats lines, 1: contention points, 2: contending points
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if len(line) > _MAX_LINE:
            continue  # not lock_stat output (garbage): keep regex time bounded
        if header is not None:
            if m := _VERSION.match(line):
                header["version"] = m.group(1)
                continue
            if line.startswith("*WARNING* lock debugging disabled"):
                header["lockdep_disabled"] = True
                continue
        if m := _STATS.match(line):
            name, side = m.group("name"), m.group("side")
            stats = _side(m.groups()[2:])
            # the -R line of a class directly follows its -W line
            if (side == "R" and current is not None and current.name == name and current.split
                    and current.read is None and section == 0):
                current.read = stats
                continue
            if current is not None:
                yield current
            current = LockClass(name=name, split=side is not None, line=lineno)
            if side == "R":
                current.read = stats
            else:
                current.write = stats
            section = 0
            continue
        if current is None:
            continue  # header lines before the first class
        if _DASHES.match(line):
            section = min(section + 1, 2)
            continue
        if _DOTS.match(line):
            yield current
            current, section = None, 0
            continue
        if section and (m := _POINT.match(line)) and m.group("name") == current.name:
            site = CallSite(int(m.group("count")), m.group("addr"), m.group("symbol"), m.group("module"))
            (current.contention_points if section == 1 else current.contending_points).append(site)
    if current is not None:
        yield current


def parse_lock_stat(text: str | Iterable[str]) -> LockStat:
    lines = text.splitlines() if isinstance(text, str) else text
    header: dict = {"version": None, "lockdep_disabled": False}
    classes = list(iter_classes(lines, header))
    return LockStat(header["version"], header["lockdep_disabled"], classes)


def find_class(records: LockStat | Iterable[LockClass], name: str) -> LockClass | None:
    """The class printed as `name`; a name longer than the kernel prints
    (37 characters) matches its cut form."""
    classes = records.classes if isinstance(records, LockStat) else records
    for cls in classes:
        if cls.name == name or (len(cls.name) >= 37 and name.startswith(cls.name)):
            return cls
    return None


def short_name(name: str) -> str:
    """Metric prefix for a class: `&(kvm)->mmu_lock` -> `mmu_lock`,
    `&mm->mmap_lock` -> `mmap_lock`, `(console_sem).lock` -> `console_sem.lock`."""
    base = name.lstrip("&")
    if "->" in base:
        base = base.rsplit("->", 1)[1]
    base = re.sub(r"[()]", "", base)
    return re.sub(r"[^A-Za-z0-9_.#/]+", "_", base).strip("_") or "lock"


def points_by_function(sites: Iterable[CallSite]) -> dict[str, int]:
    """Counts per function, offsets dropped (two call sites in one function add up)."""
    out: dict[str, int] = {}
    for s in sites:
        out[s.function] = out.get(s.function, 0) + s.count
    return out


def summary(records: LockStat | Iterable[LockClass], classes: Mapping[str, str] | Iterable[str]) -> dict[str, float]:
    """Flat metrics for the named classes, comparable across runs:

      ALIAS.present                      1 if the class was printed, else 0
      ALIAS.write.FIELD / ALIAS.read.FIELD   every LockSide field (0 when absent)
      ALIAS.contention_point.FUNC        waits at FUNC (either side)
      ALIAS.contending_point.FUNC        holder took the lock at FUNC

    `classes` maps class name -> alias, or lists names (alias = short_name).
    A class absent from lock_stat was not acquired since the clear: all zeros.
    """
    wanted = dict(classes) if isinstance(classes, Mapping) else {n: short_name(n) for n in classes}
    all_classes = records.classes if isinstance(records, LockStat) else list(records)
    out: dict[str, float] = {}
    for name, alias in wanted.items():
        cls = find_class(all_classes, name)
        out[f"{alias}.present"] = 0 if cls is None else 1
        for which in ("write", "read"):
            side = cls.side(which) if cls else _ZERO_SIDE
            for f in METRIC_FIELDS:
                out[f"{alias}.{which}.{f}"] = getattr(side, f)
        if cls is None:
            continue
        for func, n in points_by_function(cls.contention_points).items():
            out[f"{alias}.contention_point.{func}"] = n
        for func, n in points_by_function(cls.contending_points).items():
            out[f"{alias}.contending_point.{func}"] = n
    return out
