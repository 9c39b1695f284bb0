"""Kernel reports across runs: the same crash is the same fingerprint
(syzkaller-style title + the top frames from the guilty one, see
parsers/crashlog.py), never the same excerpt or line number.  A report
flagged corrupted (truncated, interleaved) has no trustworthy frames and is
matched by its title alone.
"""
from __future__ import annotations

from orchestrator.parsers.crashlog import Crash
from orchestrator.reports.results import CellRecord


def crash_record(c: Crash) -> dict:
    return {"title": c.title, "kind": c.kind, "fingerprint": c.fingerprint, "corrupted": c.corrupted}


def _key(c: dict) -> str:
    return f"title:{c.get('title')}" if c.get("corrupted") else f"fp:{c.get('fingerprint')}"


def _index(records: list[CellRecord]) -> dict[str, tuple[dict, list[str]]]:
    out: dict[str, tuple[dict, list[str]]] = {}
    for r in records:
        for c in r.crashes:
            out.setdefault(_key(c), (c, []))[1].append(r.key)
    return out


def crash_lines(a: list[CellRecord], b: list[CellRecord], label_a: str, label_b: str) -> list[str]:
    """'same crash as in A' / 'new in B' / 'gone in B' lines; [] when neither run saw a report."""
    ia, ib = _index(a), _index(b)
    lines = []
    for key in sorted(set(ia) | set(ib)):
        c = (ia.get(key) or ib[key])[0]
        title = c["title"] + (" (corrupted report: matched by title)" if c.get("corrupted") else "")
        if key in ia and key in ib:
            lines.append(f"- same crash in both: {title} [{c['fingerprint']}]: {len(ia[key][1])} cell(s) of "
                         f"{label_a} (e.g. {ia[key][1][0]}), {len(ib[key][1])} of {label_b}")
        elif key in ib:
            lines.append(f"- new in {label_b}: {title} [{c['fingerprint']}] in {len(ib[key][1])} cell(s), e.g. {ib[key][1][0]}")
        else:
            lines.append(f"- only in {label_a}: {title} [{c['fingerprint']}] in {len(ia[key][1])} cell(s), e.g. {ia[key][1][0]}")
    return lines


def crash_section(records: list[CellRecord]) -> str | None:
    """Kernel reports of a run (or of merged shards), one line per distinct crash."""
    index = _index(records)
    if not index:
        return None
    lines = ["## Kernel reports", "", "One line per distinct crash (same fingerprint = same crash, as syzbot dedupes).", ""]
    for key, (c, cells) in sorted(index.items(), key=lambda kv: -len(kv[1][1])):
        flag = " (corrupted report: matched by title)" if c.get("corrupted") else ""
        lines.append(f"- {c['title']}{flag} [{c['fingerprint']}], {c['kind']}: {len(cells)} cell(s): "
                     + ", ".join(f"`{k}`" for k in cells[:5]) + (" ..." if len(cells) > 5 else ""))
    return "\n".join(lines) + "\n"
