"""Between runs (reports/replication.py) on seeded synthetic runs written as
results directories, and on the records of two real runs: runs that agree
pool to a narrower interval and call a shared change; runs that differ by
more than their own noise get a named between-run variance, a widened
interval, and no call; each run weighs in the pool as much as its printed
interval says (the real records' artefact calls are gone, and the committed
between-run report is what the code renders from them); the family-wise
false-call rate of pooled two-run A/A reports stays at alpha."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from orchestrator.reports import replication as rep
from orchestrator.reports.results import PASSED, CellRecord, Step

PARAMS = {"vcpus": 2}
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
REAL_LABELS = ["study", "run1"]  # as `orchestrator between-runs study run1` names them


def write_run(directory: Path, rng: np.random.Generator, shift: float, noise: float = 0.05, n: int = 6) -> Path:
    """A results directory: baseline and v4-fixed timing cells of mglru-aging with the
    workload's avg aging pass, v4-fixed's multiplied by exp(shift)."""
    cells = []
    for variant, factor in (("baseline", 1.0), ("v4-fixed", math.exp(shift))):
        for r in range(1, n + 1):
            cell = {"key": f"{variant}.timing.default.mglru-aging.r{r}", "variant": variant, "config_set": "timing",
                    "machine": "default", "workload": "mglru-aging", "params": PARAMS, "repeat": r}
            rec = CellRecord(cell["key"], cell, "k", "", [Step("workload mglru-aging", PASSED, 1.0)],
                             {"mglru.aging_avg_s": 0.03 * factor * math.exp(rng.normal(0, noise))}, True)
            rec.save(directory / "cells" / cell["key"])
            cells.append(cell)
    (directory / "matrix.json").write_text(json.dumps({"name": "t", "cells": cells, "compare": [["baseline", "v4-fixed"]]}))
    return directory


def test_runs_that_agree_pool_and_call_a_shared_change(tmp_path):
    rng = np.random.default_rng(1)
    dirs = [write_run(tmp_path / f"run{i}", rng, shift=math.log(1.15)) for i in (1, 2)]
    [c] = rep.pool_runs([rep.load_run(d) for d in dirs], ["run1", "run2"])
    assert c.overlap and c.called and c.verdict == "up"
    assert c.tau < 0.02  # no between-run variance to speak of
    assert c.se <= math.hypot(min(e.se for e in c.runs), c.tau) + 1e-12  # widened by tau, never more
    text = rep.between_runs(dirs)
    assert "All 1 comparison(s) have overlapping per-run intervals" in text and "| up |" in text


def test_runs_that_differ_name_the_between_run_variance_and_call_nothing(tmp_path):
    # The same kernels, but run 2's v4-fixed was 25% slower (another boot, another host state).
    rng = np.random.default_rng(2)
    dirs = [write_run(tmp_path / "run1", rng, shift=0.0), write_run(tmp_path / "run2", rng, shift=math.log(1.25))]
    [c] = rep.pool_runs([rep.load_run(d) for d in dirs], ["run1", "run2"])
    assert not c.overlap
    assert c.tau_pct > 10  # named: the runs differ by more than their own noise
    lo, hi = c.ci_pct
    assert lo < 0 < hi and not c.called  # widened by it: the second run's change does not survive
    text = rep.between_runs(dirs)
    assert "**0 of 1 comparison(s) have overlapping per-run intervals; 1 do not**" in text
    assert "With two runs tau rests on one difference" in text


def _aa_reports(rng: np.random.Generator, reports: int, m: int, n: int, counts: bool) -> np.ndarray:
    """(reports, m, 2 runs, n) A and B values on the log scale, both sides from one distribution."""
    if counts:  # integer counts around 30: ties, as aging-pass and page counts have
        return tuple(np.log(rng.poisson(30, (reports, m, 2, n)).clip(1).astype(float)) for _ in "ab")
    return tuple(rng.normal(0, 0.1, (reports, m, 2, n)) for _ in "ab")


def _metric():
    from orchestrator.workload.definitions import ComparedMetric
    return ComparedMetric("m", "m", "", "lower", 10)


def _judged(a: np.ndarray, b: np.ndarray) -> list[list[rep.Pooled]]:
    """The report's own path, vectorised up to the verdicts: per-run effects with
    standard errors from their intervals, DerSimonian-Laird, the t reference, then
    judge_pooled (Holm, same direction) on each report."""
    shift, se, _, _ = rep.run_effects(a, b)
    est, pse, tau = rep.dersimonian_laird(shift, se)
    n = a.shape[-1]
    p = rep.pooled_p(est, pse, 2 * (2 * n - 2))
    out = []
    for r in range(a.shape[0]):
        pooled = [rep.Pooled(None, "a", "b", _metric(), True,
                             tuple(rep.RunEffect(str(k), float(shift[r, i, k]), float(se[r, i, k]), None, (n, n))
                                   for k in range(2)),
                             float(tau[r, i]), float(est[r, i]), float(pse[r, i]), float(p[r, i]))
                  for i in range(a.shape[1])]
        out.append(rep.judge_pooled(pooled))
    return out


def test_two_run_aa_reports_call_at_most_alpha_family_wise():
    # 1000 seeded reports of 26 comparisons (the documented between-run report's family),
    # two runs of 5 v 5 each, no between-run variance; half normal spreads, half tied counts.
    rng = np.random.default_rng(3)
    rates = []
    for counts in (False, True):
        a, b = _aa_reports(rng, 500, 26, 5, counts)
        rates.append(sum(any(c.called for c in report) for report in _judged(a, b)) / 500)
    assert max(rates) <= 0.05, rates
    # A normal reference instead of t calls too often at these sizes: the t is needed.
    a, b = _aa_reports(np.random.default_rng(3), 500, 26, 5, False)
    shift, se, _, _ = rep.run_effects(a, b)
    est, pse, _ = rep.dersimonian_laird(shift, se)
    p_normal = 2 * rep.sps.norm.sf(np.abs(est) / pse)
    same = (shift > 0).all(-1) | (shift < 0).all(-1)
    assert ((p_normal < 0.05 / 26) & same).any(-1).mean() > 0.05


def test_two_runs_with_a_real_shift_are_called():
    # +20% at 10% noise, two runs of 5 v 5 each, judged alone: called in >= 80% of 500 seeded pairs of runs.
    rng = np.random.default_rng(5)
    a = rng.normal(0, 0.1, (500, 1, 2, 5))
    b = rng.normal(math.log(1.2), 0.1, (500, 1, 2, 5))
    verdicts = [report[0].verdict for report in _judged(a, b)]
    assert sum(v == "up" for v in verdicts) / 500 >= 0.8
    assert "down" not in verdicts


def test_a_run_weighs_as_much_as_its_interval_says():
    # The standard error read back from a 5 v 5 Moses interval (coverage 96.8%) gives back
    # that interval as +-z se, and a pooled interval is never narrower than the runs together allow.
    rng = np.random.default_rng(6)
    a, b = rng.normal(0, 0.1, (200, 5)), rng.normal(0, 0.1, (200, 5))
    shift, se, lo, hi = rep.run_effects(a, b)
    z = rep.sps.norm.ppf(0.5 + rep.moses_coverage(5, 5) / 2)
    assert rep.moses_coverage(5, 5) == pytest.approx(1 - 2 * 4 / 252)  # P(U <= 2) = 4/252
    assert np.allclose(hi - lo, 2 * z * se)
    # Over many A/A runs the interval-derived error matches the shift's real spread (within 20%).
    a, b = rng.normal(0, 0.1, (20000, 5)), rng.normal(0, 0.1, (20000, 5))
    shift, se, _, _ = rep.run_effects(a, b)
    assert float(np.median(se)) == pytest.approx(float(shift.std()), rel=0.2)


def _fixture_run(name: str) -> rep.RunResults:
    records = []
    for data in json.loads((FIXTURES / name / "cells.json").read_text()):
        steps = [Step(**s) for s in data.pop("steps")]
        records.append((CellRecord(steps=steps, **data), None))
    return rep.RunResults(FIXTURES / name, name, [("baseline", "v4-fixed"), ("baseline", "baseline-aa")],
                          ["baseline", "v4-fixed", "baseline-aa"], records)


@pytest.fixture(scope="module")
def real_pooled() -> list[rep.Pooled]:
    """The documented study (2026-12-01) and the CI-sized run of 2026-12-05, as recorded."""
    return rep.pool_runs([_fixture_run("aging-study"), _fixture_run("aging-study-ci-2026-12-05")], REAL_LABELS)


def _find(pooled: list[rep.Pooled], metric: str) -> rep.Pooled:
    """Q3 (reclaim, zram) at 2 inner vCPUs, baseline -> v4-fixed."""
    [c] = [c for c in pooled if c.b == "v4-fixed" and c.metric.metric == metric and "zram=512M" in c.group.label]
    return c


def test_real_runs_artefact_calls_are_gone(real_pooled):
    # Q3 at 2 inner vCPUs: pages reclaimed (memcg) +1.8% (-2.3..+5.1) and +1.4% (-8.2..+9.2), aging
    # pass max -7.3% (-21.0..+14.6) and -17.2% (-74.6..+214.7): the old pooled errors (from log values
    # divided again by their log median) made these "up" (+1.5..+2.0%) and "down" (-11.5..-2.9%).
    assert len(real_pooled) == 26 and all(c.overlap for c in real_pooled)
    assert not [c for c in real_pooled if c.called]
    for metric in ("mglru.memcg_pgsteal", "mglru.aging_max_s"):
        c = _find(real_pooled, metric)
        lo, hi = c.ci_pct
        assert lo < 0 < hi, (metric, c.ci_pct)
        # no narrower than the narrowest run's interval shrunk by sqrt(2), the most two agreeing runs can give
        narrowest = min(e.ci_pct[1] - e.ci_pct[0] for e in c.runs)
        assert hi - lo >= narrowest / math.sqrt(2) * 0.9
    memcg = _find(real_pooled, "mglru.memcg_pgsteal")
    assert [tuple(round(x, 1) for x in e.ci_pct) for e in memcg.runs] == [(-2.3, 5.1), (-8.2, 9.2)]
    for c in real_pooled:
        for e in c.runs:  # every run's error is the one its printed interval stands for
            lo, hi = (math.log1p(x / 100) for x in e.ci_pct) if c.logged else (x / 100 for x in e.ci_pct)
            assert float(rep.interval_se(lo, hi, *e.n)) == pytest.approx(e.se, rel=1e-6)


def test_committed_between_run_report_is_what_the_code_renders(real_pooled):
    committed = (ROOT / "docs" / "aging-study" / "ci-run-2026-12-05" / "between-runs.md").read_text()
    assert rep.between_runs_markdown(real_pooled, REAL_LABELS) == committed


def test_cli_between_runs(tmp_path, capsys):
    from orchestrator.cli import main
    rng = np.random.default_rng(4)
    dirs = [write_run(tmp_path / f"r{i}", rng, 0.0) for i in (1, 2)]
    assert main(["between-runs", *map(str, dirs), "--markdown", str(tmp_path / "b.md")]) == 0
    out = capsys.readouterr().out
    assert "## Between runs" in out and "MGLRU aging pass average" in out and (tmp_path / "b.md").read_text() in out
    assert main(["between-runs", str(dirs[0])]) != 0
    assert "at least two results directories" in capsys.readouterr().err
