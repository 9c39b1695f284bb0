"""The aging study's report section (matrices/aging-study.yaml): does taking
kvm->mmu_lock for read in the arm64 aging notifiers change what aging and
the vCPUs experience, under the three conditions upstream argued about?

- Q1, the posted Altra table: stage-2 access flag in hardware.
- Q2, Oliver Upton's suggestion: stage-2 access flag in software
  (kvm-arm.stage2_sw_af, patches/0000-*), so every access after aging
  faults and takes the read side of mmu_lock.
- Q3, Yu Zhao's objection: the memcg under reclaim (memory.max below the
  VM, zram), so invalidations take the write side while aging runs.

Timing figures come only from cells of a timed config set (nothing armed,
orchestrator/workload/timing.py); lock_stat, kprobe and tracepoint figures only from
the evidence cells beside them.  Pure over cell records.
"""
from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass

from orchestrator.vm.machine import shape_by_name
from orchestrator.reports.numfmt import fmt
from orchestrator.reports.results import CellRecord
from orchestrator.errors import UserError
from orchestrator.reports.stats import (ALPHA, METHOD, MIN_REPEATS, Comparison, detectable_text, judge, measure,
                                          median, median_ci)
from orchestrator.workload.definitions import load_workload
from orchestrator.workload.timing import LOADED_PER_CORE, is_timed, loaded

WORKLOAD = "mglru-aging"
SWAF_PARAM = "kvm-arm.stage2_sw_af"
CONTROL, TREATED, AA = "baseline", "v4-fixed", "baseline-aa"

QUESTIONS = {
    "Q1": "stage-2 access flag in hardware (the posted Altra setup)",
    "Q2": "stage-2 access flag in software (kvm-arm.stage2_sw_af): every access after aging faults",
    "Q3": "memcg under reclaim (memory.max below the VM, zram): invalidations take the write lock during aging",
    "Q2+Q3": "stage-2 access flag in software and reclaim together",
}


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    better: str  # "lower" | "higher"
    questions: tuple[str, ...] = ()  # () = every question


TIMING_METRICS = (
    # Q1 and Q3 sweep a fixed number of passes: the wall time is the figure.  Q2
    # sweeps for a fixed time (a faulting pass costs ~1000x a clean one under
    # TCG, so a pass count would catch one regime or the other by chance):
    # there the throughput is.
    Metric("mglru.vcpu_wall_s", "vCPU wall", "s", "lower", ("Q1", "Q3")),
    Metric("mglru.vcpu_pages_per_s", "vCPU throughput", "pages/s", "higher", ("Q2", "Q3", "Q2+Q3")),
    Metric("mglru.aging_avg_s", "avg aging pass", "s", "lower"),
    Metric("mglru.aging_passes", "aging passes", "", "higher"),
    Metric("mglru.aging_max_s", "max aging pass", "s", "lower"),
    Metric("mglru.reclaim_pages_per_s", "reclaim throughput", "pages/s", "higher", ("Q3", "Q2+Q3")),
)
EVIDENCE_METRICS = (
    Metric("lock.mmu_lock.write.contentions", "write contentions", "", "lower"),
    Metric("lock.mmu_lock.read.contentions", "read contentions", "", "lower"),
    Metric("lock.mmu_lock.write.waittime_total_us", "write wait", "us", "lower"),
    Metric("lock.mmu_lock.read.waittime_total_us", "read wait", "us", "lower"),
    Metric("trace.kvm_access_fault.count", "access faults", "", "lower"),
    Metric("kprobe.age_gfn.hits", "kvm_age_gfn calls", "", "higher"),
)


def question_of(r: CellRecord) -> str:
    machine = str(r.cell.get("machine", ""))
    try:
        swaf = SWAF_PARAM in shape_by_name(machine).cmdline.split()
    except Exception:  # noqa: BLE001 - a shape from another checkout: judge by its name
        swaf = "swaf" in machine
    params = r.cell.get("params") or {}
    reclaim = str(params.get("limit_pct", "0")) not in ("0", "")
    return "Q2+Q3" if swaf and reclaim else "Q2" if swaf else "Q3" if reclaim else "Q1"


