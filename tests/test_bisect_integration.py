"""Bisection on real prefix builds and real boots (tests/fixtures/bisect-series,
see its README): the planted WARN in kvm_age_gfn, the lost write-lock
expectation and the build break are each found; an untestable prefix is
skipped and the right patch still found; a flaky check is outvoted by repeats.

Cost: the runs live in one directory shared by every check on the `warn`
series, so the expectation and flaky bisections reuse the WARN bisection's
runs (what each test adds is asserted); the `build` series shares its first
three prefixes' builds with `warn` (same commits)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from junitparser import JUnitXml

from orchestrator.bisect.checks import BAD, GOOD, Verdict, parse_check
from orchestrator.bisect.run import BisectRequest, Bisection
from orchestrator.bisect.runner import Target

pytestmark = pytest.mark.integration
SERIES = Path(__file__).resolve().parent / "fixtures" / "bisect-series"
PARAMS = (("bytes", "4M"), ("vcpus", "1"))
WARN = "crash:WARNING in kvm_age_gfn"


def target(name: str) -> Target:
    return Target(None, SERIES / name, None, "evidence", "default", "page-idle", PARAMS)


def runs_done(out: Path) -> set[str]:
    return {p.name for p in (out / "runs").glob("*") if (p / "run.json").is_file()}


@pytest.fixture(scope="module")
def warn_out(tmp_path_factory, kernel_source) -> Path:
    return tmp_path_factory.mktemp("bisect") / "warn"


@pytest.fixture(scope="module")
def warn_bisection(warn_out):
    b = Bisection(BisectRequest(target("warn"), parse_check(WARN), warn_out))
    return b, b.run()


def test_planted_warn_is_found_verified_and_reported(warn_bisection, warn_out):
    b, r = warn_bisection
    assert r.state == "found" and r.first_bad == 4, r.note
    assert r.verified is True
    phases = [(s.phase, s.prefix, s.verdict) for s in r.steps]
    assert phases[:2] == [("confirm-good", 0, GOOD), ("confirm-bad", 7, BAD)]
    search = [p for p in phases if p[0] == "search"]
    assert len(search) <= 3  # log2(7) rounded up
    assert phases[-2:] == [("verify-good", 3, GOOD), ("verify-bad", 4, BAD)]
    # the verify steps are fresh runs, not the search's records
    assert {x["repeat"] for s in r.steps if s.phase.startswith("verify") for x in s.runs} == {1}
    md = (b.dir / "bisect.md").read_text()
    assert "patch 4: \"KVM: arm64: warn on empty ranges in kvm_age_gfn()\"" in md
    assert "Ada Tester <ada@example.org>" in md and "bisect-demo-04@example.org" in md
    assert "WARNING in kvm_age_gfn" in md.split("## Failing at prefix 4", 1)[1].split("## Passing", 1)[0]
    assert "orchestrator bisect --series" in md and "--check 'crash:WARNING in kvm_age_gfn'" in md
    xml = JUnitXml.fromfile(str(b.dir / "junit.xml"))
    cases = [c for suite in xml for c in suite]
    assert len(cases) == len(r.steps) + 1  # a testcase per step + the answer
    failed = [c.name for c in cases if c.result and c.result[0]._tag == "failure"]
    assert any("prefix 7" in n for n in failed) and not any("prefix 0 " in n for n in failed)


def test_kcidb_of_the_bisection_validates(warn_bisection):
    from kcidb_io.schema import V5_3
    b, r = warn_bisection
    data = json.loads((b.dir / "kcidb.json").read_text())
    assert V5_3.validate(data) is data
    prefixes = {s.prefix for s in r.steps}
    assert len(data["checkouts"]) == len(prefixes) == len(data["builds"])
    assert any(c.get("message_id") == "bisect-demo-01@example.org" for c in data["checkouts"])
    assert any(t["status"] == "FAIL" and t["path"].startswith("verdict") for t in data["tests"])


def test_lost_expectation_is_found_from_the_same_runs(warn_bisection, warn_out):
    before = runs_done(warn_out)
    check = parse_check("expect:baseline:aging takes mmu_lock for write")
    r = Bisection(BisectRequest(target("warn"), check, warn_out, verify=False)).run()
    assert r.state == "found" and r.first_bad == 5, r.note  # 05: relax locking for kvm_age_gfn
    assert runs_done(warn_out) == before, "every prefix this search needed was run by the WARN bisection"
    bad = next(s for s in r.steps if s.prefix == 5)
    assert "lock.mmu_lock.write.acquisitions" in bad.evidence[0]


def test_flaky_warn_is_outvoted_by_repeats(warn_bisection, warn_out):
    """Injected: the first run at prefix 4 reports no WARN (a WARN that did not
    fire in that boot; the planted one always fires, so the flake is injected)."""
    def flaky(k: int, repeat: int, v: Verdict) -> Verdict:
        return Verdict(GOOD, "injected: no WARN in this run") if (k, repeat) == (4, 0) else v
    one = Bisection(BisectRequest(target("warn"), parse_check(WARN), warn_out, good=3, bad=5, verify=False), flaky).run()
    assert one.first_bad == 5, "with one run the flake misleads the search"
    b = Bisection(BisectRequest(target("warn"), parse_check(WARN), warn_out, repeats=3, mode="majority",
                                good=3, bad=5, verify=False), flaky)
    r = b.run()
    assert r.state == "found" and r.first_bad == 4, r.note
    at4 = next(s for s in r.steps if s.prefix == 4)
    assert at4.votes == [GOOD, BAD, BAD] and at4.verdict == BAD
    assert "| 1/2/0 |" not in (b.dir / "bisect.md").read_text() and "| 2/1/0 |" in (b.dir / "bisect.md").read_text()


def test_build_break_is_found_across_an_interruption(kernel_source, tmp_path):
    """Ctrl-C raises KeyboardInterrupt in the main thread (proc's handler ends
    make and QEMU first); here it is raised at the third step's verdict.  The
    same bisection again replays the two finished runs from disk and goes on."""
    req = BisectRequest(target("build"), parse_check("build"), tmp_path / "build", verify=False)
    seen = []

    def interrupt(k: int, repeat: int, v: Verdict) -> Verdict:
        seen.append(k)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return v
    b = Bisection(req, interrupt)
    with pytest.raises(KeyboardInterrupt):
        b.run()
    saved = json.loads((b.dir / "bisect.json").read_text())
    assert saved["state"] == "interrupted" and [(s["prefix"], s["verdict"]) for s in saved["steps"]] == [(0, GOOD), (4, BAD)]
    assert "interrupted" in (b.dir / "bisect.md").read_text()
    finished = {d: (tmp_path / "build" / "runs" / d / "run.json").read_text() for d in runs_done(tmp_path / "build")}
    r = Bisection(req).run()
    assert r.state == "found" and r.first_bad == 4, r.note
    assert [s.reused for s in r.steps[:2]] == [True, True], "the finished runs came from disk"
    assert all((tmp_path / "build" / "runs" / d / "run.json").read_text() == t for d, t in finished.items())
    bad = next(s for s in r.steps if s.prefix == 4)
    assert "range_start" in bad.evidence[0]


def test_untestable_prefix_is_skipped_and_the_warn_still_found(kernel_source, tmp_path):
    r = Bisection(BisectRequest(target("skip"), parse_check(WARN), tmp_path / "skip", verify=False)).run()
    assert r.state == "found" and r.first_bad == 5, r.note
    assert r.skipped == [3]
    skipped = next(s for s in r.steps if s.prefix == 3)
    assert skipped.verdict == "skip" and "does not build" in skipped.evidence[0]



def test_a_runs_failing_cell_is_bisected_and_linked_from_its_summary(kernel_source, tmp_path):
    """./run-matrix on a series that does not build, then `orchestrator bisect RESULTS`."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=root, capture_output=True,
                              text=True, timeout=1800)
    results = tmp_path / "run"
    ran = cli("run-matrix", "--matrix", str(SERIES / "build-matrix.yaml"), "--results", str(results))
    assert ran.returncode == 1, ran.stderr[-2000:]
    bis = cli("bisect", str(results), "--no-verify")
    assert bis.returncode == 0, bis.stderr[-2000:]
    report = results / "bisect" / "build-break.evidence.default.page-idle" / "build" / "bisect.md"
    assert "**First bad: patch 4:" in report.read_text()
    summary = (results / "summary.md").read_text()
    assert "## Bisections" in summary and "first bad patch 4" in summary
    assert "(bisect/build-break.evidence.default.page-idle/build/bisect.md)" in summary
    assert cli("report", str(results)).returncode == 1  # re-rendered: the run failed, the section stays
    assert "## Bisections" in (results / "summary.md").read_text()
