"""Human reports from cell records: summary.md (also a CI job summary), a
self-contained report.html with plots, and the same headline for the terminal.

Pure over the records: compare.py decides what is compared and called, this
module only renders it.  Order is the reader's: the headline (what changed,
the checks per variant, failures with reproducers, cells that did not run),
then plots, then the full tables.
"""
from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import markdown as markdown_lib

from orchestrator.atomic import write_bytes_atomic, write_text_atomic
from orchestrator.reports.aging import aging_figure, aging_section
from orchestrator.reports.crashes import crash_section
from orchestrator.reports.compare import Group, Headline, Row, default_pairs, run_headline
from orchestrator.reports.numfmt import fmt
from orchestrator.reports.race import race_section
from orchestrator.reports.run_order import order_section
from orchestrator.reports.suite_tests import suite_section
from orchestrator.reports.results import ERROR, FAILED, NOT_RUN, PASSED, CellRecord
from orchestrator.reports.stats import MIN_REPEATS

if TYPE_CHECKING:  # a type only: reports never import the matrix package at run time
    from orchestrator.matrix.spec import Matrix

# Sections other modules contribute: records -> markdown, or None when they
# have nothing to say about this run.  Adding one is one line here.
EXTRA_SECTIONS: list[Callable[[list[CellRecord]], str | None]] = [suite_section, crash_section, race_section, aging_section,
                                                                order_section]
# Figures those sections refer to: records -> (file name, PNG bytes) or None.
# Each is written next to summary.md and embedded in report.html.
EXTRA_FIGURES: list[Callable[[list[CellRecord]], tuple[str, bytes] | None]] = [aging_figure]

STATUS_ORDER = (FAILED, ERROR, NOT_RUN, PASSED)
NOT_MEASURED = "not measured"
MAX_LISTED = 20  # cells listed by name in the verdict; the Cells table has them all


def _counts_text(counts: dict[str, int]) -> str:
    order = {s: i for i, s in enumerate(STATUS_ORDER)}
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: order.get(kv[0], 9))) or "no cells"


def _side(c, unit: str) -> str:
    return f"{fmt(c.median, unit)} ({fmt(c.minimum)}–{fmt(c.maximum)}, n={c.n})"


def _change(row: Row) -> str:
    c = row.comparison
    return f"{c.change_pct:+.1f}%" if c.change_pct is not None else "–"


def _ci(row: Row) -> str:
    c = row.comparison
    return f"{c.ci_pct[0]:+.1f}% .. {c.ci_pct[1]:+.1f}%" if c.ci_pct else "–"


def _verdict(row: Row) -> str:
    v = row.comparison.verdict
    return f"{v} ({row.judgement})" if row.judgement else v


def _noise(row: Row) -> str:
    n = row.comparison.noise_pct
    return f"{n:.1f}%" if n is not None else "–"


def _detectable(row: Row) -> str:
    d = row.comparison.detectable_pct
    return "–" if d is None else "none" if d == float("inf") else f"{d:.0f}%"


def _p(row: Row) -> str:
    c = row.comparison
    if c.p_value is None:
        return "–"
    return f"{c.p_value:.3g} ({c.p_adjusted:.3g})" if c.p_adjusted is not None else f"{c.p_value:.3g}"


HEADLINE_COLS = ["metric", "A", "B", "change", "95% CI", "verdict"]
FULL_COLS = ["metric", "A", "B", "change", "95% CI", "noise (sd)", "detectable", "p (Holm)", "verdict"]


def _headline_cells(row: Row) -> list[str]:
    u = row.metric.unit
    return [row.metric.title(), _side(row.comparison.a, u), _side(row.comparison.b, u), _change(row), _ci(row), _verdict(row)]


def _full_cells(row: Row) -> list[str]:
    cells = _headline_cells(row)
    return cells[:5] + [_noise(row), _detectable(row), _p(row), cells[5]]


def _not_measured_text(h: Headline, group: Group, a: str, b: str) -> str:
    names = [n.metric.label for n in h.not_measured if (n.group, n.a, n.b) == (group, a, b)]
    return f"Not measured (left out): {', '.join(names)}" if names else ""


