"""Workload data files and output parsers, on output captured from real runs
(tests/fixtures/workloads/README.md says which kernel and command)."""
from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest

from orchestrator.workload import definitions as workloads
from orchestrator.errors import UserError
from orchestrator.workload.definitions import (OUTPUT_PARSERS, ParamSpec, load_workload, parse_metric_lines, parse_phase_timings,
                                    parse_workload_output)

FIX = Path(__file__).parent / "fixtures"
WL = FIX / "workloads"


def text(name: str) -> str:
    return (WL / name).read_text()


def test_metric_lines_mglru_baseline():
    m = parse_metric_lines(text("mglru-aging-baseline.txt"), "mglru")
    assert m["mglru.aging_passes"] == 2
    assert m["mglru.aging_total_s"] == pytest.approx(0.733445)
    assert m["mglru.aging_avg_s"] == pytest.approx(0.366723)
    assert m["mglru.vcpu_passes"] == 100
    assert m["mglru.vcpu_wall_s"] == pytest.approx(0.721934)
    assert m["mglru.aging_errors"] == 0
    # Only ORCH-METRIC lines: the library's chatter and the summary line are not metrics.
    assert len(m) == 16
    assert all(k.startswith("mglru.") for k in m)


def test_metric_lines_mglru_v4_fixed():
    m = parse_metric_lines(text("mglru-aging-v4-fixed.txt"), "mglru")
    assert m["mglru.aging_passes"] == 4 and m["mglru.vcpu_passes"] == 200
    assert m["mglru.aging_generations"] == 4
    assert m["mglru.aging_total_s"] == pytest.approx(m["mglru.aging_avg_s"] * 4, rel=1e-5)


def test_metric_lines_memcg_reclaim_script_and_program_lines():
    m = parse_metric_lines(text("memcg-reclaim-baseline.txt"), "reclaim")
    # From the script (before and after the program) and from the program.
    assert m["reclaim.swap_made_here"] == 1
    assert m["reclaim.zram_mem_used_max_bytes"] == 2166784
    assert m["reclaim.memcg_pgsteal"] == 11060
    assert m["reclaim.limit_bytes"] == 27119616
    assert m["reclaim.limit_bytes"] < m["reclaim.usage_bytes"]
    assert m["reclaim.reclaim_ok"] == 5 and m["reclaim.reclaim_errors"] == 0
    v4 = parse_metric_lines(text("memcg-reclaim-v4-fixed.txt"), "reclaim")
    assert v4["reclaim.memcg_pgsteal"] == 7343 and v4["reclaim.vcpu_passes"] == 2


def test_metric_lines_skip_malformed_and_keep_last():
    out = "\n".join([
        "ORCH-METRIC a 1",
        "ORCH-METRIC a 2.5",          # repeated: last wins
        "ORCH-METRIC b nan",          # not finite
        "ORCH-METRIC c inf",
        "ORCH-METRIC d 12abc",        # not a number
        "ORCH-METRIC e",              # no value
        "ORCH-METRIC f 1 2",          # extra field
        "ORCH-METRIC 9x 3",           # name must start with a letter
        "xORCH-METRIC g 4",
        "  ORCH-METRIC h -3e2  ",     # surrounding blanks are fine
        "ORCH-METRIC i.j-k_l 7",
    ])
    assert parse_metric_lines(out, "p") == {"p.a": 2.5, "p.h": -300.0, "p.i.j-k_l": 7.0}
    assert parse_metric_lines("", "p") == {}


def test_truncated_output_gives_what_was_printed():
    # A run killed mid-way (cut-down of a real output): the metrics printed so far.
    lines = text("memcg-reclaim-v4-fixed.txt").splitlines()[:9]
    m = parse_metric_lines("\n".join(lines) + "\nORCH-METRIC vcpu", "reclaim")
    assert set(m) == {"reclaim.swap_made_here", "reclaim.populate_s", "reclaim.populate_vcpu_max_s",
                      "reclaim.usage_bytes", "reclaim.limit_s", "reclaim.limit_bytes"}


