"""Human reports from cell records: summary.md (CI job summary) and a
self-contained report.html with plots.  Pure over the records on disk."""
from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path

from .matrix import Matrix
from .race_report import race_section
from .results import FAILED, ERROR, CellRecord
from .stats import aa_noise_pct, compare

# Metrics compared across variants, with how to show them.
KEY_METRICS = {
    "lock.mmu_lock.write.acquisitions": "mmu_lock write acquisitions",
    "lock.mmu_lock.read.acquisitions": "mmu_lock read acquisitions",
    "lock.mmu_lock.write.contentions": "mmu_lock write contentions",
    "lock.mmu_lock.read.contentions": "mmu_lock read contentions",
    "lock.mmu_lock.write.waittime_total_us": "mmu_lock write wait total (us)",
    "lock.mmu_lock.read.waittime_total_us": "mmu_lock read wait total (us)",
    "kprobe.age_gfn.hits": "kvm_age_gfn calls",
    "kprobe.test_age_gfn.hits": "kvm_test_age_gfn calls",
    "trace.events_written": "trace events written",
    "phase.mark_memory_idle_total_s": "mark idle total (s)",
    "mglru.aging_passes": "MGLRU aging passes",
    "mglru.aging_avg_s": "MGLRU aging pass avg (s)",
    "mglru.vcpu_wall_s": "vCPU wall time, mglru-aging (s)",
    "reclaim.memcg_pgsteal": "pages reclaimed (memcg)",
    "reclaim.vcpu_pages_per_s": "vCPU throughput under reclaim (pages/s)",
    "workload.seconds": "workload wall time (s)",
    "boot.ready_s": "boot to ready (s)",
}


def _values(records: list[CellRecord], variant: str, metric: str, workload: str) -> list[float]:
    return [float(r.metrics[metric]) for r in records
            if r.cell.get("variant") == variant and r.cell.get("workload") == workload and metric in r.metrics]


def _fmt(v: float) -> str:
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g} M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.4g} K"
    return f"{v:.4g}"


def comparison_rows(matrix: Matrix, records: list[CellRecord]) -> list[tuple[str, str, str, object]]:
    """(workload, pair label, metric, Comparison) for every compared pair and key metric."""
    rows = []
    workloads = sorted({r.cell.get("workload") for r in records})
    for wl in workloads:
        for a, b in matrix.compare:
            for metric in KEY_METRICS:
                va, vb = _values(records, a, metric, wl), _values(records, b, metric, wl)
                if not va or not vb:
                    continue
                noise = [n for n in (aa_noise_pct(va), aa_noise_pct(vb)) if n is not None]
                rows.append((wl, f"{a} → {b}", metric, compare(metric, va, vb, noise_pct=max(noise) if noise else None)))
    return rows


def markdown(matrix: Matrix, recs: list[tuple[CellRecord, Path]]) -> str:
    records = [r for r, _ in recs]
    lines = [f"# Matrix `{matrix.name}`: {len(records)} cell(s)", ""]
    counts = defaultdict(int)
    for r in records:
        counts[r.status] += 1
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no cells ran")
    lines += ["", "| cell | status | write acq | read acq | write cont | aging calls | workload s |", "|---|---|---|---|---|---|---|"]
    for r in records:
        m = r.metrics
        def g(k: str) -> str:
            return _fmt(m[k]) if k in m else "–"
        lines.append(f"| `{r.key}` | {r.status} | {g('lock.mmu_lock.write.acquisitions')} | {g('lock.mmu_lock.read.acquisitions')} | "
                     f"{g('lock.mmu_lock.write.contentions')} | {g('kprobe.age_gfn.hits')} | {g('workload.seconds')} |")
    failing = [(r, s) for r in records for s in r.steps if s.status in (FAILED, ERROR)]
    if failing:
        lines += ["", "## Failures", ""]
        for r, s in failing:
            lines.append(f"- `{r.key}` **{s.name}**: {s.message}  \n  reproduce: `{r.reproducer}`")
    rows = comparison_rows(matrix, records)
    if rows:
        lines += ["", "## Comparison", "",
                  "Median (min–max, n) per variant; change of the median; 95% bootstrap CI; verdict. "
                  "The noise floor is the A/A difference between halves of each variant's repeats.", "",
                  "| workload | pair | metric | A | B | change | 95% CI | noise | verdict |", "|---|---|---|---|---|---|---|---|---|"]
        for wl, pair, metric, c in rows:
            ci = f"{c.ci_pct[0]:+.1f}%..{c.ci_pct[1]:+.1f}%" if c.ci_pct else "–"
            change = f"{c.change_pct:+.1f}%" if c.change_pct is not None else "–"
            noise = f"±{c.noise_pct:.1f}%" if c.noise_pct is not None else "not measured"
            lines.append(f"| {wl} | {pair} | {KEY_METRICS[metric]} | {_fmt(c.a.median)} ({_fmt(c.a.minimum)}–{_fmt(c.a.maximum)}, {c.a.n}) | "
                         f"{_fmt(c.b.median)} ({_fmt(c.b.minimum)}–{_fmt(c.b.maximum)}, {c.b.n}) | {change} | {ci} | {noise} | {c.verdict} |")
    if section := race_section(records):
        lines += ["", section.rstrip()]
    return "\n".join(lines) + "\n"