def _first_problem(r: CellRecord) -> str:
    bad = next((s for s in r.steps if s.status in (FAILED, ERROR)), None)
    if bad is not None:
        return f"{bad.name}: {bad.message}"
    if r.status == NOT_RUN:
        return next((s.message for s in r.steps if s.name == "not run"), "") or "did not finish"
    return ""


# ---- the headline: one structure, three renderings ---------------------------

def _blocks(h: Headline) -> list[tuple]:
    """The headline as blocks: ("h", text) | ("p", text) | ("table", head, rows) | ("list", items)."""
    out: list[tuple] = [("p", f"**{sum(h.counts.values())} cell(s): {_counts_text(h.counts)}**")]
    if h.tests:  # a test suite's regressions come first (reports/suite_tests.py)
        out += [("h", "Tests (one result per test)"), ("list", h.tests)]
    for group in h.groups:
        for a, b in h.pairs(group):
            rows = [r for r in h.rows if (r.group, r.a, r.b) == (group, a, b)]
            called = [r for r in rows if r.called]
            out.append(("h", f"{a} → {b} · {group.label}"))
            missing = [n for n in h.not_measured if (n.group, n.a, n.b) == (group, a, b)]
            # Sides that measured none of the pair's metrics (every cell errored, or nothing collected).
            empty = sorted(set.intersection(*(set(n.missing) for n in missing))) if missing and not rows else []
            if called:
                out.append(("table", HEADLINE_COLS[:1] + [a, b] + HEADLINE_COLS[3:], [_headline_cells(r) for r in called]))
            elif empty:
                out.append(("p", f"nothing compared: {' and '.join(empty)} measured none of the "
                                 f"{len(missing)} compared metric(s) (no cell whose workload finished, or not collected)."))
            else:
                out.append(("p", _nothing_called(rows)))
            rest = len(rows) - len(called)
            tail = [f"{rest} other compared metric(s) not called: see Comparison"] if rest and called else []
            if (nm := _not_measured_text(h, group, a, b)) and not empty:
                tail.append(nm)
            if tail:
                out.append(("p", "; ".join(tail) + "."))
    if h.checks:
        # Expectations always; the generic verdicts (path exercised, no kernel
        # warnings) only where they did not all pass, with one line saying so.
        order = lambda c: (h.sides.index(c.side) if c.side in h.sides else 99, c.name)  # noqa: E731
        shown = [c for c in sorted(h.checks, key=order) if c.name.startswith("expect ") or c.status != PASSED]
        quiet = [c for c in h.checks if not c.name.startswith("expect ") and c.status == PASSED]
        out.append(("h", f"Expectations per {h.side_name.split(' ')[0]}"))
        if shown:
            out.append(("table", [h.side_name, "check", "result"], [[c.side, c.name, c.text] for c in shown]))
        if quiet:
            names = sorted({c.name.split(": ", 1)[-1] for c in quiet})
            out.append(("p", f"Verdicts {', '.join(names)}: passed on every cell that ran them."))
    if h.failures:
        out.append(("h", "Failures"))
        out.append(("list", [f"`{r.key}` **{s.name}**: {s.message}  \n  reproduce: `{r.reproducer}`" for r, s in h.failures]))
    if h.not_run:
        # By reason, names only: the whole set reruns with --resume, one cell with --only KEY.
        out.append(("h", f"Not run ({len(h.not_run)})"))
        reasons: dict[str, list[str]] = {}
        for r in h.not_run:
            reasons.setdefault(_first_problem(r), []).append(r.key)
        items = []
        for why, keys in reasons.items():
            shown = ", ".join(f"`{k}`" for k in keys[:MAX_LISTED])
            more = f" and {len(keys) - MAX_LISTED} more (see Cells)" if len(keys) > MAX_LISTED else ""
            items.append(f"{why} ({len(keys)}): {shown}{more}")
        out.append(("list", items))
        out.append(("p", "`./run-matrix --resume` with the same matrix and results directory runs them; "
                         f"one cell: `{h.not_run[0].reproducer or './run-matrix --only KEY'}`."))
    for note in h.notes:
        out.append(("p", note))
    return out


