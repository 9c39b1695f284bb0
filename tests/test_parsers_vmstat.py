"""/proc/vmstat read before and after one access_tracking_perf_test run in a guest."""
from __future__ import annotations

from pathlib import Path

from orchestrator.parsers import vmstat

FIX = Path(__file__).parent / "fixtures" / "evidence"


def test_parse_and_delta():
    before = vmstat.parse_vmstat((FIX / "vmstat-before.txt").read_text())
    after = vmstat.parse_vmstat((FIX / "vmstat-after.txt").read_text())
    assert len(before) == len(after) == 117
    assert before["pgfault"] == 17844 and after["pgfault"] == 35405
    d = vmstat.delta(before, after)
    assert d["pgfault"] == 35405 - 17844
    assert d["nr_anon_pages"] == 38 - 23
    assert "workingset_nodes" not in d        # unchanged counters are left out
    assert len(d) == 20 and list(d) == sorted(d)


def after_value(text: str, name: str) -> int:
    return int(next(line.split()[1] for line in text.splitlines() if line.split()[0] == name))


def test_appearing_counters_and_cut_lines():
    assert vmstat.delta({"a": 1, "gone": 5}, {"a": 1, "new": 3}) == {"gone": -5, "new": 3}
    text = (FIX / "vmstat-after.txt").read_text()
    cut = vmstat.parse_vmstat(text[: text.index("pgfault") + 9])  # "pgfault 3": a number cut short
    assert "pgfault" not in cut and cut["pgpgout"] == after_value(text, "pgpgout")
    assert vmstat.parse_vmstat("garbage line here\nnr_free_pages abc\n") == {}
