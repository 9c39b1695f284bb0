"""Race evidence (tracepoints/race.yaml, workloads/race.yaml) and the report
section on it, on the files of a real `run-matrix --matrix race` run
(tests/fixtures/race/README.md), plus the real injected WARNING console of
tests/fixtures/evidence."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from orchestrator.parsers import race_trace as rt
from orchestrator.reports import race as rr
from orchestrator.workload import tracing
from orchestrator.errors import UserError
from orchestrator.matrix.spec import load_matrix
from orchestrator.reports.results import CellRecord
from orchestrator.workload.definitions import load_workload, parse_metric_lines

FIX = Path(__file__).parent / "fixtures" / "race"
RUN = FIX / "run"
CONSOLE_WARN = Path(__file__).parent / "fixtures" / "evidence" / "console-oops-warning.log"
V4_R1 = RUN / "cells" / "v4.evidence.smp4.race~47d6a7.r1"
BASE_R1 = RUN / "cells" / "baseline.evidence.smp4.race~47d6a7.r1"


def records() -> list[CellRecord]:
    return rr._load_records(RUN)


# ---- parsing the real trace --------------------------------------------------

def test_lost_races_of_a_real_v4_run():
    t = rt.parse_race_trace((V4_R1 / "evidence" / "trace").read_text().splitlines())
    assert t.unparsed == 0
    assert len(t.lost) == 31 and {r.ret for r in t.lost} == {rt.EAGAIN}
    first = t.lost[0]
    # "race_ager-115 [001] dN.6. 6.436186: age_walker: (... <- stage2_age_walker) ret=-11
    #  old=0x40000102c5645b now=0x40000102c564db ipa=0xfffff93000"
    assert (first.cpu, first.ts, first.old, first.now, first.ipa) == (1, 6.436186, 0x40000102C5645B, 0x40000102C564DB, 0xFFFFF93000)
    assert first.now ^ first.old == rt.S2AP_W and first.old & rt.AF  # write permission added, AF set all along
    assert {r.winner for r in t.lost} == {"perms"}
    assert all(w.ret == rt.EAGAIN and not w.age_walk for w in t.walk_errors)
    assert {w.cb.split("+")[0] for w in t.walk_errors} <= {"stage2_map_walker", "stage2_attr_walker"}


def test_race_metrics_of_real_runs():
    m = rt.race_metrics((V4_R1 / "evidence" / "trace").read_text(), (V4_R1 / "evidence" / "dmesg").read_text())
    assert m["race.lost_races"] == 31 == m["race.lost_old_young"] == m["race.lost_af_kept"] == m["race.lost_winner_perms"]
    assert m["race.lost_w_gained"] == 31 and m["race.lost_distinct_ipas"] == 28  # 3 pages lost twice
    assert m["race.lost_winner_ager"] == m["race.lost_winner_invalid"] == m["race.lost_winner_other"] == 0
    assert m["race.walk_errors_age"] == 0 and m["race.warnings_total"] == 0 == m["race.warnings_test_clear_young"]
    # Baseline walks under the write lock with a plain store: nothing to lose.
    base = rt.race_metrics((BASE_R1 / "evidence" / "trace").read_text(), None)
    assert "race.warnings_total" not in base  # no dmesg given: warnings unknown, not 0
    assert base["race.lost_races"] == 0 and base["race.walk_errors_age"] == 0


def test_warning_titles_from_the_injected_console():
    # Real WARN_ON(kvm_pgtable_walk(...)) reports (injected through the gdbstub, see its README).
    m = rt.race_metrics("", CONSOLE_WARN.read_text(errors="replace"))
    assert m["race.warnings_test_clear_young"] == 3 and m["race.warnings_total"] == 4
    assert m["race.lost_races"] == 0


def test_classify_from_a_real_pte():
    old = 0x40000102C5645B  # valid page, S2AP_R, AF set (first lost race of the v4 run)
    assert rt.classify(old, old | rt.S2AP_W) == "perms"
    assert rt.classify(old, old & ~rt.AF) == "ager"
    assert rt.classify(old, (old | rt.S2AP_W) & ~rt.AF) == "perms"
    assert old & rt.XN and rt.classify(old, old & ~rt.XN) == "perms"  # execute granted (exec fault)
    assert rt.classify(old, rt.AF) == "invalid"  # KVM_INVALID_PTE_LOCKED
    assert rt.classify(old, old) == "unchanged"
    assert rt.classify(old, old + 0x1000) == "other"  # another output address


# ---- the report section -----------------------------------------------------

def test_race_section_on_the_real_run():
    recs = records()
    assert len(recs) == 9
    md = rr.race_section(recs)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ") and "evidence | smp4" in line}
    assert set(rows) == {"baseline", "v4", "v4-fixed"}
    lost = {v: sum(rr._lost(r.metrics) for r in recs if r.cell["variant"] == v) for v in rows}
    assert lost == EXPECTED_LOST
    assert "| baseline | evidence | smp4 | 3 |" in md
    assert "1. **The race is real**" in md and f"-EAGAIN {EXPECTED_LOST['v4'] + EXPECTED_LOST['v4-fixed']} times" in md
    assert "Control: baseline" in md and "lost 0 in" in md
    assert "**The WARN_ON() did not fire**" in md and f"lost {EXPECTED_LOST['v4']} races and logged 0" in md
    assert "3. **No retry needed: supported.**" in md
    # v4-fixed r3's dmesg was not fetched in that run: its warnings are unknown, and the section says so.
    assert "v4-fixed/evidence/smp4: dmesg was not fetched in 1 run(s)" in md


def test_race_section_from_collected_metrics_only():
    # Before evidence.py runs race_metrics, only the event count is known: say so, draw no PTE conclusions.
    recs = []
    for d in sorted((RUN / "cells").iterdir()):
        rec = CellRecord.load(d)
        rec.metrics.update(parse_metric_lines((d / "evidence" / "workload.out").read_text(), "race"))
        recs.append(rec)
    md = rr.race_section(recs)
    assert "no per-event race metrics" in md
    assert "2. Not measured" in md and "1. **The race is real**" in md


def test_race_section_without_lost_races_and_other_workloads():
    base = [r for r in records() if r.cell["variant"] == "baseline"]
    md = rr.race_section(base)
    assert "No runs with the series" in md
    v4 = [r for r in records() if r.cell["variant"] == "v4"]
    for r in v4:  # as if the runs had lost nothing
        r.metrics = {k: (0.0 if k.startswith("race.lost") else v) for k, v in r.metrics.items()}
    assert "1. **Not shown**" in rr.race_section(v4)
    other = CellRecord("x", {"workload": "page-idle", "variant": "v4"}, "", "", metrics={"kprobe.age_gfn.hits": 5})
    assert rr.race_section([other]) == ""


def test_cli_prints_the_section(capsys):
    assert rr.main([str(RUN)]) == 0
    assert "## Lost races in the shared stage-2 age walk" in capsys.readouterr().out
    assert rr.main(["/nonexistent"]) == 2


# ---- the inputs of the run: tracepoint set, workload, matrix, guest programs -----

def test_race_tracepoint_set_records_only_lost_races():
    tp = tracing.load_tracepoint_set("race")
    script = tp.setup_script()
    assert "echo 'ret != 0' > $T/events/orch/age_walker/filter" in script
    assert "echo 'ret != 0' > $T/events/orch/walk_err/filter" in script
    assert "echo 'common_pid < 0' > $T/events/orch/age_gfn/filter" in script
    walker = next(k for k in tp.kprobes if k.name == "age_walker")
    assert walker.definition() == ("r:orch/age_walker stage2_age_walker ret=$retval:s32 old=+8($arg1):x64 "
                                   "now=+0(+0($arg1)):x64 ipa=+40($arg1):x64")


def test_filter_needs_record(tmp_path, monkeypatch):
    monkeypatch.setattr(tracing, "TRACEPOINTS_DIR", tmp_path)
    (tmp_path / "bad.yaml").write_text("kprobes:\n  - {name: x, symbol: kvm_age_gfn, filter: 'ret != 0'}\n")
    with pytest.raises(UserError, match="filter needs record: true"):
        tracing.load_tracepoint_set("bad")
    (tmp_path / "evil.yaml").write_text("kprobes:\n  - {name: x, symbol: kvm_age_gfn, record: true, filter: \"1; reboot\"}\n")
    with pytest.raises(UserError, match="kprobes\\[0\\].filter"):
        tracing.load_tracepoint_set("evil")


def test_workload_and_matrix():
    wl = load_workload("race")
    assert wl.command({"seconds": 120, "agers": 4, "bytes": "256K"}) == "/opt/orch/workloads/race-stress 120 4 2 256K"
    assert wl.tracepoints == "race" and wl.output == "metric-lines" and wl.metric_prefix == "race"
    m = load_matrix("race")
    assert len(m.cells) == 9 and {c.variant for c in m.cells} == {"baseline", "v4", "v4-fixed"}
    assert {(c.config_set, c.machine) for c in m.cells} == {("evidence", "smp4")}


def test_race_programs_are_arm64_static_and_executable():
    from orchestrator.kernel.race_programs import race_programs
    from orchestrator.kernel.toolchain import detect
    files = race_programs(detect())
    assert set(files) == {"/opt/orch/bin/race_ager", "/opt/orch/workloads/race-stress"}
    elf = files["/opt/orch/bin/race_ager"].read_bytes()
    assert elf[:4] == b"\x7fELF" and struct.unpack_from("<H", elf, 18)[0] == 183  # EM_AARCH64
    phoff, = struct.unpack_from("<Q", elf, 32)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    types = [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]
    assert types and 3 not in types  # no PT_INTERP: static
    assert files["/opt/orch/workloads/race-stress"].stat().st_mode & 0o111


def test_evidence_metrics_recomputed_from_the_raw_files_match_the_run():
    # evidence.evidence_metrics on the fixture's raw files gives the figures the
    # real run recorded in cell.json, and its race metrics count the same lost
    # races as the generic trace summary (two parsers, one trace).
    from orchestrator.workload.evidence import evidence_metrics
    recorded = json.loads((V4_R1 / "cell.json").read_text())["metrics"]
    m = evidence_metrics(V4_R1 / "evidence", load_workload("race"), tracing.load_tracepoint_set("race"))
    # The fixture keeps the kprobe profile, trace and trace_stats (not lock_stat).
    shared = [k for k in recorded if k.startswith(("kprobe.", "trace."))]
    assert len(shared) == 23
    assert {k: m.get(k) for k in shared} == {k: recorded[k] for k in shared}
    assert m["trace.age_walker.count"] == m["race.lost_races"] == 31
    assert m["kprobe.age_walker.missed"] == 0 and m["trace.events_lost"] == 0


EXPECTED_LOST = {"baseline": 0, "v4": 91, "v4-fixed": 69}  # age_walker events per variant, 3 runs each (README)