def _nothing_called(rows: list[Row]) -> str:
    if not rows:
        return "nothing compared: no metric measured on both sides."
    short = [r for r in rows if r.comparison.verdict.startswith("not enough repeats")]
    if short:
        n = min(min(r.comparison.a.n, r.comparison.b.n) for r in short)
        return (f"no change called: {n} repeat(s) per side where at least {MIN_REPEATS} are needed "
                f"({len(rows)} metric(s) compared; medians in Comparison).")
    ruled = sum(1 for r in rows if r.comparison.ruled_out)
    fam = rows[0].comparison
    return (f"no change called: {len(rows)} metric(s) compared ({ruled} ruled out beyond their declared minimum "
            f"effect, {len(rows) - ruled} inconclusive or not judged); Holm over the {fam.family_size} tested "
            "comparison(s) of this headline.")


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda t: str(t).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return ["| " + " | ".join(esc(h) for h in head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]


def headline_markdown(h: Headline, level: int = 2) -> str:
    lines = [f"{'#' * level} Verdict", ""]
    for block in _blocks(h):
        kind = block[0]
        if kind == "h":
            lines += [f"{'#' * (level + 1)} {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "table":
            lines += _md_table(block[1], block[2]) + [""]
        else:
            lines += [f"- {item}" for item in block[1]] + [""]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    """The few markdown marks the headline uses (`code`, **bold**, line breaks) as HTML."""
    import re
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)
    return t.replace("  \n", "<br>")


def headline_html(h: Headline) -> str:
    parts = ["<h2>Verdict</h2>"]
    for block in _blocks(h):
        kind = block[0]
        if kind == "h":
            parts.append(f"<h3>{_inline_html(block[1])}</h3>")
        elif kind == "p":
            parts.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "table":
            parts.append(_table(block[1], [[_inline_html(c) for c in r] for r in block[2]], cls="headline"))
        else:
            parts.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1]) + "</ul>")
    return "\n".join(parts)


def headline_terminal(h: Headline) -> str:
    """For the end of ./run-matrix and `orchestrator compare`: the markdown headline, which reads as text."""
    return headline_markdown(h)


# ---- full tables -------------------------------------------------------------

def method_text() -> str:
    from orchestrator.reports import stats
    how = getattr(stats, "METHOD", "median change; 95% bootstrap CI")
    return (f"Median (min–max, n) per side; {how}. The family is every tested comparison of this headline: "
            "a change is called (up/down) when its Holm-adjusted p is below alpha; \"no change larger than X%\" when "
            "its whole interval lies inside the metric's declared `min_effect_pct`; otherwise inconclusive, with "
            "the change this run could have detected. Metrics a cell did not measure are left out, never taken as "
            "0. Better/worse follows each workload's `compare:` declaration. Method: docs/statistics.md.")


def comparison_markdown(h: Headline) -> str:
    lines = ["## Comparison", "", method_text(), ""]
    for group in h.groups:
        for a, b in h.pairs(group):
            rows = [r for r in h.rows if (r.group, r.a, r.b) == (group, a, b)]
            shown, quiet = [r for r in rows if not r.unchanged], [r for r in rows if r.unchanged]
            lines += [f"### {a} → {b} · {group.label}", ""]
            head = FULL_COLS[:1] + [a, b] + FULL_COLS[3:]
            if shown:
                lines += _md_table(head, [_full_cells(r) for r in shown]) + [""]
            if quiet:
                lines += [f"<details><summary>{len(quiet)} metric(s) not called (ruled out, inconclusive or not judged)</summary>",
                          ""] + _md_table(head, [_full_cells(r) for r in quiet]) + ["", "</details>", ""]
            if nm := _not_measured_text(h, group, a, b):
                lines += [nm + ".", ""]
    return "\n".join(lines)


def cells_markdown(records: list[CellRecord]) -> str:
    rows = [[f"`{r.key}`", r.status, fmt(r.metrics["workload.seconds"]) if "workload.seconds" in r.metrics else "–",
             fmt(r.metrics["boot.ready_s"]) if "boot.ready_s" in r.metrics else "–", _first_problem(r)] for r in records]
    return "\n".join(["## Cells", ""] + _md_table(["cell", "status", "workload s", "boot s", "first problem"], rows)) + "\n"