def _vcpus(r: CellRecord) -> int:
    try:
        return int((r.cell.get("params") or {}).get("vcpus", 1))
    except (TypeError, ValueError):
        return 1


def _measured(r: CellRecord) -> bool:
    return r.cell.get("workload") == WORKLOAD and "mglru.vcpu_wall_s" in r.metrics


FAMILY = "aging section"


@dataclass
class Study:
    # (question, vcpus) -> variant -> records
    timing: dict[tuple[str, int], dict[str, list[CellRecord]]]
    evidence: dict[tuple[str, int], dict[str, list[CellRecord]]]
    # (question, vcpus, metric, A, B) -> the comparison judged with the whole section's family
    judged: dict[tuple[str, int, str, str, str], Comparison] | None = None

    def keys(self) -> list[tuple[str, int]]:
        return sorted(set(self.timing) | set(self.evidence), key=lambda k: (list(QUESTIONS).index(k[0]), k[1]))

    def variants(self) -> list[str]:
        seen = {v for d in (self.timing, self.evidence) for g in d.values() for v in g}
        first = [v for v in (CONTROL, TREATED, "v4", AA) if v in seen]
        return first + sorted(seen - set(first))


def collect(records: list[CellRecord]) -> Study:
    timing: dict = defaultdict(lambda: defaultdict(list))
    evidence: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        if not _measured(r):
            continue
        key = (question_of(r), _vcpus(r))
        target = timing if is_timed(str(r.cell.get("config_set"))) else evidence
        target[key][str(r.cell.get("variant"))].append(r)
    return Study(timing, evidence)


def _values(recs: list[CellRecord], key: str) -> list[float]:
    return [float(r.metrics[key]) for r in recs if key in r.metrics]


def _fmt(v: float, unit: str = "") -> str:
    """Wait times (us in lock_stat) read better in ms."""
    return fmt(v / 1000, "ms", 3) if unit == "us" else fmt(v, unit, 3)


def _median_cell(values: list[float], unit: str) -> str:
    if not values:
        return "–"
    ci = median_ci(values)
    inner = f" [{_fmt(ci[0], unit)}–{_fmt(ci[1], unit)}]" if ci and len(values) > 1 else ""
    return f"{_fmt(median(values), unit)}{inner} n={len(values)}"


def _min_effects() -> dict[str, float]:
    """Each metric's declared minimum effect of interest (workloads/mglru-aging.yaml `compare:`)."""
    try:
        return {c.metric: c.min_effect_pct for c in load_workload(WORKLOAD).compared if c.min_effect_pct is not None}
    except UserError:  # a checkout without the workload: nothing can be ruled out, everything else stands
        return {}


def _pairs(study: Study, key: tuple[str, int]) -> list[tuple[str, str]]:
    """The treatment comparison, and the A/A control where the group ran one."""
    return [(CONTROL, TREATED)] + ([(CONTROL, AA)] if AA in study.timing.get(key, {}) else [])


def judge_study(study: Study) -> dict[tuple[str, int, str, str, str], Comparison]:
    """Every comparison of the section, judged as one family: baseline -> v4-fixed for
    each question, vCPU count and metric, and the A/A control under the same rule."""
    if study.judged is not None:
        return study.judged
    effects = _min_effects()
    keys, measured = [], []
    for k in study.keys():
        groups = study.timing.get(k, {})
        for a, b in _pairs(study, k):
            for m in _metrics_for(k[0], TIMING_METRICS):
                va, vb = _values(groups.get(a, []), m.key), _values(groups.get(b, []), m.key)
                if va and vb:
                    keys.append((k[0], k[1], m.key, a, b))
                    measured.append(measure(m.key, va, vb, min_effect_pct=effects.get(m.key)))
    study.judged = dict(zip(keys, judge(measured, FAMILY)))
    return study.judged


def _compare(study: Study, key: tuple[str, int], m: Metric, a: str, b: str) -> Comparison | None:
    return judge_study(study).get((key[0], key[1], m.key, a, b))