def _plots(records: list[CellRecord], order: list[str] | None = None) -> list[tuple[str, str]]:
    """(title, base64 PNG) bar charts of key metrics per variant; [] without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    seen = list(dict.fromkeys(r.cell.get("variant") for r in records))
    variants = [v for v in (order or []) if v in seen] + [v for v in seen if v not in (order or [])]
    out = []
    for metric, title in KEY_METRICS.items():
        data = [[float(r.metrics[metric]) for r in records if r.cell.get("variant") == v and metric in r.metrics] for v in variants]
        if not any(v for d in data for v in d):
            continue  # all zero or absent: a blank chart says nothing
        fig, ax = plt.subplots(figsize=(4.2, 2.8), dpi=100)
        med = [sorted(d)[len(d) // 2] if d else 0 for d in data]
        ax.bar(variants, med, color="#4878a8")
        for i, d in enumerate(data):
            ax.scatter([i] * len(d), d, color="#c44e52", zorder=3, s=14)
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        out.append((title, base64.b64encode(buf.getvalue()).decode()))
    return out


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def html_report(matrix: Matrix, recs: list[tuple[CellRecord, Path]], md: str) -> str:
    records = [r for r, _ in recs]
    e = html.escape
    imgs = "".join(f'<figure><img alt="{e(t)}" src="data:image/png;base64,{b}"></figure>'
                   for t, b in _plots(records, list(dict.fromkeys(c.variant for c in matrix.cells))))
    cells = []
    for r in records:
        m = r.metrics
        def g(k: str) -> str:
            return _fmt(m[k]) if k in m else "–"
        cls = "ok" if r.status == "passed" else "bad"
        cells.append([f"<code>{e(r.key)}</code>", f'<span class="{cls}">{e(r.status)}</span>',
                      g("lock.mmu_lock.write.acquisitions"), g("lock.mmu_lock.read.acquisitions"),
                      g("lock.mmu_lock.write.contentions"), g("kprobe.age_gfn.hits"), g("workload.seconds")])
    failing = "".join(f"<li><code>{e(r.key)}</code> <b>{e(st.name)}</b>: {e(st.message)}<br>reproduce: <code>{e(r.reproducer)}</code>"
                      + (f"<pre>{e(st.excerpt[-3000:])}</pre>" if st.excerpt else "") + "</li>"
                      for r in records for st in r.steps if st.status in (FAILED, ERROR))
    comp = []
    for wl, pair, metric, c in comparison_rows(matrix, records):
        ci = f"{c.ci_pct[0]:+.1f}%..{c.ci_pct[1]:+.1f}%" if c.ci_pct else "–"
        comp.append([e(wl), e(pair), e(KEY_METRICS[metric]),
                     f"{_fmt(c.a.median)} ({_fmt(c.a.minimum)}–{_fmt(c.a.maximum)}, n={c.a.n})",
                     f"{_fmt(c.b.median)} ({_fmt(c.b.minimum)}–{_fmt(c.b.maximum)}, n={c.b.n})",
                     f"{c.change_pct:+.1f}%" if c.change_pct is not None else "–", ci,
                     f"±{c.noise_pct:.1f}%" if c.noise_pct is not None else "not measured", e(c.verdict)])
    extra = "".join(f"<section>{section}</section>" for section in _extra_sections_html(records))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(matrix.name)}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1400px}}figure{{display:inline-block;margin:.4em}}
table{{border-collapse:collapse;font-size:13px;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:3px 7px;text-align:left}}
th{{background:#eee}}.ok{{color:#1a7f37;font-weight:bold}}.bad{{color:#c62828;font-weight:bold}}
pre{{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}}</style></head><body>
<h1>Matrix {e(matrix.name)}: {len(records)} cell(s)</h1>
{_table(["cell", "status", "mmu_lock write acq", "mmu_lock read acq", "write contentions", "kvm_age_gfn calls", "workload s"], cells)}
{"<h2>Failures</h2><ul>" + failing + "</ul>" if failing else ""}
<h2>Plots</h2><div>{imgs or "<p>(plots need matplotlib)</p>"}</div>
<h2>Comparison</h2><p>Median (min–max, n) per variant; change of the median; 95% bootstrap CI of the change;
the noise floor is the A/A difference between halves of each variant's repeats. No change is called with fewer than 3 repeats.</p>
{_table(["workload", "pair", "metric", "A", "B", "change", "95% CI", "noise", "verdict"], comp)}
{extra}
</body></html>"""


def _extra_sections_html(records: list[CellRecord]) -> list[str]:
    """Sections other modules contribute (e.g. race evidence), as HTML."""
    section = race_section(records)
    return [f"<h2>Race evidence</h2><pre>{html.escape(section)}</pre>"] if section else []


def write_reports(matrix: Matrix, recs: list[tuple[CellRecord, Path]], out: Path) -> None:
    md = markdown(matrix, recs)
    for name, text in (("summary.md", md), ("report.html", html_report(matrix, recs, md))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out / name)
