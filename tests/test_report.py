"""Reports from recorded cells (summary.md, report.html, JUnit, exit status),
on the cell.json files of real runs: tests/fixtures/race/run (race matrix,
evidence config, smp4, 3 repeats of baseline/v4/v4-fixed; see its README)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from orchestrator import cli
from orchestrator.reports.compare import group_of, run_headline
from orchestrator.reports.junit import planned_steps, write_junit
from orchestrator.reports.summary import render_html, render_markdown
from orchestrator.reports.results import ERROR, FAILED, NOT_RUN, PASSED, CellRecord, Step, exit_status, load_run
from orchestrator.matrix.cell_build import BuildOutcome, reused as _reused

ROOT = Path(__file__).resolve().parents[1]
RACE = ROOT / "tests" / "fixtures" / "race" / "run"
VARIANTS = ["baseline", "v4", "v4-fixed"]


def race_records() -> list[CellRecord]:
    return [CellRecord.load(d) for d in sorted((RACE / "cells").iterdir())]


def results_dir(tmp: Path, records: list[CellRecord], planned: list[CellRecord] | None = None, name: str = "race") -> Path:
    """A results directory as run-matrix leaves it: matrix.json (the planned cells) + cells/KEY/cell.json."""
    planned = records if planned is None else planned
    (tmp / "cells").mkdir(parents=True)
    (tmp / "matrix.json").write_text(json.dumps({"name": name, "cells": [r.cell for r in planned],
                                                 "compare": [["baseline", "v4"], ["v4", "v4-fixed"]]}))
    for r in records:
        r.save(tmp / "cells" / r.key)
    return tmp


def test_absent_metric_is_not_measured_never_zero():
    # The race cells' records carry no race.* metrics (race_report recomputes them from the trace):
    # the declared race metrics are "not measured", and no comparison row pretends they are 0.
    recs = race_records()
    h = run_headline("race", recs, [("baseline", "v4")], VARIANTS)
    assert {r.metric.metric for r in h.rows} >= {"lock.mmu_lock.write.acquisitions", "kprobe.age_gfn.hits"}
    assert not any(r.metric.metric.startswith("race.") for r in h.rows)
    assert {n.metric.metric for n in h.not_measured} == {"race.lost_races", "race.aging_passes", "race.walk_errors_age"}
    md = render_markdown(h, recs)
    assert "Not measured (left out): lost age-walk cmpxchg races" in md
    assert "| lost age-walk cmpxchg races |" not in md


def test_medians_are_per_side_of_real_records():
    recs = race_records()
    h = run_headline("race", recs, [("baseline", "v4")], VARIANTS)
    row = next(r for r in h.rows if r.metric.metric == "lock.mmu_lock.write.acquisitions")
    base = sorted(r.metrics["lock.mmu_lock.write.acquisitions"] for r in recs if r.cell["variant"] == "baseline")
    assert row.comparison.a.median == base[1] and row.comparison.a.n == 3
    assert f"{row.comparison.a.median / 1e3:.4g} K" in render_markdown(h, recs)


def test_workload_declares_what_is_compared():
    # Labels come from workloads/race.yaml, not from a list in the report.
    h = run_headline("race", race_records(), [("baseline", "v4")], VARIANTS)
    assert [r.metric.label for r in h.rows][:2] == ["mmu_lock write acquisitions", "mmu_lock read acquisitions"]


def test_headline_comes_first_and_unchanged_rows_are_collapsed():
    recs = race_records()
    h = run_headline("race", recs, [("baseline", "v4")], VARIANTS)
    md = render_markdown(h, recs)
    # the section the matrix exists for follows the verdict, then the full tables
    assert md.index("## Verdict") < md.index("## Lost races") < md.index("## Comparison") < md.index("## Cells")
    # kvm_test_age_gfn never fires (0 -> 0): it is in the collapsed block, not the main table.
    comparison = md[md.index("## Comparison"):md.index("## Cells")]
    details = comparison[comparison.index("<details>"):comparison.index("</details>")]
    assert "| kvm_test_age_gfn calls |" in details
    assert comparison.count("| kvm_test_age_gfn calls |") == 1
    assert "### Expectations per variant" in md and "| v4 | expect race: aging takes no write lock | 3 passed |" in md


def test_html_has_the_same_headline_then_plots_then_tables():
    recs = race_records()
    h = run_headline("race", recs, [("baseline", "v4")], VARIANTS)
    page = render_html(h, recs)
    assert page.index("<h2>Verdict</h2>") < page.index("<h2>Plots</h2>") < page.index("<h2>Comparison</h2>") < page.index("<h2>Cells</h2>")
    assert "expect race: aging takes no write lock" in page
    assert page.count("data:image/png;base64,") == 1  # one group: one figure, one panel per metric


def test_unfinished_cells_are_not_run_in_reports_and_exit_status(tmp_path):
    # Two finished cells on disk, seven planned: an interrupted run or a dead shard.
    recs = race_records()
    out = results_dir(tmp_path, recs[:2], planned=recs)
    run = load_run(out)
    statuses = [r.status for r, _ in run.records]
    assert statuses.count(PASSED) == 2 and statuses.count(NOT_RUN) == 7
    assert exit_status(set(statuses)) == 2
    h = run_headline(run.name, [r for r, _ in run.records], run.compare, run.variants)
    md = render_markdown(h, [r for r, _ in run.records])
    assert "**9 cell(s): 7 not run, 2 passed**" in md
    assert "### Not run (7)" in md
    assert '<span class="notrun">not run</span>' in render_html(h, [r for r, _ in run.records])


def test_an_incomplete_record_is_not_passed():
    rec = race_records()[0]
    rec.complete = False
    assert rec.status == NOT_RUN
    rec.steps.append(Step("interrupted", ERROR, 1.0, "run interrupted (Ctrl-C / SIGTERM) during workload race"))
    assert rec.status == ERROR


def test_exit_status_rule():
    assert exit_status({PASSED}) == 0
    assert exit_status({PASSED, FAILED, ERROR, NOT_RUN}) == 1
    assert exit_status({PASSED, ERROR}) == 2 and exit_status({PASSED, NOT_RUN}) == 2
    assert exit_status(set()) == 2


def test_merge_and_report_exit_like_run_matrix_for_errors_only(tmp_path, capsys):
    # A run with only errors: run-matrix exits 2 (exit_status); merge used to exit 1.
    recs = race_records()[:2]
    for r in recs:
        r.steps.append(Step("ssh", ERROR, 0.0, "connection lost"))
    src = results_dir(tmp_path / "s1", recs)
    assert cli.main(["merge", str(src), "--out", str(tmp_path / "m")]) == 2
    assert cli.main(["report", str(src)]) == 2
    assert "## Verdict" in capsys.readouterr().out
    assert (src / "report.html").is_file() and (src / "summary.md").is_file() and (src / "junit.xml").is_file()


def test_merge_keeps_a_finished_cell_over_a_not_run_placeholder(tmp_path):
    recs = race_records()[:2]
    a = results_dir(tmp_path / "a", recs[:1], planned=recs)  # shard a planned both, finished one
    b = results_dir(tmp_path / "b", recs[1:])
    assert cli.main(["merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 0
    assert len(JUnitXml.fromfile(str(tmp_path / "m" / "junit.xml"))) == 2


def _cases(path: Path) -> dict[str, dict[str, object]]:
    return {s.name: {c.name: (c.result[0] if c.result else None) for c in s} for s in JUnitXml.fromfile(str(path))}


def test_junit_keeps_verdict_testcases_when_an_earlier_step_fails(tmp_path):
    done = race_records()[0]  # baseline r1: every step ran
    cut = CellRecord.load(RACE / "cells" / done.key)
    i = next(i for i, s in enumerate(cut.steps) if s.name == "nested-kvm")
    cut.steps = cut.steps[:i] + [Step("nested-kvm", FAILED, 0.5, "KVM not usable in the guest: /dev/kvm missing"),
                                 Step("workload race", "skipped", 0.0, "no KVM in the guest")]
    cut.key = cut.key + "-cut"
    cut.complete = True
    write_junit([(done, None), (cut, None)], tmp_path / "junit.xml")
    cases = _cases(tmp_path / "junit.xml")
    full, short = cases[done.key], cases[cut.key]
    assert set(full) == set(short)  # the same testcases in both runs
    assert isinstance(short["nested-kvm"], Failure)
    for name in ("verdict race: path exercised", "verdict race: no kernel warnings", "expect race: aging takes mmu_lock for write"):
        assert isinstance(short[name], Skipped) and short[name].message == "not run: nested-kvm did not pass"


def test_planned_steps_match_what_a_real_run_recorded():
    for r in race_records():
        names = [s.name for s in r.steps]
        assert all(n in names for n in planned_steps(r.cell)), (r.key, planned_steps(r.cell))


def test_a_cell_that_never_started_keeps_one_not_run_testcase(tmp_path):
    recs = race_records()
    out = results_dir(tmp_path, recs[:1], planned=recs[:2])
    run = load_run(out)
    write_junit(run.records, tmp_path / "junit.xml")
    cases = _cases(tmp_path / "junit.xml")
    assert list(cases[recs[1].key]) == ["not run"] and isinstance(cases[recs[1].key]["not run"], Skipped)


def test_a_reused_kernel_counts_its_build_time_once():
    real = race_records()[0]
    steps = [s for s in real.steps if s.name.startswith(("apply", "config", "build"))]
    build = next(s for s in steps if s.name == "build")
    build.seconds = 360.0
    reused = _reused(BuildOutcome(steps, None, 360.0), "baseline.evidence.smp4.race~47d6a7.r1")
    again = next(s for s in reused.steps if s.name == "build")
    assert again.seconds == 0.0 and again.status == build.status
    assert again.output.startswith("0 s, built for cell baseline.evidence.smp4.race~47d6a7.r1")
    assert [s.name for s in reused.steps] == [s.name for s in steps] and build.seconds == 360.0


def test_groups_keep_every_axis_but_variant_and_repeat():
    cell = race_records()[0].cell
    g = group_of(cell)
    assert dict(g.fields) == {"config_set": "evidence", "machine": "smp4", "workload": "race",
                              "params": "agers=4 bytes=256K seconds=120 vcpus=2"}
    other = dict(cell, machine="default", variant="v4", repeat=2)
    assert group_of(other) != g and group_of(dict(cell, variant="v4", repeat=3)) == g


def test_report_command_rerenders_without_running(tmp_path):
    out = results_dir(tmp_path, race_records())
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "report", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("## Verdict")
    assert len(JUnitXml.fromfile(str(out / "junit.xml"))) == 9
    assert (out / "summary.md").read_text().startswith("# Matrix `race`: 9 cell(s)")


def test_report_on_a_directory_that_is_not_results(tmp_path):
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "report", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"error: {tmp_path} has no matrix.json" in res.stderr and "how to fix" in res.stderr


# ---- a real two-machine run (tests/fixtures/report/README.md) -----------------

SMOKE2 = ROOT / "tests" / "fixtures" / "report" / "smoke2"


def test_machine_shapes_are_separate_comparison_groups():
    # Before: report._values pooled by variant + workload, so default and smp4 cells became one n=2 sample.
    run = load_run(SMOKE2)
    recs = [r for r, _ in run.records]
    h = run_headline(run.name, recs, [("baseline", "v4-fixed")], run.variants)
    groups = {g.get("machine"): g for g in h.groups}
    assert set(groups) == {"default", "smp4"}
    for machine, g in groups.items():
        row = next(r for r in h.rows if r.group == g and r.metric.metric == "kprobe.age_gfn.hits")
        own = [r.metrics["kprobe.age_gfn.hits"] for r in recs if r.cell["machine"] == machine and r.cell["variant"] == "baseline"]
        assert row.comparison.a.n == 1 and row.comparison.a.median == own[0]
    md = render_markdown(h, recs)
    assert "### baseline → v4-fixed · config set evidence · machine default · page-idle (bytes=16M vcpus=1)" in md
    assert "### baseline → v4-fixed · config set evidence · machine smp4 · page-idle (bytes=16M vcpus=1)" in md
    assert render_html(h, recs).count("data:image/png;base64,") == 2  # one figure per group


def test_one_repeat_calls_nothing_but_shows_the_medians():
    run = load_run(SMOKE2)
    recs = [r for r, _ in run.records]
    h = run_headline(run.name, recs, [("baseline", "v4-fixed")], run.variants)
    assert not any(r.called for r in h.rows)
    md = render_markdown(h, recs)
    verdict = md[:md.index("## Comparison")]
    assert "no change called: 1 repeat(s) per side" in verdict
    write = next(r for r in h.rows if r.metric.metric == "lock.mmu_lock.write.acquisitions" and r.group.get("machine") == "default")
    assert write.comparison.b.median == 13 and write.comparison.a.median > 100_000  # v4-fixed: the read lock


def test_junit_counts_each_kernel_build_once():
    run = load_run(SMOKE2)
    builds = {r.key: next(s for s in r.steps if s.name == "build") for r, _ in run.records}
    reused = {k: s for k, s in builds.items() if ".smp4." in k}
    assert all(s.seconds == 0 and "built for cell " + k.replace(".smp4.", ".default.") in s.output for k, s in reused.items())
    assert all(s.seconds > 0 for k, s in builds.items() if k not in reused)