def render_markdown(h: Headline, records: list[CellRecord], sections: list[str] | None = None) -> str:
    # The sections a matrix exists for (race evidence, the aging study) follow the verdict directly.
    parts = [f"# {h.title}: {len(records)} cell(s)", "", headline_markdown(h)]
    parts += [s.rstrip() + "\n" for s in (_extra_sections(records) if sections is None else sections)]
    parts += [comparison_markdown(h), cells_markdown(records)]
    return "\n".join(parts)


def _extra_sections(records: list[CellRecord]) -> list[str]:
    return [s for f in EXTRA_SECTIONS if (s := f(records))]


def _extra_figures(records: list[CellRecord]) -> dict[str, bytes]:
    """File name -> PNG of the figures the extra sections show."""
    return {name: png for f in EXTRA_FIGURES if (fig := f(records)) for name, png in [fig]}


# ---- plots -------------------------------------------------------------------

def plots(h: Headline) -> list[tuple[str, str]]:
    """(group label, base64 PNG) per group: one panel per measured metric, each
    side's median (the same stats median as the tables) with a bar from its
    minimum to its maximum and every repeat as a dot.  [] without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out = []
    for group in h.groups:
        series: dict[str, dict[str, tuple]] = {}  # metric title -> side -> (summary, values)
        for r in h.rows:
            if r.group != group:
                continue
            panel = series.setdefault(r.metric.title(), {})
            panel.setdefault(r.a, r.comparison.a)
            panel.setdefault(r.b, r.comparison.b)
        panels = [(t, p) for t, p in series.items() if any(s.maximum != 0 or s.minimum != 0 for s in p.values())]
        if not panels:
            continue
        cols = min(4, len(panels))
        nrows = (len(panels) + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 2.6 * nrows), dpi=90, squeeze=False)
        for ax, (title, panel) in zip(axes.flat, panels):
            names = [s for s in h.sides if s in panel] + [s for s in panel if s not in h.sides]
            meds = [panel[s].median for s in names]
            lo = [panel[s].median - panel[s].minimum for s in names]
            hi = [panel[s].maximum - panel[s].median for s in names]
            ax.errorbar(range(len(names)), meds, yerr=[lo, hi], fmt="o", color="#4878a8", ecolor="#999", capsize=4, ms=6)
            ax.set_xticks(range(len(names)), names, fontsize=8)
            ax.set_xlim(-0.5, len(names) - 0.5)
            ax.set_title(title, fontsize=9)
            ax.tick_params(axis="y", labelsize=7)
            # From 0 (counts and times are not negative) with headroom, so no point sits on the frame.
            low = min(0.0, *(panel[s].minimum for s in names))
            high = max(panel[s].maximum for s in names)
            ax.set_ylim(low, high + ((high - low) * 0.12 or 1.0))
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.suptitle(group.label, fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        out.append((group.label, base64.b64encode(buf.getvalue()).decode()))
    return out


# ---- HTML ----------------------------------------------------------------------

def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class=\"{cls}\"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _status_html(status: str) -> str:
    cls = {PASSED: "ok", NOT_RUN: "notrun"}.get(status, "bad")
    return f'<span class="{cls}">{html.escape(status)}</span>'


def render_html(h: Headline, records: list[CellRecord], sections: list[str] | None = None,
                figures: dict[str, bytes] | None = None) -> str:
    e = html.escape
    imgs = "".join(f'<figure><img alt="{e(t)}" src="data:image/png;base64,{b}"></figure>' for t, b in plots(h))
    comp = []
    for group in h.groups:
        for a, b in h.pairs(group):
            rows = [r for r in h.rows if (r.group, r.a, r.b) == (group, a, b)]
            shown, quiet = [r for r in rows if not r.unchanged], [r for r in rows if r.unchanged]
            head = FULL_COLS[:1] + [a, b] + FULL_COLS[3:]
            comp.append(f"<h3>{e(a)} → {e(b)} · {e(group.label)}</h3>")
            if shown:
                comp.append(_table(head, [[e(c) for c in _full_cells(r)] for r in shown]))
            if quiet:
                comp.append(f"<details><summary>{len(quiet)} metric(s) not called (ruled out, inconclusive or not judged)</summary>"
                            + _table(head, [[e(c) for c in _full_cells(r)] for r in quiet]) + "</details>")
            if nm := _not_measured_text(h, group, a, b):
                comp.append(f"<p>{e(nm)}.</p>")
    cells = [[f"<code>{e(r.key)}</code>", _status_html(r.status),
              fmt(r.metrics["workload.seconds"]) if "workload.seconds" in r.metrics else "–",
              fmt(r.metrics["boot.ready_s"]) if "boot.ready_s" in r.metrics else "–", e(_first_problem(r))] for r in records]
    excerpts = "".join(f"<details><summary><code>{e(r.key)}</code> {e(s.name)}</summary><pre>{e(s.excerpt[-3000:])}</pre></details>"
                       for r, s in h.failures if s.excerpt)
    figures = _extra_figures(records) if figures is None else figures
    sections = _extra_sections(records) if sections is None else sections
    extra = "".join(f"<section>{_section_html(s, figures)}</section>" for s in sections)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(h.title.strip('`'))}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1400px}}figure{{display:block;margin:.4em 0}}
table{{border-collapse:collapse;font-size:13px;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:3px 7px;text-align:left}}
th{{background:#eee}}table.headline td:first-child{{font-weight:bold}}.ok{{color:#1a7f37;font-weight:bold}}
.bad{{color:#c62828;font-weight:bold}}.notrun{{color:#8a6d00;font-weight:bold}}h3{{margin-bottom:.2em}}
pre{{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}}details{{margin:.3em 0}}</style></head><body>
<h1>{_inline_html(h.title)}: {len(records)} cell(s)</h1>
{headline_html(h)}
{extra}
<h2>Plots</h2><p>Median of each side with a bar from its minimum to its maximum (n repeats); panels whose values are all 0 are left out.</p>
<div>{imgs or "<p>(no plots: nothing measured on both sides, or matplotlib missing)</p>"}</div>
<h2>Comparison</h2><p>{e(method_text())}</p>
{"".join(comp) or "<p>nothing compared</p>"}
<h2>Cells</h2>
{_table(["cell", "status", "workload s", "boot s", "first problem"], cells)}
{"<h2>Failure excerpts</h2>" + excerpts if excerpts else ""}
</body></html>"""


