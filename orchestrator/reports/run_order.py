"""The Order section: did the cells run in the order planned, did the timed
cells run alone, and what ran directly before each timed cell.

From the records only: each carries its plan position (`planned`, stamped by
matrix/scheduler.py), when it started (`started`) and when it ended
(`ended`).  A balanced plan (matrix/order.py) protects the comparisons only
if the cells ran that way; this section is the proof, or says where not.
"""
from __future__ import annotations

from collections import Counter

from orchestrator.reports.results import CellRecord
from orchestrator.workload.timing import is_timed

# Two cells that start within this many seconds of each other started together
# (several at once with --jobs): their relative order is not a deviation.
SAME_START_S = 1.0
MISMATCH = "ORDER MISMATCH"
OVERLAP = "TIMED CELL NOT ALONE"
MAX_LISTED = 10


def _ran(records: list[CellRecord]) -> list[CellRecord]:
    return [r for r in records if r.planned > 0 and r.started > 0]


def out_of_order(records: list[CellRecord]) -> list[tuple[CellRecord, CellRecord]]:
    """(cell, the latest-planned cell that started before it although planned after it), for
    every cell the records show starting behind a cell the plan put later."""
    ran = sorted(_ran(records), key=lambda r: r.started)
    out, j, top = [], 0, None  # top: the highest-planned cell started > SAME_START_S before ran[i]
    for r in ran:
        while j < len(ran) and r.started - ran[j].started > SAME_START_S:
            if top is None or ran[j].planned > top.planned:
                top = ran[j]
            j += 1
        if top is not None and top.planned > r.planned:
            out.append((r, top))
    return out


def overlapping(records: list[CellRecord]) -> list[tuple[CellRecord, list[CellRecord]]]:
    """Timed cells whose run (started .. ended) overlapped another cell's."""
    ran = [r for r in _ran(records) if r.ended > r.started]
    out = []
    for r in ran:
        if not is_timed(str(r.cell.get("config_set"))):
            continue
        others = [o for o in ran if o is not r and o.started < r.ended and r.started < o.ended]
        if others:
            out.append((r, others))
    return out


def predecessors(records: list[CellRecord]) -> Counter:
    """(variant that ran directly before, variant of the timed cell) counts, in start order."""
    ran = sorted(_ran(records), key=lambda r: r.started)
    return Counter((str(ran[i - 1].cell.get("variant")), str(r.cell.get("variant")))
                   for i, r in enumerate(ran) if i and is_timed(str(r.cell.get("config_set"))))


def order_section(records: list[CellRecord]) -> str | None:
    ran = _ran(records)
    if len(ran) < 2:
        return None
    lines = ["## Run order", ""]
    wrong = out_of_order(records)
    if wrong:
        lines.append(f"**{MISMATCH}: {len(wrong)} cell(s) started after a cell planned later** (a resumed or "
                     "re-run cell, a shard, or a scheduler fault): the balanced order the comparisons rely on "
                     "did not hold for them.")
        lines += [f"- `{r.key}` (planned #{r.planned}) started after `{e.key}` (planned #{e.planned})"
                  for r, e in wrong[:MAX_LISTED]]
        if len(wrong) > MAX_LISTED:
            lines.append(f"- and {len(wrong) - MAX_LISTED} more")
    else:
        lines.append(f"The {len(ran)} cell(s) with a recorded plan position started in the planned order.")
    timed = [r for r in ran if is_timed(str(r.cell.get("config_set")))]
    timed_with_end = [r for r in timed if r.ended > r.started]
    if timed:
        bad = overlapping(records)
        lines.append("")
        if bad:
            lines.append(f"**{OVERLAP}: {len(bad)} of {len(timed_with_end)} timed cell(s) overlapped another cell**; "
                         "their timings are not comparable:")
            lines += [f"- `{r.key}` with " + ", ".join(f"`{o.key}`" for o in others[:3]) for r, others in bad[:MAX_LISTED]]
        else:
            lines.append(f"All {len(timed_with_end)} timed cell(s) with a recorded end ran alone: no other cell "
                         "ran between their start and end.")
        pred = predecessors(records)
        if pred:
            variants = sorted({v for pair in pred for v in pair})
            lines += ["", "What started directly before each timed cell (rows: the timed cell's variant; columns: "
                          "the variant of the cell before it, any config set):", "",
                      "| timed cell | " + " | ".join(f"after {v}" for v in variants) + " |",
                      "|---|" + "---|" * len(variants)]
            lines += [f"| {t} | " + " | ".join(str(pred.get((v, t), 0)) for v in variants) + " |"
                      for t in variants if any(pred.get((v, t)) for v in variants)]
    return "\n".join(lines) + "\n"
