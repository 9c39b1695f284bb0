"""A bisection's outputs, next to its bisect.json: bisect.md (the first bad
patch, the evidence at it and before it, every step, the reproducer),
junit.xml (a testcase per step) and kcidb.json (each prefix a checkout, its
build, and the tests of its runs)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from junit_xml import TestCase, TestSuite, to_xml_report_string

from orchestrator.atomic import write_text_atomic
from orchestrator.bisect.checks import BAD, GOOD, SKIP
from orchestrator.progress import fmt_duration
from orchestrator.reports.kcidb import CheckoutInput, KcidbOptions, kcidb_data
from orchestrator.reports.results import CellRecord, write_json_atomic

if TYPE_CHECKING:
    from orchestrator.bisect.run import Bisection, BisectResult, StepResult


def _patch_line(p: dict) -> str:
    mid = f", Message-Id <{p['message_id'].strip('<>')}>" if p.get("message_id") else ""
    return f"patch {p['number']}: \"{p['subject']}\" by {p['author'] or 'unknown'}{mid} ({p['name']})"


def _last_patch(r: "BisectResult", k: int) -> str:
    return "(bare source)" if k == 0 else r.patches[k - 1]["subject"]


def _excerpt(b: "Bisection", step: "StepResult", verdict: str) -> str:
    """The failing (or passing) evidence of a step: its verdict line and the record's excerpt."""
    for run, v, ev in zip(step.runs, step.votes, step.evidence):
        if v != verdict:
            continue
        rec = b.record(run)
        text = ev
        if rec is not None:
            bad = next((s for s in rec.steps if s.status in ("failed", "error") and s.excerpt), None)
            if verdict == BAD and bad is not None:
                text += f"\n\n{bad.name}: {bad.message}\n{bad.excerpt[-2500:]}"
        return f"{text}\n(run: {run['dir']})"
    return "(none)"


def markdown(b: "Bisection") -> str:
    r = b.result
    out = [f"# Bisection of `{r.check}`", ""]
    t = r.target
    out.append(f"Series `{t['series']}`{' variant ' + t['variant'] if t['variant'] else ''}, "
               f"{len(r.patches)} patches; cell {t['config_set']} / {t['machine']} / {t['workload']} {t['params'] or ''}; "
               f"repeats {b.req.repeats} ({b.req.mode}).")
    out.append("")
    if r.state == "found" and r.first_bad is not None:
        p = r.patches[r.first_bad - 1]
        out.append(f"**First bad: {_patch_line(p)}**")
        verified = {True: "verified: the prefix before it passes again and the prefix at it fails again",
                    False: "NOT verified: " + r.note, None: "not verified (--no-verify)"}[r.verified]
        out += ["", f"{verified}.", ""]
        bad = next((s for s in r.steps if s.prefix == r.first_bad and s.verdict == BAD), None)
        good = next((s for s in r.steps if s.prefix == r.first_bad - 1 and s.verdict == GOOD), None)
        out += ["## Failing at prefix %d" % r.first_bad, "", "```", _excerpt(b, bad, BAD) if bad else "(none)", "```", ""]
        out += ["## Passing at prefix %d" % (r.first_bad - 1), "", "```", _excerpt(b, good, GOOD) if good else "(none)",
                "```", ""]
    else:
        out += [f"**No single first bad patch: {r.state}.** {r.note}", ""]
    if r.skipped:
        out += ["Untestable prefixes (skipped, as `git bisect skip`): " + ", ".join(
            f"{k} ({_last_patch(r, k)})" for k in r.skipped), ""]
    out += ["## Steps", "", "| # | phase | prefix | last patch | verdict | runs (bad/good/skip) | time | evidence |",
            "|---|---|---|---|---|---|---|---|"]
    for i, s in enumerate(r.steps, 1):
        counts = "/".join(str(s.votes.count(x)) for x in (BAD, GOOD, SKIP))
        took = fmt_duration(s.run_seconds) + (" (reused)" if s.reused else "")
        ev = s.evidence[-1].replace("|", "\\|").replace("\n", " ")[:140]
        out.append(f"| {i} | {s.phase} | {s.prefix} | {_last_patch(r, s.prefix)[:60]} | {s.verdict} | {counts} | {took} | {ev} |")
    searched = [s for s in r.steps if s.phase != "exhaustive"]
    answer = [s for s in searched if not s.phase.startswith("verify")]
    out += ["", f"{len(answer)} steps to the answer, their runs {fmt_duration(sum(s.run_seconds for s in answer))}; "
            f"+{len(searched) - len(answer)} to verify, all together {fmt_duration(sum(s.run_seconds for s in searched))}"
            f" (times are the runs' own: build + boot + workload; a reused run counts with the time it took). "
            f"This invocation took {fmt_duration(r.wall_s)}."]
    if r.exhaustive_s is not None:
        out.append(f"On one basis (each prefix's incremental build as measured when it was built, plus every run's "
                   f"boot and workload; waits for the build lock left out): the bisection to its answer "
                   f"{fmt_duration(work(answer))}, with verification {fmt_duration(work(searched))}; building and "
                   f"running every prefix {b.req.good}..{b.bad} once {fmt_duration(r.exhaustive_s)}.")
    out += ["", "## Reproduce", "", "```", r.reproducer, "```", ""]
    return "\n".join(out)