def _change_text(c: Comparison, unit: str) -> str:
    ci = f"{c.ci_pct[0]:+.1f}%..{c.ci_pct[1]:+.1f}%" if c.ci_pct else "–"
    p = f"p={c.p_value:.3g}, Holm {c.p_adjusted:.3g}" if c.p_adjusted is not None else "p –"
    ch = f"{c.change_pct:+.1f}%" if c.change_pct is not None else "–"
    noise = f", noise sd {c.noise_pct:.1f}%" if c.noise_pct is not None else ""
    det = f", detectable {detectable_text(c.detectable_pct)}" if c.p_adjusted is not None else ""
    return (f"{_fmt(c.a.median, unit)} → {_fmt(c.b.median, unit)} ({ch}, CI {ci}, {p}, n={c.a.n}/{c.b.n}{noise}{det}): "
            f"**{c.verdict}**")


def plain(c: Comparison, label: str, unit: str) -> str:
    """One comparison as a sentence a maintainer can quote."""
    ci = f"{c.ci_pct[0]:+.1f}%..{c.ci_pct[1]:+.1f}%" if c.ci_pct else "–"
    if c.called:
        word = "cuts" if c.verdict == "down" else "raises"
        return (f"the read lock {word} the {label} from {_fmt(c.a.median, unit)} to {_fmt(c.b.median, unit)} "
                f"({c.change_pct:+.1f}%, CI {ci})")
    if c.ruled_out:
        return (f"{label}: the read lock changes it by {ci} here, so a change beyond ±{c.min_effect_pct:g}% is ruled "
                "out on this host")
    if c.p_adjusted is not None:
        return (f"{label}: {ci} ({c.change_pct:+.1f}% between medians), not called; this run could detect only "
                f"{detectable_text(c.detectable_pct).replace('>= ', '')} or more" if c.detectable_pct != float("inf")
                else f"{label}: {ci}, not called (no call was possible with {c.a.n}/{c.b.n} repeats)")
    return f"{label} not judged ({c.verdict}; medians {_fmt(c.a.median, unit)} vs {_fmt(c.b.median, unit)})"


def _metrics_for(q: str, metrics: tuple[Metric, ...]) -> list[Metric]:
    return [m for m in metrics if not m.questions or q in m.questions]


