"""The search itself, free of builds and guests: prefixes 0..n of a series,
prefix `good` known to pass and `bad` known to fail; find the first bad one.

Binary search as `git bisect` does it: test the middle of the open range;
an untestable prefix ("skip") is set aside and the untested prefix nearest
the middle is tried instead.  When every prefix left between the last good
and the first bad one is untestable, the answer is that range, as
`git bisect` says "the first bad commit could be any of".

Repeats of a flaky check are folded into one verdict by `fold`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.bisect.checks import BAD, GOOD, SKIP

MODES = ("majority", "any")  # any: one failing repeat makes the prefix bad


@dataclass
class Outcome:
    first_bad: int | None  # the prefix (= patch number) that introduced the failure
    last_good: int
    candidates: list[int] = field(default_factory=list)  # when skips leave it open: any of these
    skipped: list[int] = field(default_factory=list)
    order: list[int] = field(default_factory=list)  # prefixes in the order they were tested


def bisect_prefixes(good: int, bad: int, test: Callable[[int], str]) -> Outcome:
    """test(k) -> good | bad | skip for prefix k (good < k < bad); good and bad are already known."""
    skipped: set[int] = set()
    order: list[int] = []
    while True:
        open_ = [k for k in range(good + 1, bad) if k not in skipped]
        if not open_:
            left = sorted(k for k in skipped if good < k < bad)
            if not left:
                return Outcome(bad, good, [], sorted(skipped), order)
            return Outcome(None, good, left + [bad], sorted(skipped), order)
        mid = (good + bad) // 2
        k = min(open_, key=lambda x: (abs(x - mid), x))  # the middle, or the nearest testable one
        order.append(k)
        verdict = test(k)
        if verdict == GOOD:
            good = k
        elif verdict == BAD:
            bad = k
        elif verdict == SKIP:
            skipped.add(k)
        else:
            raise ValueError(f"verdict {verdict!r} is none of good, bad, skip")


def fold(verdicts: list[str], repeats: int, mode: str) -> str | None:
    """One verdict from the repeats so far, or None when more runs are needed.

    Skipped runs do not vote; a prefix whose runs are all untestable is skip.
    majority: the first verdict that more than half of `repeats` runs give
    (stops early); any: bad as soon as one run fails, good after `repeats`
    runs without a failure.
    """
    votes = [v for v in verdicts if v != SKIP]
    bad = votes.count(BAD)
    good = votes.count(GOOD)
    if mode == "any":
        if bad:
            return BAD
        if len(verdicts) < repeats:
            return None
        return GOOD if good else SKIP
    need = repeats // 2 + 1
    if bad >= need:
        return BAD
    if good >= need:
        return GOOD
    if len(verdicts) < repeats:
        return None
    if not votes:
        return SKIP
    return BAD if bad > good else GOOD if good > bad else SKIP  # a tie among testable runs says nothing
