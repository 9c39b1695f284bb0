"""/proc/vmstat: `name value` per line (mm/vmstat.c vmstat_show)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from orchestrator.parsers import complete_lines


def parse_vmstat(text: str | Iterable[str]) -> dict[str, int]:
    lines = complete_lines(text) if isinstance(text, str) else text
    out: dict[str, int] = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """after - before for every counter that changed; a counter present on
    one side only counts as 0 on the other."""
    out: dict[str, int] = {}
    for name in before.keys() | after.keys():
        d = after.get(name, 0) - before.get(name, 0)
        if d:
            out[name] = d
    return dict(sorted(out.items()))
