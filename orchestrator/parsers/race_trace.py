"""Lost races of the shared stage-2 age walk in a race run's trace: the
`age_walker` and `walk_err` events (tracepoints/race.yaml) parsed, and the
flat race.* metrics the race report (reports/race.py) judges.  Pure: text in,
numbers out.

    race_metrics(trace_text, dmesg_text) -> {"race.<name>": value}
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestrator.parsers.crashlog import find_crashes

# A trace line: "  <task>-<pid> [cpu] flags ts: event: payload" (tracestats has the full story).
TRACE_EVENT = re.compile(r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
                         r"(?:[^\s\[]{4,5}\s+)?(?P<ts>\d+(?:\.\d+)?):\s+(?P<event>[\w.:-]+?):\s?(?P<payload>.*)$")
EAGAIN = -11
# Stage-2 descriptor bits (arch/arm64/include/asm/kvm_pgtable.h, 6.12).
PTE_VALID = 1 << 0
S2AP_R = 1 << 6
S2AP_W = 1 << 7
AF = 1 << 10
XN = 0b11 << 53  # BIT(54) in 6.12; later kernels use GENMASK(54, 53)
PERMS = S2AP_R | S2AP_W | XN
AGE_FUNCS = ("stage2_age_walker", "kvm_pgtable_stage2_test_clear_young")
WARN_FUNC = "kvm_pgtable_stage2_test_clear_young"

# Who changed the PTE between the walker's read and its cmpxchg, judged from
# what the PTE looks like right after (`now`) compared with what was read.
WINNERS = {
    "perms": "a fault handler changed its permissions (e.g. relax_perms on a write)",
    "ager": "another age walk cleared AF first",
    "invalid": "the PTE was invalid/locked (break-before-make in progress)",
    "unchanged": "the PTE was back to the value read (changed and restored before the probe looked)",
    "other": "something else (e.g. a different output address)",
}


def classify(old: int, now: int) -> str:
    """Which kind of update beat the age walker's cmpxchg (see WINNERS)."""
    if not now & PTE_VALID:
        return "invalid"
    if now == old:
        return "unchanged"
    diff = now ^ old
    if diff == AF and not now & AF:
        return "ager"
    if diff & PERMS and not diff & ~(PERMS | AF):
        return "perms"
    return "other"


@dataclass
class LostRace:
    ret: int
    old: int
    now: int
    ipa: int | None
    cpu: int
    ts: float

    @property
    def winner(self) -> str:
        return classify(self.old, self.now)


@dataclass
class WalkError:
    ret: int
    caller: str  # function that called kvm_pgtable_walk (symbol+off/size)
    cb: str      # the walker's visitor (symbol+off/size)

    @property
    def age_walk(self) -> bool:
        return any(self.cb.startswith(f) or self.caller.startswith(f) for f in AGE_FUNCS)


@dataclass
class RaceTrace:
    lost: list[LostRace] = field(default_factory=list)
    walk_errors: list[WalkError] = field(default_factory=list)
    unparsed: int = 0  # age_walker/walk_err lines whose fields could not be read


def _fields(payload: str) -> tuple[str, str, dict[str, str]]:
    """'(caller <- func) k=v k=v' -> (caller, func, {k: v})."""
    caller = func = ""
    rest = payload.strip()
    if rest.startswith("(") and ")" in rest:
        inner, rest = rest[1:].split(")", 1)
        if " <- " in inner:
            caller, func = inner.split(" <- ", 1)
    kv = dict(tok.split("=", 1) for tok in rest.split() if "=" in tok)
    return caller.strip(), func.strip(), kv


def parse_race_trace(lines: Iterable[str]) -> RaceTrace:
    """age_walker and walk_err events of a trace file (other lines ignored)."""
    out = RaceTrace()
    for raw in lines:
        m = TRACE_EVENT.match(raw.rstrip("\r\n"))
        if not m or m["event"] not in ("age_walker", "walk_err"):
            continue
        caller, _func, kv = _fields(m["payload"])
        try:
            if m["event"] == "age_walker":
                out.lost.append(LostRace(int(kv["ret"]), int(kv["old"], 16), int(kv["now"], 16),
                                         int(kv["ipa"], 16) if "ipa" in kv else None, int(m["cpu"]), float(m["ts"])))
            else:
                out.walk_errors.append(WalkError(int(kv["ret"]), caller, kv.get("cb", "")))
        except (KeyError, ValueError):
            out.unparsed += 1
    return out


def race_metrics(trace_text: str, dmesg_text: str | None) -> dict[str, float]:
    """Flat race.* metrics from a race run's trace and dmesg (None: dmesg not fetched, warnings unknown)."""
    t = parse_race_trace(trace_text.splitlines())
    eagain = [r for r in t.lost if r.ret == EAGAIN]
    winners = Counter(r.winner for r in eagain)
    m: dict[str, float] = {
        "race.lost_races": len(eagain),
        "race.lost_races_other_ret": len(t.lost) - len(eagain),
        "race.lost_old_young": sum(1 for r in eagain if r.old & AF),
        "race.lost_af_kept": sum(1 for r in eagain if r.now & PTE_VALID and r.now & AF),
        "race.lost_w_gained": sum(1 for r in eagain if r.now & PTE_VALID and r.now & S2AP_W and not r.old & S2AP_W),
        "race.lost_distinct_ipas": len({r.ipa for r in eagain if r.ipa is not None}),
        "race.walk_errors_age": sum(1 for w in t.walk_errors if w.age_walk),
        "race.walk_errors_other": sum(1 for w in t.walk_errors if not w.age_walk),
        "race.trace_unparsed": t.unparsed,
    }
    kept = Counter(r.winner for r in eagain if r.now & PTE_VALID and r.now & AF)
    for kind in WINNERS:
        m[f"race.lost_winner_{kind}"] = winners.get(kind, 0)
        m[f"race.lost_af_kept_{kind}"] = kept.get(kind, 0)
    if dmesg_text is not None:
        crashes = find_crashes(dmesg_text)
        m["race.warnings_total"] = len(crashes)
        m["race.warnings_test_clear_young"] = sum(1 for c in crashes if WARN_FUNC in c.title)
    return m
