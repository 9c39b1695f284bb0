"""Lost races of the shared stage-2 age walk: metrics from a race run's
evidence, and the report section that judges the v4 6/7 review with them.

Review claims under test (v4 6/7, "KVM: arm64: Relax locking for
kvm_test_age_gfn and kvm_age_gfn"):
1. with a shared (read-lock) age walk, stage2_try_set_pte() in
   stage2_age_walker() can lose its cmpxchg to a concurrent fault handler
   and return -EAGAIN, so the WARN_ON() in
   kvm_pgtable_stage2_test_clear_young() "is bogus now";
2. a PTE that lost such a race is most likely young, so not clearing its
   access flag (AF) hardly matters;
3. no retry is needed: the walker already set `young` before the cmpxchg.

Evidence (tracepoints/race.yaml): every stage2_age_walker() return other
than 0 is an `age_walker` event with the PTE the walker read (`old`) and the
PTE after the lost cmpxchg (`now`); every non-zero kvm_pgtable_walk() return
is a `walk_err` event with the visitor (`cb`).  Both are parsed by orchestrator/parsers/race_trace.py (pure).

    race_metrics(trace_text, dmesg_text) -> {"race.<name>": value}
    race_section(records) -> markdown

`python3 -m orchestrator.reports.race RESULTS_DIR` prints the section for a
finished run, recomputing the race metrics from each cell's evidence files
(for runs made before evidence.py called race_metrics).
"""
from __future__ import annotations

import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.parsers.race_trace import WARN_FUNC, WINNERS, race_metrics

# ---------------------------------------------------------------- report

@dataclass
class _Group:
    variant: str
    config_set: str
    machine: str
    runs: list[dict[str, float]] = field(default_factory=list)
    titles: Counter = field(default_factory=Counter)


def _record_parts(rec) -> tuple[dict, dict[str, float], list]:
    if isinstance(rec, tuple):  # (CellRecord, Path) as write_reports hands them on
        rec = rec[0]
    return rec.cell, rec.metrics, rec.steps


def _titles(steps) -> list[str]:
    """Crash titles from the 'no kernel warnings' verdict ("N report(s): t1; t2")."""
    for s in steps:
        if s.name.endswith("no kernel warnings") and s.status != "passed" and "report(s): " in s.message:
            return [t.strip() for t in s.message.split("report(s): ", 1)[1].split(";") if t.strip()]
    return []


def _lost(m: dict[str, float]) -> float | None:
    """Lost races of one run; None when the run has no race evidence (no age_walker probe hits)."""
    if "kprobe.age_walker.hits" not in m:
        return None
    return m.get("race.lost_races", m.get("trace.age_walker.count", 0.0))


def _calls(m: dict[str, float]) -> float:
    return m.get("kprobe.age_gfn.hits", 0.0) + m.get("kprobe.test_age_gfn.hits", 0.0)


def _spread(values: Sequence[float], fmt: str = "{:.3g}") -> str:
    """median (min–max); n is the runs column."""
    if not values:
        return "–"
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def _pct(part: float, whole: float) -> str:
    return f"{part / whole * 100:.0f}%" if whole else "–"


def _groups(records: Iterable) -> list[_Group]:
    groups: dict[tuple[str, str, str], _Group] = {}
    for rec in records:
        cell, metrics, steps = _record_parts(rec)
        if cell.get("workload") != "race" or _lost(metrics) is None:
            continue
        key = (cell.get("variant", "?"), cell.get("config_set", "?"), cell.get("machine", "?"))
        g = groups.setdefault(key, _Group(*key))
        g.runs.append(metrics)
        g.titles.update(_titles(steps))
    return [groups[k] for k in sorted(groups, key=lambda k: (k[1], k[2], k[0]))]


def _no_dmesg(g: _Group) -> int:
    """Runs whose dmesg was not fetched (only known once race_metrics ran on the evidence)."""
    return sum(1 for r in g.runs if "race.lost_races" in r and "race.warnings_total" not in r)