def test_dispatch_by_output_format():
    page_idle = load_workload("page-idle")
    mglru = load_workload("mglru-aging")
    perf = (FIX / "evidence" / "perf_test-baseline-run1.txt").read_text()
    assert page_idle.output == "phase-timings"
    assert parse_workload_output(page_idle, perf) == parse_phase_timings(perf)
    assert parse_workload_output(page_idle, perf)["phase.mark_memory_idle_total_s"] == pytest.approx(69.849564048)
    assert mglru.output == "metric-lines" and mglru.metric_prefix == "mglru"
    assert parse_workload_output(mglru, text("mglru-aging-baseline.txt"))["mglru.aging_passes"] == 2
    assert parse_workload_output(mglru, perf) == {}
    both = workloads.Workload(**{**mglru.__dict__, "output": "both"})
    m = parse_workload_output(both, perf + "\n" + text("mglru-aging-baseline.txt"))
    assert "phase.mark_memory_idle_s" in m and "mglru.aging_passes" in m
    none = workloads.Workload(**{**mglru.__dict__, "output": "none"})
    assert parse_workload_output(none, text("mglru-aging-baseline.txt")) == {}
    # Built without a prefix: the workload name.
    bare = workloads.Workload(**{**mglru.__dict__, "metric_prefix": ""})
    assert "mglru-aging.aging_passes" in parse_workload_output(bare, text("mglru-aging-baseline.txt"))


@pytest.mark.parametrize("name, expected", [
    # with-swap.sh sets up zram of the first argument (0: none) and runs the program (f5cf270).
    ("mglru-aging", ["/opt/orch/workloads/with-swap.sh", "0", "mglru_aging", "-m", "6", "-v", "1", "-b", "32M",
                     "-i", "200", "-p", "2", "-l", "0", "-d", "0"]),
    ("memcg-reclaim", ["/opt/orch/workloads/memcg-reclaim.sh", "512M", "-m", "6", "-v", "1", "-b", "16M",
                       "-d", "10", "-l", "75", "-r", "4M", "-I", "500"]),
    ("page-idle", ["/opt/orch/selftests/access_tracking_perf_test", "-m", "6", "-v", "1", "-b", "64M"]),
])
def test_default_argv(name, expected):
    w = load_workload(name)
    assert w.argv({}) == expected
    assert w.tracepoints == "aging"


def test_every_workload_file_loads_and_its_output_format_is_known():
    for path in sorted(workloads.WORKLOADS_DIR.glob("*.yaml")):
        w = load_workload(path.stem)
        assert w.output in OUTPUT_PARSERS
        assert w.name == path.stem
        w.argv({})  # defaults match their own patterns


@pytest.mark.parametrize("name, params", [
    ("memcg-reclaim", {"limit_pct": 101}),
    ("memcg-reclaim", {"bytes": "16M; reboot"}),
    ("memcg-reclaim", {"seconds": 0}),
    ("mglru-aging", {"iterations": "0"}),
    ("mglru-aging", {"vcpus": "$(reboot)"}),
    ("mglru-aging", {"nope": 1}),
])
def test_bad_params_rejected(name, params):
    with pytest.raises(UserError):
        load_workload(name).argv(params)


def test_command_quotes_every_value():
    w = load_workload("memcg-reclaim")
    assert w.command({"seconds": 5}).startswith("/opt/orch/workloads/memcg-reclaim.sh 512M -m 6")
    for name in ("page-idle", "mglru-aging", "memcg-reclaim", "race"):
        shipped = load_workload(name)
        assert shlex.split(shipped.command({})) == shipped.argv({}), name
    # A value the shell would split or expand (a permissive pattern lets it through)
    # is one quoted word of the command, not several.
    loose = dataclasses.replace(w, params={**w.params, "bytes": ParamSpec("bytes", "16M", ".*")})
    value = "16 M $(id)"
    command = loose.command({"bytes": value})
    assert "'16 M $(id)'" in command
    assert shlex.split(command) == loose.argv({"bytes": value}) and value in loose.argv({"bytes": value})


def _write(tmp_path: Path, body: str) -> None:
    (tmp_path / "x.yaml").write_text("program: bin/x\nargs: []\ntimeout_s: 5\n" + body)


def test_unknown_output_format_named(tmp_path, monkeypatch):
    monkeypatch.setattr(workloads, "WORKLOADS_DIR", tmp_path)
    _write(tmp_path, "output: metric-line\n")
    with pytest.raises(UserError) as exc:
        load_workload("x")
    assert "metric-line" in exc.value.message and "metric-lines" in (exc.value.hint or "")


