"""One workload with its collectors: planned as guest scripts, then collected
from what the target brought back into a WorkloadRun with flat metrics.

The scripts, in order: setup (snapshots of vmstat and memcg events, tracing
on, clear lock_stat), the workload in its own memcg under a time limit, and
teardown (tracing off, snapshots again, lru_gen: only its state after the run
is parsed), which leaves the evidence files.  Raw files land in the cell
directory before anything is parsed, so a parser bug never loses a
measurement.  Nothing here talks to a guest: a target (orchestrator/target/)
runs the scripts.
"""
from __future__ import annotations

import re
import shlex
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.parsers.crashlog import find_crashes
from orchestrator.parsers.lockstat import parse_lock_stat, summary as lock_summary
from orchestrator.parsers.lrugen import parse_lru_gen
from orchestrator.parsers.tracestats import buffer_totals, parse_cpu_stats, parse_kprobe_profile, summarize_trace
from orchestrator.parsers.vmstat import delta, parse_vmstat
from orchestrator.parsers.race_trace import race_metrics
from orchestrator.guest_paths import GUEST_EVIDENCE_DIR, GUEST_LIMIT_SIGNAL, SHELL_SIGNAL_BASE, WORKLOAD_CGROUP
from orchestrator.target.job import GuestScript, ScriptResult
from orchestrator.workload.tracing import KPROBE_GROUP, TracepointSet
from orchestrator.workload.definitions import Workload, parse_workload_output
from orchestrator.workload.outcome import LOCK_CLASSES, WorkloadRun

# Files fetched after the run (guest name -> kept under the same name).
EVIDENCE_FILES = ("lock_stat", "trace", "trace_stats", "kprobe_profile", "vmstat.before", "vmstat.after",
                  "lru_gen.after", "lru_gen_enabled", "dmesg", "workload.out",
                  "memcg.events.before", "memcg.events.after")
# What a timed run does not collect (nothing is armed to produce them).
PROBE_FILES = frozenset({"lock_stat", "trace", "trace_stats", "kprobe_profile"})
# The host waits this much longer than the guest-side limit before it gives up
# on the guest (which then stopped answering).
HOST_MARGIN_S = 120
# __oom_kill_process(): "Out of memory: Killed process ..." (whole guest) or
# "Memory cgroup out of memory: Killed process ..." (a memory.max limit).
_OOM_KILL = re.compile(r"(?P<what>Memory cgroup out of memory|Out of memory): Killed process (?P<pid>\d+) \((?P<comm>[^)]*)\)")
_FAULT_LINE = re.compile(r"unhandled|segfault|Unable to handle|general protection", re.I)


def _memcg_counter(text: str | None, name: str) -> int:
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name and parts[1].isdigit():
            return int(parts[1])
    return 0


def classify_end(exit_status: int | None, seconds: float, limit: int, dmesg: str,
                 oom_kills: int) -> tuple[str, str]:
    """(why the workload did not end normally, the dmesg lines that say so); ("", "") if it exited.

    A SIGKILL (137) is the guest-side time limit only when no OOM kill
    happened; the kernel's OOM report says whether a memory cgroup limit or
    the whole guest ran out of memory.
    """
    if exit_status is None or exit_status < SHELL_SIGNAL_BASE:
        return "", ""
    sig = exit_status - SHELL_SIGNAL_BASE
    oom = [m for m in _OOM_KILL.finditer(dmesg)]
    if sig == signal.SIGKILL and (oom_kills > 0 or oom):
        lines = [ln for ln in dmesg.splitlines() if "out of memory" in ln.lower() or "oom-kill:" in ln]
        if oom and oom[-1]["what"] == "Out of memory":
            why = "killed by the guest kernel's OOM killer: the whole guest ran out of memory"
        else:
            why = "killed by the OOM killer: its memory cgroup hit memory.max"
        if oom:
            why += f" ({oom[-1]['comm']}, pid {oom[-1]['pid']})"
        return why, "\n".join(lines[-8:])
    if sig == GUEST_LIMIT_SIGNAL and seconds >= limit - 1:
        return f"timed out: the guest-side limit of {limit} s killed it (SIGKILL)", ""
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    faults = [ln for ln in dmesg.splitlines() if _FAULT_LINE.search(ln)]
    return f"killed by {name} (exit status {exit_status})", "\n".join(faults[-8:])


def _setup_script(tpset: TracepointSet | None, timed: bool = False) -> str:
    e = GUEST_EVIDENCE_DIR
    lines = [f"rm -rf {e}; mkdir -p {e}", f"cat /proc/vmstat > {e}/vmstat.before",
             f"cat /sys/kernel/mm/lru_gen/enabled > {e}/lru_gen_enabled 2>/dev/null",
             f"mkdir -p {WORKLOAD_CGROUP}", f"cat {WORKLOAD_CGROUP}/memory.events > {e}/memcg.events.before 2>/dev/null",
             "dmesg -c > /dev/null"]
    if tpset is not None:
        lines.append(tpset.setup_script())
    if not timed:
        lines.append("[ -w /proc/lock_stat ] && echo 0 > /proc/lock_stat")
    return "\n".join(lines) + "\ntrue"


