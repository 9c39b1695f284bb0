"""Reports from results already on disk (nothing runs): re-render a run,
merge shards, compare two runs.  The CLI's merge / report / compare commands."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.reports.compare import default_pairs, run_headline, two_run_headline
from orchestrator.reports.crashes import crash_lines
from orchestrator.reports.junit import write_junit
from orchestrator.reports.kcidb import merge_kcidb
from orchestrator.reports.results import exit_status, load_run
from orchestrator.reports.summary import headline_terminal, render_markdown, write_headline_reports


@dataclass
class Rendered:
    headline: str  # for the terminal
    status: int  # the run's exit status (results.exit_status)
    cells: int


def _rerender(name: str, compare: list, variants: list[str], records: list, out: Path) -> Rendered:
    """junit.xml, summary.md, report.html from cell records."""
    out.mkdir(parents=True, exist_ok=True)
    h = run_headline(name, [r for r, _ in records], compare or default_pairs(variants), variants)
    write_junit(records, out / "junit.xml")
    write_headline_reports(h, records, out)
    return Rendered(headline_terminal(h), exit_status({r.status for r, _ in records}), len(records))


def rerender_run(results: Path, out: Path) -> Rendered:
    run = load_run(results)
    return _rerender(run.name, run.compare, run.variants, run.records, out)


def merge_runs(dirs: list[Path], out: Path) -> Rendered:
    records, variants = [], []
    name, compare = "merged", []
    for d in dirs:
        run = load_run(d)
        name, compare = run.name, run.compare or compare
        variants += [v for v in run.variants if v not in variants]
        records += run.records
    # One record per cell: a finished one wins over a "not run" placeholder of another shard.
    real = {r.key for r, d in records if d is not None}
    seen: set[str] = set()
    merged = []
    for rec, cell_dir in records:
        if rec.key in seen or (cell_dir is None and rec.key in real):
            continue
        seen.add(rec.key)
        merged.append((rec, cell_dir))
    rendered = _rerender(name, compare, variants, merged, out)
    merge_kcidb(dirs, out)  # the shards' kcidb.json, objects united by id
    return rendered


@dataclass
class Comparison:
    headline: str  # the headline and the kernel-report lines, for the terminal
    full: str  # the full comparison as markdown


def compare_runs(a_dir: Path, b_dir: Path, by: str) -> Comparison:
    a, b = load_run(a_dir), load_run(b_dir)
    h = two_run_headline(a, b, by)
    records = [r for r, _ in a.records + b.records]
    crashes = crash_lines([r for r, _ in a.records], [r for r, _ in b.records], str(a_dir), str(b_dir))
    crash_text = ("\n## Kernel reports (matched by fingerprint)\n\n" + "\n".join(crashes) + "\n") if crashes else ""
    return Comparison(headline_terminal(h) + crash_text, render_markdown(h, records) + crash_text)