def work(steps: list["StepResult"]) -> float:
    """Build + run seconds of these steps: a prefix's build counted once, at what it cost when it was built."""
    seen: set[int] = set()
    total = 0.0
    for s in steps:
        for x in s.runs:
            if s.prefix not in seen:
                total += x["build_cost_s"]
                seen.add(s.prefix)
            total += max(0.0, x["seconds"] - x["build_s"])
    return total


def junit(b: "Bisection") -> str:
    r = b.result
    cases = []
    for i, s in enumerate(r.steps, 1):
        tc = TestCase(f"step {i}: prefix {s.prefix} ({s.phase})", classname=f"bisect.{b.req.check.slug}",
                      elapsed_sec=s.run_seconds, stdout="\n".join(f"run {x['dir']}: {v}: {e}" for x, v, e in
                                                                   zip(s.runs, s.votes, s.evidence)))
        if s.verdict == BAD:
            tc.add_failure_info(message=f"prefix {s.prefix} fails {r.check}: {s.evidence[-1][:300]}",
                                output=f"reproduce: {r.reproducer}")
        elif s.verdict == SKIP:
            tc.add_skipped_info(message=f"untestable: {s.evidence[-1][:300]}")
        cases.append(tc)
    verdict = TestCase("first bad patch", classname=f"bisect.{b.req.check.slug}")
    if r.state == "found" and r.first_bad is not None:
        verdict.stdout = _patch_line(r.patches[r.first_bad - 1])
    elif r.state in ("interrupted", "running"):
        verdict.add_skipped_info(message=r.note or "not finished")
    else:
        verdict.add_error_info(message=f"{r.state}: {r.note}")
    cases.append(verdict)
    props = {"check": r.check, "reproducer": r.reproducer, "state": r.state}
    return to_xml_report_string([TestSuite(f"bisect {r.check}", cases, properties=props)], prettyprint=True)


def kcidb(b: "Bisection", opts: KcidbOptions | None = None) -> dict:
    """Each tested prefix: a checkout (base + its patches), a build, the tests of its runs."""
    opts = opts or KcidbOptions()
    r = b.result
    checkouts, builds, records = {}, {}, []
    prefixes = sorted({s.prefix for s in r.steps})
    for k in prefixes:
        variant = f"{b.runner.label}@{k}"
        patches = [(p.name, p.text.encode()) for p in b.runner.patches[:k]]
        built = b.runner.builds.get(k)
        vb = built.build if built is not None else None
        source = dict(vb.source.identity, base_commit=vb.source.base_commit) if vb is not None else {
            "spec": b.req.target.source or "default"}
        runs = [x for s in r.steps if s.prefix == k for x in s.runs]
        recs = [(rec, b.req.out / x["dir"]) for x in runs if (rec := b.record(x)) is not None]
        build_steps = [s for s in (recs[0][0].steps if recs else [])
                       if s.name in ("series", "config verification", "build") or s.name.startswith("apply ")]
        applied = not any(s.name.startswith("apply ") and s.status == "failed" for s in build_steps)
        checkouts[variant] = CheckoutInput(variant, source, patches, applied, b.dir / "kcidb-files" / f"prefix-{k}")
        meta = dict(vb.kernel.metadata, out_dir=str(vb.kernel.out_dir), cache_hit=vb.kernel.cache_hit) if vb else None
        start = min((rec.started for rec, _ in recs), default=0.0) or 0.0
        builds[(variant, b.req.target.config_set)] = (build_steps, meta, start, sum(s.seconds for s in build_steps))
        if not b.req.check.build_only:
            records += [(_unique(rec, x), d) for (rec, d), x in zip(recs, runs)]
    return kcidb_data(opts, checkouts, builds, records)


def _unique(rec: CellRecord, run: dict) -> CellRecord:
    """The verify runs reuse a prefix's cell key: the run directory makes the test ids unique."""
    import dataclasses
    return dataclasses.replace(rec, key=f"{rec.key}.{Path(run['dir']).name}")


def write_reports(b: "Bisection") -> None:
    write_text_atomic(b.dir / "bisect.md", markdown(b))
    write_text_atomic(b.dir / "junit.xml", junit(b))
    write_json_atomic(b.dir / "kcidb.json", kcidb(b))


def summary_line(result: dict, rel: str) -> str:
    """One line for a run's summary.md: what a bisection found, linked to its report."""
    if result.get("state") == "found":
        p = result["patches"][result["first_bad"] - 1]
        return f"- `{result['check']}`: first bad {_patch_line(p)} ([report]({rel}))"
    return f"- `{result['check']}`: {result.get('state')} ({result.get('note', '')}) ([report]({rel}))"