def _table(study: Study, q: str) -> list[str]:
    keys = [k for k in study.keys() if k[0] == q]
    tmetrics = _metrics_for(q, TIMING_METRICS)
    emetrics = [m for m in _metrics_for(q, EVIDENCE_METRICS)
                if any(_values(study.evidence.get(k, {}).get(v, []), m.key) for k in keys for v in study.variants())]
    head = ["inner vCPUs", "variant"] + [f"{m.label} (timing)" for m in tmetrics] + [f"{m.label} (evidence)" for m in emetrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in keys:
        for v in study.variants():
            t, e = study.timing.get(k, {}).get(v, []), study.evidence.get(k, {}).get(v, [])
            if not t and not e:
                continue
            row = [str(k[1]), v] + [_median_cell(_values(t, m.key), m.unit) for m in tmetrics]
            row += [_median_cell(_values(e, m.key), m.unit) for m in emetrics]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _contention_sites(study: Study, key: tuple[str, int], variant: str) -> str:
    recs = study.evidence.get(key, {}).get(variant, [])
    sites: dict[str, float] = defaultdict(float)
    for r in recs:
        for k, v in r.metrics.items():
            if k.startswith("lock.mmu_lock.contention_point."):
                sites[k.rsplit(".", 1)[-1]] += v / len(recs)
    top = sorted(sites.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{f} {_fmt(n)}" for f, n in top) or "none"


def _path_proof(study: Study, q: str) -> list[str]:
    """Which evidence cells prove the aging path (and the access faults for Q2)."""
    out = []
    for k in [k for k in study.keys() if k[0] == q]:
        for v in (CONTROL, TREATED):
            recs = study.evidence.get(k, {}).get(v, [])
            if not recs:
                if study.timing.get(k, {}).get(v):
                    out.append(f"- {k[1]} vCPU(s), {v}: **no evidence cell**: the path is not proven for these timings")
                continue
            ok = [r for r in recs if any(s.name.endswith("path exercised") and s.status == "passed" for s in r.steps)]
            calls = median(_values(recs, "kprobe.age_gfn.hits")) if _values(recs, "kprobe.age_gfn.hits") else 0
            faults = _values(recs, "trace.kvm_access_fault.count")
            fault_text = f", {_fmt(median(faults))} access faults" if faults else ""
            out.append(f"- {k[1]} vCPU(s), {v}: path exercised in {len(ok)}/{len(recs)} evidence cell(s), "
                       f"{_fmt(calls)} kvm_age_gfn calls{fault_text}; mmu_lock contended at: {_contention_sites(study, k, v)}")
    return out


def _conclusion(study: Study, q: str) -> list[str]:
    out = []
    for k in [k for k in study.keys() if k[0] == q]:
        parts = []
        for m in _metrics_for(q, TIMING_METRICS)[:3]:
            c = _compare(study, k, m, CONTROL, TREATED)
            if c is not None:
                parts.append(plain(c, m.label, m.unit))
        if parts:
            out.append(f"- At {k[1]} inner vCPU(s): " + "; ".join(parts) + ".")
    return out


def _summary(study: Study, q: str) -> str:
    """One plain sentence per question: what was called, and what lock_stat says about why."""
    keys = [k for k in study.keys() if k[0] == q]
    called, judged, ruled, unseen = [], False, [], []
    for k in keys:
        comps = [(m, c) for m in _metrics_for(q, TIMING_METRICS) if (c := _compare(study, k, m, CONTROL, TREATED))]
        judged = judged or bool(comps) and all(c.a.n >= MIN_REPEATS and c.b.n >= MIN_REPEATS for _, c in comps)
        called += [f"{m.label} {c.change_pct:+.1f}% at {k[1]} vCPU(s) (CI {c.ci_pct[0]:+.1f}%..{c.ci_pct[1]:+.1f}%, "
                   f"Holm p={c.p_adjusted:.3f})" for m, c in comps if c.called]
        ruled += [f"{m.label} at {k[1]} vCPU(s)" for m, c in comps if c.ruled_out]
        unseen += [(f"{m.label} at {k[1]} vCPU(s)", c) for m, c in comps
                   if c.p_adjusted is not None and not c.called and not c.ruled_out]
    cont = [median(v) for k in keys
            if (v := [r.metrics.get("lock.mmu_lock.write.contentions", 0) + r.metrics.get("lock.mmu_lock.read.contentions", 0)
                      for r in study.evidence.get(k, {}).get(CONTROL, []) if "lock.mmu_lock.write.contentions" in r.metrics])]
    treated = [median(v) for k in keys
               if (v := [r.metrics.get("lock.mmu_lock.write.contentions", 0) + r.metrics.get("lock.mmu_lock.read.contentions", 0)
                         for r in study.evidence.get(k, {}).get(TREATED, []) if "lock.mmu_lock.write.contentions" in r.metrics])]
    if not judged:
        head = "Not judged yet: fewer than 5 repeats per side."
    else:
        head = (f"{TREATED} against {CONTROL}: called " + "; ".join(called) + "." if called
                else f"No change called between {CONTROL} and {TREATED} at any inner vCPU count.")
        if ruled:
            head += " Ruled out beyond each metric's minimum effect: " + ", ".join(ruled) + "."
        blind = [name for name, c in unseen if c.detectable_pct == float("inf")]
        seen = [f"{name} ({detectable_text(c.detectable_pct)})" for name, c in unseen if c.detectable_pct != float("inf")]
        if seen:
            head += " Inconclusive (the change this run could detect): " + ", ".join(seen) + "."
        if blind:
            c = next(c for _, c in unseen if c.detectable_pct == float("inf"))
            head += (f" Inconclusive, and no change of any size could have been called with {c.a.n}/{c.b.n} repeats "
                     f"at the section's level (alpha/{c.family_size}): " + ", ".join(blind) + ".")
    if cont and max(cont) == 0:
        why = f" lock_stat: mmu_lock was never contended on {CONTROL} here, so the read lock has nothing to relieve."
    elif cont:
        why = (f" lock_stat: {CONTROL} contended mmu_lock {_fmt(min(cont))}–{_fmt(max(cont))} times per run "
               f"(read + write), {TREATED} {_fmt(min(treated)) if treated else '–'}–{_fmt(max(treated)) if treated else '–'}.")
    else:
        why = ""
    return head + why


def _aa_lines(study: Study) -> list[str]:
    out = []
    for k in study.keys():
        if AA not in study.timing.get(k, {}):
            continue
        verdicts, bad, blind = [], False, True
        for m in _metrics_for(k[0], TIMING_METRICS):
            c = _compare(study, k, m, CONTROL, AA)
            if c is not None:
                bad = bad or c.called
                blind = blind and c.detectable_pct == float("inf")
                ci = f"CI {c.ci_pct[0]:+.1f}%..{c.ci_pct[1]:+.1f}%, " if c.ci_pct else ""
                verdicts.append(f"{m.label} {c.change_pct:+.1f}% ({ci}Holm p={c.p_adjusted:.3f}): {c.verdict}"
                                if c.p_adjusted is not None and c.change_pct is not None else f"{m.label}: {c.verdict}")
        mark = (f"**{AA_FAILED}: the same rule called a change between identical kernels; this host was too noisy "
                "for this run and its calls cannot be trusted**" if bad
                else f"{AA_PASSED}, but vacuously: with these repeats no call was possible at the section's level, "
                     "so this control cannot fail here; its intervals (below) are the evidence" if blind else AA_PASSED)
        out.append(f"- {k[0]}, {k[1]} vCPU(s), {CONTROL} → {AA}: {mark} ({'; '.join(verdicts)})")
    return out


AA_FAILED = "A/A CONTROL FAILED"
AA_PASSED = "nothing called, as it must be"


def _host_lines(records: list[CellRecord]) -> list[str]:
    timed = [r for r in records if _measured(r) and is_timed(str(r.cell.get("config_set")))]
    loads = [r.metrics[k] for r in timed for k in ("host.before_load1", "host.after_load1") if k in r.metrics]
    if not loads:
        return ["- Host load was not recorded."]
    n_loaded = sum(1 for r in timed if loaded(r.metrics))
    cores = int(max((r.metrics.get("host.cores", 0) for r in timed), default=0))
    line = (f"- Host: {cores} cores; 1-minute load average over the timing cells {min(loads):.2f}–{max(loads):.2f} "
            f"(median {median(loads):.2f}); {n_loaded}/{len(timed)} timing cells ran on a loaded host "
            f"(load > {LOADED_PER_CORE:g} per core).")
    return [line + (" Variants ran in a balanced order, so load hits them alike, but it widens every interval."
                    if n_loaded else "")]


def _family_line(study: Study) -> str:
    judged = judge_study(study)
    tested = sum(1 for c in judged.values() if c.p_adjusted is not None)
    return (f"Family: the {tested} tested comparison(s) of this section ({CONTROL} → {TREATED} for every question, "
            f"inner vCPU count and metric, and the {CONTROL} → {AA} control), Holm-corrected at alpha {ALPHA}: the "
            "chance of any false call in the section is at most 5%. A change is called when its Holm-adjusted p "
            "is below alpha; ruled out when its whole 95% interval lies inside the metric's declared minimum effect "
            "(workloads/mglru-aging.yaml `min_effect_pct`); otherwise inconclusive, with the change this run "
            "would have detected with 80% power at the family's level.")


def aging_section(records: list[CellRecord]) -> str | None:
    study = collect(records)
    if not study.timing and not study.evidence:
        return None
    lines = ["## Aging study: what the read lock changes (mglru-aging in a nested VM)", "",
             "Upstream dropped the arm64 read lock from the MGLRU secondary-MMU series in v7 (Sept 2024): "
             "Yu Zhao objected that timing aging alone is unrealistic since reclaim also unmaps under the write lock "
             "(Q3 here), and Oliver Upton suggested making the stage-2 access flag software-managed so that the "
             "locking difference shows (Q2). The only arm64 figures posted (v6, Ampere Altra, 32 vCPUs, hardware "
             "access flag) had the average aging pass at 1.66 s (write lock) vs 0.31 s (read lock) and vCPU wall "
             "time 3.04 s vs 3.01 s (Q1 is that table on this machine).", "",
             f"Method: timing figures from the timed config set only (no LOCKDEP, LOCK_STAT, kprobes or tracepoints "
             f"armed); lock_stat, kprobe and tracepoint figures from the evidence cells of the same variant, shape "
             f"and workload. Repeats in a balanced order across variants. Per variant: median [95% order-statistic interval of the "
             f"median, the range when n is too small for 95%] n. Comparisons: {METHOD}.", "",
             _family_line(study), ""]
    lines += _host_lines(records)
    if any(k[0] for k in study.timing):
        lines += ["", f"![average aging pass against inner vCPUs, per variant, 95% CI bars]({FIGURE})"]
    for q in [q for q in QUESTIONS if any(k[0] == q for k in study.keys())]:
        lines += ["", f"### {q}: {QUESTIONS[q]}", "", f"**{_summary(study, q)}**", ""]
        lines += _table(study, q)
        comps = []
        for k in [k for k in study.keys() if k[0] == q]:
            for m in _metrics_for(q, TIMING_METRICS):
                if (c := _compare(study, k, m, CONTROL, TREATED)) is not None:
                    comps.append(f"- {k[1]} vCPU(s), {m.label}, {CONTROL} → {TREATED}: {_change_text(c, m.unit)}")
        if comps:
            lines += ["", "Comparison (timing cells):", ""] + comps
        if proof := _path_proof(study, q):
            lines += ["", "Evidence cells:", ""] + proof
        if concl := _conclusion(study, q):
            lines += ["", "Conclusion:", ""] + concl
    if aa := _aa_lines(study):
        lines += ["", "### A/A control", ""] + aa
    lines += ["", "### What this machine cannot show", "",
              "- Every figure is nested KVM under QEMU TCG on a small x86 host: the L1 guest's vCPUs are host threads "
              "sharing the host's cores, so at most as many L1 vCPUs run at once as the host has cores, and an inner "
              "VM with more vCPUs than that serialises on the host. Contention that needs many truly parallel vCPUs "
              "(the Altra's 32) cannot appear here; a lock that nobody waits for costs the same read or write.",
              "- TCG makes every stage-2 fault and every aging pass far slower than hardware, so absolute times say "
              "nothing about real machines; only the ratios between variants measured side by side carry over.",
              "- A KVM-capable arm64 runner would run the same matrix (`--matrix aging-study`) with accel kvm and "
              "larger inner vCPU counts (e.g. 8, 16, 32 on a machine shape with that many vCPUs)."]
    return "\n".join(lines) + "\n"


FIGURE = "aging-pass-time.png"


def aging_figure(records: list[CellRecord]) -> tuple[str, bytes] | None:
    """(file name, PNG) of the study's plot, for the report writer."""
    png = aging_plot_png(records)
    return (FIGURE, png) if png else None


def aging_plot_png(records: list[CellRecord]) -> bytes | None:
    """Average aging pass time against inner vCPUs, per variant with CI bars, one panel per question."""
    study = collect(records)
    questions = [q for q in QUESTIONS if any(k[0] == q for k in study.timing)]
    if not questions:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(questions), figsize=(4.2 * len(questions), 3.2), dpi=100, squeeze=False)
    for ax, q in zip(axes[0], questions):
        keys = sorted(k for k in study.timing if k[0] == q)
        for i, v in enumerate(study.variants()):
            xs, ys, lo, hi = [], [], [], []
            for k in keys:
                vals = _values(study.timing[k].get(v, []), "mglru.aging_avg_s")
                if not vals:
                    continue
                ci = median_ci(vals) or (median(vals), median(vals))
                xs.append(k[1] + (i - 1) * 0.06)
                ys.append(median(vals))
                lo.append(median(vals) - ci[0])
                hi.append(ci[1] - median(vals))
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=v)
        ax.set_title(q, fontsize=10)
        ax.set_xlabel("inner vCPUs", fontsize=9)
        ax.set_ylabel("avg aging pass (s)", fontsize=9)
        ax.set_xticks(sorted({k[1] for k in keys}))
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