def _teardown_script(tpset: TracepointSet | None, timed: bool = False) -> str:
    e = GUEST_EVIDENCE_DIR
    lines = []
    if tpset is not None:
        lines.append(tpset.teardown_script(e))
    # Lift a limit the workload may have set: the next run starts unlimited.
    lines += [f"cat {WORKLOAD_CGROUP}/memory.events > {e}/memcg.events.after 2>/dev/null",
              f"echo max > {WORKLOAD_CGROUP}/memory.max 2>/dev/null",
              *([] if timed else [f"cat /proc/lock_stat > {e}/lock_stat 2>/dev/null"]),
              f"cat /proc/vmstat > {e}/vmstat.after",
              f"cat /sys/kernel/debug/lru_gen > {e}/lru_gen.after 2>/dev/null", f"dmesg > {e}/dmesg"]
    return "\n".join(lines) + "\ntrue"


# The names of the workload's scripts (the run itself is "workload NAME").
SETUP_SCRIPT = "workload setup"
TEARDOWN_SCRIPT = "workload teardown"
SETUP_TIMEOUT_S = 120
TEARDOWN_TIMEOUT_S = 300


@dataclass(frozen=True)
class WorkloadPlan:
    """A workload's scripts and what collecting their results needs to know."""
    workload: Workload
    command: str  # the workload's own command line (reports quote it)
    limit_s: int  # the guest-side time limit
    host_wait_s: int  # how long the host waits for the run script (limit + HOST_MARGIN_S)
    tpset: TracepointSet | None
    timed: bool
    scripts: tuple[GuestScript, ...]  # setup, run, teardown

    @property
    def run_script(self) -> str:
        return f"workload {self.workload.name}"


def plan_workload(workload: Workload, params: dict, tpset: TracepointSet | None, *, timeout_s: int | None = None,
                  timed: bool = False, needs: str | None = None) -> WorkloadPlan:
    """The scripts that run it with its collectors.  A timed run (orchestrator/workload/timing.py)
    arms none: no tracepoint, kprobe or lock_stat reset while the workload runs.  needs: the
    script that must pass first (the nested-KVM check)."""
    if timed:
        tpset = None
    limit = int(timeout_s or workload.limit_s(params))
    cmd = workload.command(params)
    # In its own memcg (MGLRU ages per memcg), killed by the guest at the limit;
    # the host waits a little longer so a stuck guest is still caught.
    limit_signal = GUEST_LIMIT_SIGNAL.name.removeprefix("SIG")
    inner = f"echo $$ > {WORKLOAD_CGROUP}/cgroup.procs && exec timeout -s {limit_signal} {limit} {cmd}"
    run = (f"sh -c {shlex.quote(inner)} > {GUEST_EVIDENCE_DIR}/workload.out 2>&1; "
           f"rc=$?; echo $rc > {GUEST_EVIDENCE_DIR}/workload.rc; exit $rc")
    evidence = tuple(n for n in EVIDENCE_FILES if not (timed and n in PROBE_FILES))
    scripts = (
        GuestScript(SETUP_SCRIPT, _setup_script(tpset, timed), SETUP_TIMEOUT_S, needs=needs),
        GuestScript(f"workload {workload.name}", run, limit + HOST_MARGIN_S, needs=SETUP_SCRIPT),
        # Runs whatever the workload's exit status: its evidence says how it ended.
        GuestScript(TEARDOWN_SCRIPT, _teardown_script(tpset, timed), TEARDOWN_TIMEOUT_S,
                    evidence=tuple(f"{GUEST_EVIDENCE_DIR}/{n}" for n in evidence), needs=SETUP_SCRIPT),
    )
    return WorkloadPlan(workload, cmd, limit, limit + HOST_MARGIN_S, tpset, timed, scripts)


