"""Tracing parsers on files captured in one run of access_tracking_perf_test
with kvm:kvm_age_hva traced, a hist trigger on it and a kprobe on kvm_age_gfn
(tests/fixtures/evidence/README.md). The three in-kernel counts must agree."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.parsers import tracestats as ts

FIX = Path(__file__).parent / "fixtures" / "evidence"
WRITTEN = 1093934  # "# entries-in-buffer/entries-written: 68059/1093934" in the trace header


def cpu_stats() -> dict[int, ts.CpuBufferStats]:
    return {c: ts.parse_cpu_stats((FIX / f"per_cpu-cpu{c}-stats.txt").read_text()) for c in (0, 1)}


def test_trace_head_streamed():
    with open(FIX / "trace-kvm_age_hva-head.txt") as f:
        s = ts.summarize_trace(f)  # a file object: lines are never all in memory
    assert (s.entries_in_buffer, s.entries_written, s.cpus) == (68059, WRITTEN, 2)
    assert s.lines == 400 and s.unparsed == 0 and s.lost == {}
    age = s.events["kvm_age_hva"]
    assert age.count == 388 == s.count("kvm_age_hva")
    assert s.count("kvm_test_age_hva") == 0  # enabled, never fired (as in the field notes)
    assert age.per_cpu == {1: 388}
    assert (age.first_ts, age.last_ts) == (96.310607, 96.510868)
    assert age.rate_per_s == pytest.approx(387 / (96.510868 - 96.310607))
    # every aging call covers one 4 KiB page: end - start == 0x1000
    span = age.fields["span"]
    assert (span.count, span.min, span.max) == (388, 4096, 4096)
    starts = [int(line.split("age hva: ")[1].split()[0], 16)
              for line in (FIX / "trace-kvm_age_hva-head.txt").read_text().splitlines() if "age hva: " in line]
    assert (age.fields["start"].min, age.fields["start"].max) == (min(starts), max(starts))
    assert age.fields["start"].total == sum(starts)


def test_custom_fields_and_key_value_payloads():
    line = " access_tracking-62      [001] ...3.    96.310607: kvm_age_hva: mmu notifier age hva: 0x00ffffa822c000 -- 0x00ffffa822d000\n"
    s = ts.summarize_trace([line], fields={"kvm_age_hva": r"-- (?P<end>0x[0-9a-f]+)"})
    assert set(s.events["kvm_age_hva"].fields) == {"end"}
    # events without a pattern: name=value pairs (the format of most tracepoints)
    kv = "          <idle>-0       [000] d.h2.    12.000100: mm_vmscan_lru_shrink_inactive: nid=0 nr_scanned=32 nr_reclaimed=31\n"
    s = ts.summarize_trace([kv, kv])
    assert s.events["mm_vmscan_lru_shrink_inactive"].fields["nr_reclaimed"].total == 62


def test_per_cpu_stats_totals_match_the_trace_header():
    stats = cpu_stats()
    assert stats[0].entries == 51214 and stats[0].overrun == 1025875
    assert stats[1].entries == 16845 and stats[1].overrun == 0
    assert stats[0].oldest_event_ts == pytest.approx(217.201241)
    tot = ts.buffer_totals(stats)
    assert tot.entries == 68059          # entries-in-buffer of the trace header
    assert tot.written == WRITTEN        # entries-written of the trace header
    assert tot.lost == 1025875


def test_hist_trigger():
    (h,) = ts.parse_hist((FIX / "hist-kvm_age_hva.txt").read_text())
    assert h.trigger.startswith("hist:keys=common_pid:vals=hitcount:sort=hitcount")
    assert (h.hits, h.n_entries, h.dropped) == (WRITTEN, 2, 0)
    assert [(e.key, e.values["hitcount"]) for e in h.entries] == [
        ({"common_pid": "1"}, 16790), ({"common_pid": "62"}, 1077144)]
    assert h.total() == h.hits  # nothing dropped: every hit is in an entry


def test_hist_key_formats():
    text = ("# event histogram\n#\n# trigger info: hist:keys=common_pid.execname,nid:vals=hitcount,nr:size=2048 [active]\n#\n\n"
            "{ common_pid: access_tracking [        62], nid:          0 } hitcount:         12  nr:         34\n"
            "\nTotals:\n    Hits: 12\n    Entries: 1\n    Dropped: 0\n")
    (h,) = ts.parse_hist(text)
    assert h.entries[0].key == {"common_pid": "access_tracking [        62]", "nid": "0"}
    assert h.entries[0].values == {"hitcount": 12, "nr": 34}


def test_kprobe_profile():
    prof = ts.parse_kprobe_profile((FIX / "kprobe_profile.txt").read_text())
    assert prof == {"kvm_age_gfn_probe": ts.KprobeHits(1093914, 0)}
    # kvm_age_gfn runs for the hvas backed by a memslot; kvm_age_hva fires for every clear_young call
    assert prof["kvm_age_gfn_probe"].nhit <= WRITTEN


def test_bad_stats_file():
    with pytest.raises(ValueError, match="entries"):
        ts.parse_cpu_stats("garbage\n")
