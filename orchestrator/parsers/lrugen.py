"""/sys/kernel/debug/lru_gen (and lru_gen_full) -> generations per memcg and node,
and the aging commands that file accepts.

Format (mm/vmscan.c lru_gen_seq_show, 6.12):

    memcg  ID PATH              only before the first memory node of a memcg
     node  N
     SEQ  AGE_MS  ANON  FILE    one line per generation, oldest first

SEQ is the generation's sequence number (max_seq is the youngest). In
lru_gen_full every generation since max_seq - MAX_NR_GENS + 1 is listed, a
page count is followed by 'x' when that generation is already below min_seq
of its type, and each generation line is followed by one line per tier
(`TIER  n n n  n n n`, each number suffixed by R/T/x or r/e/p) and one mm
walk stats line (4 numbers suffixed by T/Y/F/A, t/y/f/a or x).

Aging: writing `+ MEMCG_ID NODE_ID MAX_SEQ [CAN_SWAP [FORCE_SCAN]]` creates
a new generation when MAX_SEQ is the current max_seq (an older value is a
no-op, a newer one EINVAL) - see run_aging.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestrator.parsers import complete_lines

_MEMCG = re.compile(r"^memcg\s+(?P<id>\d+)(?: (?P<path>.*))?$")
_NODE = re.compile(r"^\s*node\s+(?P<nid>\d+)\s*$")
_GEN = re.compile(r"^\s*(?P<seq>\d+)\s+(?P<age>\d+)\s+(?P<anon>\d+)(?P<ax>[x ]?)\s+(?P<file>\d+)(?P<fx>x?)\s*$")
_TIER = re.compile(r"^\s*(?P<tier>\d+)((?:\s+\d+[A-Za-z]){6})\s*$")
_MM = re.compile(r"^\s*((?:\d+[A-Za-z]\s*){4})$")
_NUM_MARK = re.compile(r"(\d+)([A-Za-z])")


@dataclass(frozen=True)
class Tier:
    tier: int
    anon: tuple[int, int, int]
    file: tuple[int, int, int]
    marks: str               # e.g. "RTxRTx" (youngest gen), "reprep", "xxxxxx"


@dataclass
class Generation:
    seq: int
    age_ms: int
    anon: int
    file: int
    anon_evicted: bool = False   # 'x': below min_seq[anon] (lru_gen_full only)
    file_evicted: bool = False
    tiers: list[Tier] = field(default_factory=list)
    mm_stats: tuple[int, ...] | None = None
    mm_marks: str | None = None


@dataclass
class LruVec:
    """One memcg on one node."""
    memcg_id: int
    memcg_path: str          # "/" for the root cgroup, "" without memcg
    node: int
    gens: list[Generation] = field(default_factory=list)

    @property
    def max_seq(self) -> int | None:
        return max((g.seq for g in self.gens), default=None)

    @property
    def min_seq(self) -> int | None:
        live = [g.seq for g in self.gens if not (g.anon_evicted and g.file_evicted)]
        return min(live, default=None)

    @property
    def pages(self) -> dict[int, int]:
        """seq -> anon + file pages."""
        return {g.seq: g.anon + g.file for g in self.gens}

    @property
    def anon_pages(self) -> int:
        return sum(g.anon for g in self.gens if not g.anon_evicted)

    @property
    def file_pages(self) -> int:
        return sum(g.file for g in self.gens if not g.file_evicted)


def parse_lru_gen(text: str | Iterable[str]) -> list[LruVec]:
    lines = complete_lines(text) if isinstance(text, str) else text
    out: list[LruVec] = []
    memcg: tuple[int, str] | None = None
    cur: LruVec | None = None
    for raw in lines:
        line = raw.rstrip("\r\n")
        if m := _MEMCG.match(line):
            memcg = (int(m["id"]), (m["path"] or "").strip())
            cur = None
        elif m := _NODE.match(line):
            if memcg is None:
                continue  # truncated at the start: node without its memcg
            cur = LruVec(memcg[0], memcg[1], int(m["nid"]))
            out.append(cur)
        elif cur is None:
            continue
        elif m := _GEN.match(line):
            cur.gens.append(Generation(int(m["seq"]), int(m["age"]), int(m["anon"]), int(m["file"]),
                                       m["ax"] == "x", m["fx"] == "x"))
        elif (m := _TIER.match(line)) and cur.gens:
            pairs = _NUM_MARK.findall(m.group(2))
            nums = [int(n) for n, _ in pairs]
            cur.gens[-1].tiers.append(Tier(int(m["tier"]), tuple(nums[:3]), tuple(nums[3:]),  # type: ignore[arg-type]
                                           "".join(c for _, c in pairs)))
        elif (m := _MM.match(line)) and cur.gens:
            pairs = _NUM_MARK.findall(m.group(1))
            cur.gens[-1].mm_stats = tuple(int(n) for n, _ in pairs)
            cur.gens[-1].mm_marks = "".join(c for _, c in pairs)
    return out


def find_memcg(vecs: Iterable[LruVec], path: str) -> list[LruVec]:
    """All nodes of the memcg at `path` (cgroup path as lru_gen prints it,
    e.g. "/evidence"; a leading /sys/fs/cgroup is dropped)."""
    path = "/" + path.removeprefix("/sys/fs/cgroup").strip("/")
    return [v for v in vecs if ("/" + v.memcg_path.strip("/")) == path]


def aging_commands(vecs: Iterable[LruVec], path: str, *, can_swap: int = 1, force_scan: int = 1) -> list[str]:
    """`+ MEMCG_ID NODE MAX_SEQ CAN_SWAP FORCE_SCAN` for every node of the memcg,
    against the max_seq read just now (a stale max_seq makes the write a no-op)."""
    vecs = list(vecs)
    mine = find_memcg(vecs, path)
    if not mine:
        known = sorted({v.memcg_path for v in vecs})
        raise LookupError(f"memcg {path!r} not in lru_gen (known: {', '.join(known) or 'none'})")
    return [f"+ {v.memcg_id} {v.node} {v.max_seq} {can_swap} {force_scan}" for v in mine if v.max_seq is not None]
