"""Run order of a matrix's repeats: a Williams design, so every variant runs
in every position and directly after every other variant equally often
(first-order carry-over balanced), instead of a rotation where, with three
variants, the same variant always follows the same other one.

Williams (1949): the first sequence is 0, 1, t-1, 2, t-2, ...; sequence i adds
i to each entry (mod t).  With an even number of variants these t sequences
are balanced; with an odd number the t mirrored sequences are added (2t in
all).  Repeat r runs sequence (r - 1) mod len(sequences): balance is exact
when the repeats are a multiple of that length, and the run's Order section
counts what actually preceded what.
"""
from __future__ import annotations


def williams(t: int) -> list[list[int]]:
    """The sequences of a Williams design for t treatments (indices 0..t-1)."""
    if t <= 1:
        return [[0]] if t == 1 else []
    first, low, high = [0], 1, t - 1
    while len(first) < t:
        first.append(low)
        low += 1
        if len(first) < t:
            first.append(high)
            high -= 1
    rows = [[(x + i) % t for x in first] for i in range(t)]
    if t % 2:
        rows += [list(reversed(r)) for r in rows]
    return rows


def position(variant_index: int, t: int, repeat: int) -> int:
    """Where a variant runs within its group in a repeat (1-based repeat)."""
    rows = williams(t)
    return rows[(repeat - 1) % len(rows)].index(variant_index)


def balanced_after(t: int) -> int:
    """Repeats after which the design is balanced for t variants (t even: t, odd: 2t)."""
    return len(williams(t))
