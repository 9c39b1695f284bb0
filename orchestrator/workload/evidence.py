"""Run one workload in the guest with its collectors, fetch the raw evidence,
and turn it into flat metrics.

Order in the guest: snapshots (vmstat, memcg events) -> tracing on -> clear
lock_stat -> workload in its own memcg, under a time limit -> tracing off ->
snapshots again, and lru_gen (only its state after the run is parsed).  Raw
files land in the cell directory before anything is parsed, so a parser bug
never loses a measurement.
"""
from __future__ import annotations

import re
import shlex
import signal
import time
from pathlib import Path

from orchestrator.vm.console import GuestCrashed
from orchestrator.vm.shell import ConnectionLost, GuestShell
from orchestrator.parsers.crashlog import find_crashes
from orchestrator.parsers.lockstat import parse_lock_stat, summary as lock_summary
from orchestrator.parsers.lrugen import parse_lru_gen
from orchestrator.parsers.tracestats import buffer_totals, parse_cpu_stats, parse_kprobe_profile, summarize_trace
from orchestrator.parsers.vmstat import delta, parse_vmstat
from orchestrator.parsers.race_trace import race_metrics
from orchestrator.guest_paths import GUEST_EVIDENCE_DIR, GUEST_LIMIT_SIGNAL, SHELL_SIGNAL_BASE, WORKLOAD_CGROUP
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


def run_workload(shell: GuestShell, workload: Workload, params: dict, tpset: TracepointSet | None,
                 outdir: Path, *, timeout_s: int | None = None, timed: bool = False) -> WorkloadRun:
    """Run it with its collectors.  A timed run (orchestrator/workload/timing.py) arms
    none: no tracepoint, kprobe or lock_stat reset while the workload runs."""
    outdir.mkdir(parents=True, exist_ok=True)
    if timed:
        tpset = None
    limit = int(timeout_s or workload.limit_s(params))
    cmd = workload.command(params)
    status, out = shell.run(_setup_script(tpset, timed), timeout=120)
    (outdir / "setup.log").write_text(out)
    # In its own memcg (MGLRU ages per memcg), killed by the guest at the limit;
    # the host waits a little longer so a stuck guest is still caught.
    limit_signal = GUEST_LIMIT_SIGNAL.name.removeprefix("SIG")
    inner = f"echo $$ > {WORKLOAD_CGROUP}/cgroup.procs && exec timeout -s {limit_signal} {limit} {cmd}"
    guest_cmd = (f"sh -c {shlex.quote(inner)} > {GUEST_EVIDENCE_DIR}/workload.out 2>&1; "
                 f"echo $? > {GUEST_EVIDENCE_DIR}/workload.rc; cat {GUEST_EVIDENCE_DIR}/workload.rc")
    t0 = time.monotonic()
    timed_out = False
    ended_by = ""
    try:
        rc_status, rc_out = shell.run(guest_cmd, timeout=limit + HOST_MARGIN_S)
        rc_text = rc_out.strip().splitlines()[-1] if rc_out.strip() else ""
        exit_status = int(rc_text) if re.fullmatch(r"\d+", rc_text) else None
    except GuestCrashed:
        raise  # the guest is gone: nothing left to collect; the caller reports it
    except ConnectionLost as exc:  # the guest lives: collect over the serial console
        exit_status = None
        ended_by = f"exit status unknown: {shell.ssh_lost}"
        (outdir / "workload.error").write_text(f"{exc.args[0]}\n")
    except Exception as exc:  # console/ssh timeout: the guest stopped answering
        exit_status, timed_out = None, True
        ended_by = (f"no result from the guest within {limit + HOST_MARGIN_S} s (limit {limit} s + "
                    f"{HOST_MARGIN_S} s): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        (outdir / "workload.error").write_text(f"{type(exc).__name__}: {exc}\n")
    seconds = time.monotonic() - t0
    missing: list[str] = []
    if not timed_out or exit_status is not None:
        shell.run(_teardown_script(tpset, timed), timeout=300)
        for name in EVIDENCE_FILES:
            if timed and name in PROBE_FILES:
                continue
            for attempt in (1, 2):  # once more: an SFTP transfer on a loaded host can fail once
                try:
                    shell.fetch(f"{GUEST_EVIDENCE_DIR}/{name}", outdir / name)
                    break
                except GuestCrashed:
                    raise
                except Exception as exc:  # noqa: BLE001 - a missing file is reported, not fatal
                    if attempt == 2:
                        missing.append(name)
                        with (outdir / "fetch.errors").open("a") as log:
                            log.write(f"{name}: {type(exc).__name__}: {exc}\n")
    output = (outdir / "workload.out").read_text(errors="replace") if (outdir / "workload.out").exists() else ""
    dmesg = (outdir / "dmesg").read_text(errors="replace") if (outdir / "dmesg").exists() else ""

    def events(name: str) -> str | None:
        p = outdir / name
        return p.read_text(errors="replace") if p.is_file() else None

    oom_kills = (_memcg_counter(events("memcg.events.after"), "oom_kill")
                 - _memcg_counter(events("memcg.events.before"), "oom_kill"))
    excerpt = ""
    if not ended_by:
        ended_by, excerpt = classify_end(exit_status, seconds, limit, dmesg, oom_kills)
        timed_out = timed_out or ended_by.startswith("timed out")
    run = WorkloadRun(workload.name, cmd, exit_status, seconds, output, timed_out, missing=missing, via=shell.via,
                      ended_by=ended_by, ssh_lost=shell.ssh_lost, dmesg_excerpt=excerpt, timed=timed,
                      ages_kvm=workload.ages_kvm)
    run.metrics = evidence_metrics(outdir, workload, tpset)
    run.metrics["workload.seconds"] = round(seconds, 3)
    run.metrics["memcg.oom_kill"] = float(max(0, oom_kills))
    run.crashes = find_crashes(dmesg)
    return run


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