def collect_workload(plan: WorkloadPlan, results: Sequence[ScriptResult], outdir: Path, *,
                     via: str = "ssh", ssh_lost: str = "") -> WorkloadRun:
    """The WorkloadRun of the plan's scripts, from their results and the evidence
    files the target saved in outdir.  via: how the guest was reached at the end;
    ssh_lost: why SSH was given up mid-run ("" if it was not)."""
    outdir.mkdir(parents=True, exist_ok=True)
    by_name = {r.name: r for r in results}
    absent = ScriptResult("", "not-run", None, 0.0, "", detail="not in the outcome")
    setup = by_name.get(SETUP_SCRIPT, absent)
    run = by_name.get(plan.run_script, absent)
    teardown = by_name.get(TEARDOWN_SCRIPT, absent)
    if setup.status != "not-run":
        (outdir / "setup.log").write_text(setup.output)
    workload = plan.workload
    exit_status = run.exit_status if run.status in ("pass", "fail") else None
    timed_out = False
    ended_by = ""
    if run.status == "error":  # the channel broke; the guest lived on
        ended_by = f"exit status unknown: {ssh_lost or run.detail}"
        (outdir / "workload.error").write_text(f"{run.detail}\n")
    elif run.status == "timeout":  # the guest stopped answering
        timed_out = True
        margin = plan.host_wait_s - plan.limit_s
        ended_by = (f"no result from the guest within {plan.host_wait_s} s (limit {plan.limit_s} s + "
                    f"{margin} s): {run.detail}")
        (outdir / "workload.error").write_text(f"{run.output}\n")
    elif run.status == "not-run":
        ended_by = f"not run: {run.detail}"
    missing = [Path(p).name for p in teardown.missing]
    if teardown.missing:
        with (outdir / "fetch.errors").open("a") as log:
            for remote, why in teardown.missing.items():
                log.write(f"{Path(remote).name}: {why}\n")

    def text(name: str) -> str | None:
        p = outdir / name
        return p.read_text(errors="replace") if p.is_file() else None

    output = text("workload.out") or ""
    dmesg = text("dmesg") or ""
    oom_kills = (_memcg_counter(text("memcg.events.after"), "oom_kill")
                 - _memcg_counter(text("memcg.events.before"), "oom_kill"))
    excerpt = ""
    if not ended_by:
        ended_by, excerpt = classify_end(exit_status, run.seconds, plan.limit_s, dmesg, oom_kills)
        timed_out = timed_out or ended_by.startswith("timed out")
    result = WorkloadRun(workload.name, plan.command, exit_status, run.seconds, output, timed_out, missing=missing,
                         via=via, ended_by=ended_by, ssh_lost=ssh_lost, dmesg_excerpt=excerpt, timed=plan.timed,
                         ages_kvm=workload.ages_kvm)
    result.metrics = evidence_metrics(outdir, workload, plan.tpset)
    result.metrics["workload.seconds"] = round(run.seconds, 3)
    result.metrics["memcg.oom_kill"] = float(max(0, oom_kills))
    result.crashes = find_crashes(dmesg)
    return result


def evidence_metrics(outdir: Path, workload: Workload, tpset: TracepointSet | None) -> dict[str, float]:
    """Flat key -> value metrics from the raw files in outdir (pure given the files)."""
    def text(name: str) -> str | None:
        p = outdir / name
        return p.read_text(errors="replace") if p.is_file() else None

    m: dict[str, float] = {}
    if (out := text("workload.out")) is not None:
        m.update(parse_workload_output(workload, out))
    # Lock figures only where lock_stat was really read: a kernel without
    # LOCK_STAT leaves an empty file, and "not measured" is not 0.
    if (ls := text("lock_stat")) is not None and ls.startswith("lock_stat version"):
        m.update(lock_summary(parse_lock_stat(ls), LOCK_CLASSES))
    if (kp := text("kprobe_profile")) is not None:
        for name, hits in parse_kprobe_profile(kp).items():
            short = name.split("/", 1)[-1] if name.startswith(f"{KPROBE_GROUP}/") else name
            m[f"kprobe.{short}.hits"] = hits.nhit
            m[f"kprobe.{short}.missed"] = hits.nmissed
    if (st := text("trace_stats")) is not None:
        per_cpu = {}
        parts = re.split(r"^== cpu(\d+)\s*$", st, flags=re.M)
        for i in range(1, len(parts) - 1, 2):
            per_cpu[int(parts[i])] = parse_cpu_stats(parts[i + 1])
        if per_cpu:
            totals = buffer_totals(per_cpu)
            m["trace.events_written"] = totals.written
            m["trace.events_lost"] = totals.lost
            m["trace.events_in_buffer"] = totals.entries
    if (tr := text("trace")) is not None:
        summ = summarize_trace(tr.splitlines())
        for name, ev in summ.events.items():
            m[f"trace.{name}.count"] = ev.count
            if ev.rate_per_s is not None:
                m[f"trace.{name}.rate_per_s"] = round(ev.rate_per_s, 3)
    if tpset is not None and tpset.name == "race" and (tr_race := text("trace")) is not None:
        # dmesg may be None (not fetched): race_metrics then marks warnings unknown.
        m.update(race_metrics(tr_race, text("dmesg")))
    if (before := text("vmstat.before")) is not None and (after := text("vmstat.after")) is not None:
        for k, v in delta(parse_vmstat(before), parse_vmstat(after)).items():
            if k.startswith(("pgscan", "pgsteal", "pswp", "workingset", "pgrefill", "pgactivate", "pgdeactivate")):
                m[f"vmstat.{k}"] = v
    if (en := text("lru_gen_enabled")) is not None and en.strip():
        try:
            m["lru_gen.enabled"] = int(en.strip(), 16)
        except ValueError:
            pass
    if (lg := text("lru_gen.after")) is not None:
        vecs = parse_lru_gen(lg)
        m["lru_gen.memcgs"] = len({v.memcg_id for v in vecs})
    return m