def _headline(matrix: Matrix, recs: list[tuple[CellRecord, Path | None]]) -> Headline:
    variants = list(dict.fromkeys(c.variant for c in matrix.cells))
    records = [r for r, _ in recs]
    order = list(dict.fromkeys(variants + [str(r.cell.get("variant")) for r in records]))
    return run_headline(matrix.name, records, matrix.compare or default_pairs(order), order)


def _section_html(text: str, figures: dict[str, bytes]) -> str:
    """A markdown section as HTML (tables included); its figures inline as data URIs."""
    body = markdown_lib.markdown(text, extensions=["tables"])
    for name, png in figures.items():
        body = body.replace(f'src="{name}"', f'src="data:image/png;base64,{base64.b64encode(png).decode()}"')
    return body


def repeat_plan(out: Path) -> str | None:
    """The "Repeats" section: how many repeats a `detect_pct` target asked for, and why."""
    try:
        lines = json.loads((out / "matrix.json").read_text()).get("repeat_plan")
    except (OSError, ValueError, AttributeError):
        return None
    return "## Repeats\n\n" + "\n".join(lines) + "\n" if lines else None


def write_headline_reports(h: Headline, recs: list[tuple[CellRecord, Path | None]], out: Path) -> None:
    records = [r for r, _ in recs]
    # Once for both files: the aging study's section and plot take seconds on a big run.
    sections, figures = _extra_sections(records), _extra_figures(records)
    if plan := repeat_plan(out):  # repeats a `detect_pct` target chose (matrix/order.more_repeats)
        sections.insert(0, plan)
    if (bisections := out / "bisect" / "index.md").is_file():  # `orchestrator bisect RESULTS` wrote it
        sections.append(bisections.read_text())
    for name, png in figures.items():
        write_bytes_atomic(out / name, png)
    for name, text in (("summary.md", render_markdown(h, records, sections)),
                       ("report.html", render_html(h, records, sections, figures))):
        write_text_atomic(out / name, text)


def write_reports(matrix: Matrix, recs: list[tuple[CellRecord, Path | None]], out: Path) -> Headline:
    """summary.md and report.html for a run; returns the headline (printed at the end of run-matrix)."""
    h = _headline(matrix, recs)
    write_headline_reports(h, recs, out)
    return h