def test_bad_metric_prefix(tmp_path, monkeypatch):
    monkeypatch.setattr(workloads, "WORKLOADS_DIR", tmp_path)
    _write(tmp_path, "output: metric-lines\nmetric_prefix: 'a b'\n")
    with pytest.raises(UserError, match="metric_prefix"):
        load_workload("x")


def test_defaults_without_output_and_prefix(tmp_path, monkeypatch):
    monkeypatch.setattr(workloads, "WORKLOADS_DIR", tmp_path)
    _write(tmp_path, "")
    w = load_workload("x")
    assert w.output == "none" and w.metric_prefix == "x"
    assert w.params == {} and w.timeout_s == 5


# ---- `compare:` declarations (what the report compares for a workload) --------

def test_every_workload_declares_its_own_figures():
    # mglru-aging used to be compared on lock counts only: its own figures must be declared.
    names = {w: [c.metric for c in load_workload(w).compared] for w in ("page-idle", "mglru-aging", "memcg-reclaim", "race")}
    assert {"mglru.vcpu_wall_s", "mglru.aging_passes", "mglru.aging_avg_s", "mglru.aging_max_s"} <= set(names["mglru-aging"])
    assert "phase.mark_memory_idle_total_s" in names["page-idle"]
    assert "reclaim.vcpu_pages_per_s" in names["memcg-reclaim"] and "race.lost_races" in names["race"]
    wall = next(c for c in load_workload("mglru-aging").compared if c.metric == "mglru.vcpu_wall_s")
    assert (wall.label, wall.unit, wall.better, wall.title()) == ("vCPU wall time", "s", "lower", "vCPU wall time (s)")


def test_declared_metrics_are_what_real_runs_print():
    # Every declared mglru./reclaim. name is one the real programs printed (fixtures captured from real runs).
    seen = {**parse_metric_lines(text("mglru-aging-baseline.txt"), "mglru"),
            **parse_metric_lines((FIX / "report" / "mglru-aging-timing-baseline.out").read_text(), "mglru"),
            **parse_metric_lines(text("memcg-reclaim-baseline.txt"), "reclaim")}
    for w in ("mglru-aging", "memcg-reclaim"):
        prefix = load_workload(w).metric_prefix
        own = [c.metric for c in load_workload(w).compared if c.metric.startswith(prefix + ".")]
        assert own and all(m in seen for m in own), [m for m in own if m not in seen]


@pytest.mark.parametrize("entry, where, words", [
    ("  - {metric: mglru.vcpu_wall_s, label: wall, unit: s, better: lowr}", "compare[1].better", ["'lowr'", "closest: 'lower'"]),
    ("  - {metric: lokc.mmu_lock.write.acquisitions, label: w, unit: '', better: lower}", "compare[1].metric", ["closest: 'lock'"]),
    ("  - {metric: mglru.x, label: x, unit: s, better: lower, colour: red}", "compare[1].colour", ["unknown field"]),
    ("  - {metric: mglru.x, label: x}", "compare[1]", ["missing unit, better"]),
    ("  - mglru.x", "compare[1]", ["expected a mapping"]),
])
def test_bad_compare_entries_name_file_line_and_field(tmp_path, monkeypatch, entry, where, words):
    monkeypatch.setattr(workloads, "WORKLOADS_DIR", tmp_path)
    _write(tmp_path, "output: metric-lines\nmetric_prefix: mglru\ncompare:\n"
                     "  - {metric: workload.seconds, label: wall, unit: s, better: lower}\n" + entry + "\n")
    with pytest.raises(UserError) as exc:
        load_workload("x")
    assert exc.value.message.startswith(f"{tmp_path / 'x.yaml'}:8: {where}"), exc.value.message
    assert all(w in exc.value.message for w in words), exc.value.message
    assert exc.value.hint


def test_compare_must_be_a_list(tmp_path, monkeypatch):
    monkeypatch.setattr(workloads, "WORKLOADS_DIR", tmp_path)
    _write(tmp_path, "compare: workload.seconds\n")
    with pytest.raises(UserError, match=r"x.yaml:4: compare: expected a list"):
        load_workload("x")