def _sum(runs: list[dict[str, float]], key: str) -> float:
    return sum(r.get(key, 0.0) for r in runs)


def race_section(records: Iterable) -> str:
    """Markdown: lost races per variant with spread over repeats, and what they say about the review."""
    groups = _groups(records)
    if not groups:
        return ""
    lines = ["## Lost races in the shared stage-2 age walk", "",
             "Lost race: stage2_age_walker() returning -EAGAIN (its cmpxchg on the PTE failed). Aging calls: "
             "kvm_age_gfn + kvm_test_age_gfn. Per-run columns: median (min–max) over the runs.", "",
             "| variant | config | machine | runs | aging s | aging calls | lost races | lost per run | lost / s "
             "| lost / 1M calls | lost / 1K passes | age walks ≠0 | warnings |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups:
        lost = [_lost(r) or 0.0 for r in g.runs]
        secs = [r.get("race.aging_s", 0.0) for r in g.runs]
        per_s = [lo / s for lo, s in zip(lost, secs) if s > 0]
        per_call = [lo / _calls(r) * 1e6 for lo, r in zip(lost, g.runs) if _calls(r) > 0]
        per_pass = [lo / r["race.aging_passes"] * 1e3 for lo, r in zip(lost, g.runs) if r.get("race.aging_passes")]
        warns = f"{max(int(_sum(g.runs, 'race.warnings_total')), sum(g.titles.values()))}"
        if no_dmesg := _no_dmesg(g):
            warns += f" ({no_dmesg} run(s) without dmesg)"
        lines.append(f"| {g.variant} | {g.config_set} | {g.machine} | {len(g.runs)} | {sum(secs):.0f} | "
                     f"{sum(_calls(r) for r in g.runs):.0f} | {sum(lost):.0f} | {_spread(lost, '{:.0f}')} | "
                     f"{_spread(per_s, '{:.3f}')} | {_spread(per_call, '{:.1f}')} | {_spread(per_pass, '{:.1f}')} | "
                     f"{_sum(g.runs, 'race.walk_errors_age'):.0f} | {warns} |")
    lines += ["", "What beat the age walker's cmpxchg (all repeats), and the PTE's access flag (AF):", "",
              "| variant | config | machine | lost | AF set when read | AF still set after | "
              + " | ".join(f"winner: {k}" for k in WINNERS) + " | access-flag faults | permission faults "
              "| fault walks ≠0 |",
              "|---|---|---|---|---|---|" + "---|" * len(WINNERS) + "---|---|---|"]
    for g in groups:
        lost = sum(_lost(r) or 0.0 for r in g.runs)
        cells = " | ".join(f"{_sum(g.runs, f'race.lost_winner_{k}'):.0f}" for k in WINNERS)
        lines.append(f"| {g.variant} | {g.config_set} | {g.machine} | {lost:.0f} | "
                     f"{_sum(g.runs, 'race.lost_old_young'):.0f} ({_pct(_sum(g.runs, 'race.lost_old_young'), lost)}) | "
                     f"{_sum(g.runs, 'race.lost_af_kept'):.0f} ({_pct(_sum(g.runs, 'race.lost_af_kept'), lost)}) | {cells} | "
                     f"{_sum(g.runs, 'kprobe.mkyoung.hits'):.0f} | "
                     f"{_sum(g.runs, 'kprobe.relax_perms.hits'):.0f} | {_sum(g.runs, 'race.walk_errors_other'):.0f} |")
    lines += ["", "Winners: " + "; ".join(f"**{k}**: {v}" for k, v in WINNERS.items()) + ". "
              "Fault walks ≠0: stage-2 walks of the fault handlers (map, relax_perms, mkyoung) that returned "
              "non-zero; they retry the guest access (KVM_PGTABLE_WALK_HANDLE_FAULT)."]
    caveats = _caveats(groups)
    if caveats:
        lines += ["", "Caveats:"] + [f"- {c}" for c in caveats]
    lines += ["", "### The review's claims, against these counts", ""] + _conclusions(groups)
    return "\n".join(lines) + "\n"


def _caveats(groups: list[_Group]) -> list[str]:
    out = ["The return probe on stage2_age_walker() runs its entry half between the walker's PTE read and its "
           "cmpxchg, which widens the race window: rates are for a probed kernel (an upper side), the kinds and "
           "outcomes of the races are what carries over."]
    for g in groups:
        missed = _sum(g.runs, "kprobe.age_walker.missed")
        lost_ev = _sum(g.runs, "trace.events_lost")
        bad = _sum(g.runs, "race.trace_unparsed")
        where = f"{g.variant}/{g.config_set}/{g.machine}"
        if missed:
            out.append(f"{where}: the age_walker probe missed {missed:.0f} hits (no free kretprobe instance): "
                       "lost races are a lower bound there.")
        if lost_ev:
            out.append(f"{where}: {lost_ev:.0f} trace events were overwritten: lost races are a lower bound there.")
        if bad:
            out.append(f"{where}: {bad:.0f} race events could not be parsed.")
        if no_dmesg := _no_dmesg(g):
            out.append(f"{where}: dmesg was not fetched in {no_dmesg} run(s): warnings there are unknown "
                       "(their 'no kernel warnings' verdict passed without a dmesg).")
        if any("race.lost_races" not in r for r in g.runs):
            out.append(f"{where}: no per-event race metrics (race_metrics not run on this evidence): "
                       "only the lost-race count is known.")
    return out


def _conclusions(groups: list[_Group]) -> list[str]:
    def total(gs: list[_Group], key: str) -> float:
        return sum(_sum(g.runs, key) for g in gs)

    def lost_in(gs: list[_Group]) -> float:
        return sum(_lost(r) or 0.0 for g in gs for r in g.runs)

    shared = [g for g in groups if g.variant != "baseline"]  # the series makes the walk shared
    base = [g for g in groups if g.variant == "baseline"]
    v4 = [g for g in groups if g.variant == "v4"]
    runs = [r for g in shared for r in g.runs]
    lost, secs = lost_in(shared), total(shared, "race.aging_s")
    calls = sum(_calls(r) for r in runs)
    perms, agers = total(shared, "race.lost_winner_perms"), total(shared, "race.lost_winner_ager")
    young, kept = total(shared, "race.lost_old_young"), total(shared, "race.lost_af_kept")
    kept_perms = total(shared, "race.lost_af_kept_perms")
    detailed = bool(runs) and all("race.lost_races" in r for r in runs)
    out = []

    # Claim 1: the race, and the WARN_ON.
    if not shared:
        return ["No runs with the series (v4, v4-fixed): the shared walk was not measured."]
    if lost == 0:
        out.append(f"1. **Not shown**: no lost race in {secs:.0f} s of aging ({calls:.0f} aging calls) with the shared "
                   "walk; this workload does not tell whether stage2_try_set_pte() can lose.")
    else:
        who = (f" The winner was a fault handler changing the PTE's permissions in {perms:.0f} of {lost:.0f}, "
               f"another age walk in {agers:.0f}." if detailed else "")
        out.append(f"1. **The race is real**: with the shared walk stage2_age_walker() lost its cmpxchg and returned "
                   f"-EAGAIN {lost:.0f} times in {secs:.0f} s of aging ({calls:.0f} aging calls).{who}")
    if base:
        out.append(f"   Control: baseline (age walk under the write lock, plain store, no cmpxchg) lost "
                   f"{lost_in(base):.0f} in {total(base, 'race.aging_s'):.0f} s.")
    v4_lost = lost_in(v4)
    v4_warn = total(v4, "race.warnings_test_clear_young") or sum(g.titles.get(f"WARNING in {WARN_FUNC}", 0) for g in v4)
    v4_errs = total(v4, "race.walk_errors_age")
    v4_blind = sum(_no_dmesg(g) for g in v4)
    if not v4:
        out.append("   No v4 runs: whether v4's plain WARN_ON() fires is not measured here.")
    elif v4_lost == 0:
        out.append("   v4 lost no race here, so its plain WARN_ON() was not put to the test.")
    elif v4_warn == 0 and v4_errs == 0:
        blind = f" ({v4_blind} run(s) without dmesg)" if v4_blind else ""
        out.append(f"   **The WARN_ON() did not fire**: v4 keeps the plain WARN_ON(), lost {v4_lost:.0f} races and logged 0 "
                   f"warnings{blind}, and none of its age walks returned non-zero (0 walk errors from the age path). On this "
                   "6.12 tree kvm_pgtable_walk_continue() carries on past -EAGAIN for walkers without "
                   "KVM_PGTABLE_WALK_HANDLE_FAULT, so kvm_pgtable_walk() returns 0 and a lost race never reaches the "
                   "WARN_ON(). It is not \"bogus now\" on 6.12: 0003's WARN_ON_ONCE(r && r != -EAGAIN) is hardening "
                   "against a future change there, not a fix for a warning that fires.")
    else:
        out.append(f"   **The WARN_ON() fires**: {v4_warn:.0f} warning(s) in {WARN_FUNC} and {v4_errs:.0f} non-zero age "
                   "walks on v4: the review's fix is needed.")
    # Claim 2: the PTE was young.
    if lost and detailed:
        w_gained = total(shared, "race.lost_w_gained")
        text = (f"2. **Young: {young:.0f} of {lost:.0f}** lost races ({_pct(young, lost)}) had AF set in the PTE the walker "
                "read (the walker only tries the cmpxchg when AF is set, so this holds by construction). "
                f"AF was still set afterwards in {kept:.0f} ({_pct(kept, lost)}); in {kept_perms:.0f} of those a fault "
                f"handler had just changed the PTE's permissions ({w_gained:.0f} lost races gained write permission, "
                "i.e. a write fault on that very page): the guest was using the page at that moment, so the AF left "
                "set describes a page that is young.")
        if lost - kept:
            text += f" In the other {lost - kept:.0f}, AF was cleared anyway (another walk) or the PTE was being replaced."
        out.append(text)
    elif lost:
        out.append("2. Not measured: the PTE values of the lost races were not parsed (run race_metrics on the evidence).")
    else:
        out.append("2. Not measured: no lost race.")
    # Claim 3: no retry.
    if lost and detailed:
        out.append(f"3. **No retry needed: supported.** In every lost race ({young:.0f}/{lost:.0f}) the walker had seen "
                   "AF and set `young` before its cmpxchg, so the aging call reported the page young. A retry would only "
                   f"have cleared AF on the {kept:.0f} page(s) still marked young, which the guest was using.")
    else:
        out.append("3. Not measured: no lost race with PTE values.")
    return out


# ---------------------------------------------------------------- CLI

def _load_records(results: Path) -> list:
    from orchestrator.reports.results import CellRecord
    from orchestrator.workload.definitions import parse_metric_lines
    recs = []
    for cell_dir in sorted((results / "cells").iterdir()):
        rec = CellRecord.load(cell_dir)
        if rec is None or not rec.complete or rec.cell.get("workload") != "race":
            continue
        ev = cell_dir / "evidence"
        text = {n: (ev / n).read_text(errors="replace") if (ev / n).is_file() else None for n in ("trace", "dmesg", "workload.out")}
        rec.metrics.update(parse_metric_lines(text["workload.out"] or "", "race"))
        rec.metrics.update(race_metrics(text["trace"] or "", text["dmesg"]))
        recs.append(rec)
    return recs


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not (Path(argv[0]) / "cells").is_dir():
        print("usage: python3 -m orchestrator.reports.race RESULTS_DIR  (a run-matrix --results directory)", file=sys.stderr)
        return 2
    print(race_section(_load_records(Path(argv[0]))), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
