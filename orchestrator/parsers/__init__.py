"""Pure evidence parsers: text captured from a guest in, dataclasses out.

One module per kernel interface. They take text (or an iterable of lines)
and never touch the guest, a process or a capture file, so each runs offline
on a saved capture (tests/fixtures/evidence); the only file read is crashlog's
pattern table (crash_patterns.yaml, data):

- lockstat:   /proc/lock_stat (version 0.4), per class, read and write apart
- crashlog:   console log -> crash reports, formats in crash_patterns.yaml
- tracestats: /sys/kernel/tracing/trace (streamed), per_cpu/cpuN/stats,
              hist trigger files, kprobe_profile
- lrugen:     /sys/kernel/debug/lru_gen and the aging commands it implies
- vmstat:     /proc/vmstat and the delta between two snapshots
"""

from __future__ import annotations


def complete_lines(text: str) -> list[str]:
    """Lines of a captured file; a last line without its newline was cut
    (capture interrupted) and could hold a shortened number: dropped."""
    lines = text.split("\n")
    lines.pop()  # "" after the final newline, or the cut line
    return lines
