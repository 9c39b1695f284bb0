"""Crash classifier on console logs of the project's kernel (real boots, see
tests/fixtures/evidence/README.md), plus checks of the pattern table itself."""
from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.parsers import crashlog

FIX = Path(__file__).parent / "fixtures" / "evidence"


def crashes(name: str) -> list[crashlog.Crash]:
    return crashlog.find_crashes((FIX / name).read_bytes())


def console_line(name: str, lineno: int) -> str:
    return (FIX / name).read_bytes().decode().split("\n")[lineno - 1]


def test_sysrq_panic():
    (c,) = crashes("console-panic-sysrq.log")
    assert c.kind == "panic"
    assert c.title == "kernel panic: sysrq triggered crash"
    assert "Kernel panic - not syncing: sysrq triggered crash" in console_line("console-panic-sysrq.log", c.line)
    # dump_backtrace, show_stack, dump_stack_lvl, dump_stack, panic are how it was printed
    assert c.frames[:3] == ("sysrq_handle_crash", "__handle_sysrq", "write_sysrq_trigger")
    # panic=-1 reboots before "---[ end Kernel panic": the report runs to the end of the log
    assert c.excerpt.splitlines()[-1].endswith("Memory Limit: none")
    assert "\r" not in c.excerpt


def test_oops_and_repeated_warnings():
    got = crashes("console-oops-warning.log")
    assert [c.kind for c in got] == ["oops", "warning", "warning", "warning"]
    oops = got[0]
    assert oops.title == "Unable to handle kernel NULL pointer dereference in sysrq_handle_showmem"
    assert oops.fields["addr"] == "0000000000000000"
    # "Internal error: Oops" belongs to the same report, which ends at its end marker
    assert "Internal error: Oops: 0000000097c08006 [#1] SMP" in oops.excerpt
    assert oops.excerpt.splitlines()[-1].endswith("---[ end trace 0000000000000000 ]---")
    assert oops.frames[:2] == ("sysrq_handle_showmem", "write_sysrq_trigger")
    assert "invoke_syscall" in oops.frames  # printed as invoke_syscall.constprop.0: gcc clone suffix dropped

    warns = got[1:]
    assert {w.title for w in warns} == {"WARNING in kvm_pgtable_stage2_test_clear_young"}
    assert len({w.fingerprint for w in warns}) == 1 and warns[0].fingerprint != oops.fingerprint
    w = warns[0]
    assert w.fields["file"].endswith("arch/arm64/kvm/hyp/pgtable.c") and w.fields["line"] == "1309"
    assert w.frames[:4] == ("kvm_pgtable_stage2_test_clear_young", "kvm_age_gfn",
                            "kvm_mmu_notifier_clear_young", "__mmu_notifier_clear_young")
    assert "WARNING: CPU: 1 PID: 50 at" in console_line("console-oops-warning.log", w.line)
    assert [x.line for x in warns] == [229, 273, 317]
    assert w.end_line == 271 and "end trace" in console_line("console-oops-warning.log", w.end_line)


def test_soft_lockups_in_user_mode():
    got = crashes("console-softlockup.log")
    assert [(c.kind, c.title, c.fields["cpu"], c.fields["secs"]) for c in got] == [
        ("lockup", "BUG: soft lockup", "0", "36"), ("lockup", "BUG: soft lockup", "1", "36")]
    # no kernel stack (user mode): each report ends with the register dump
    assert got[0].end_line == got[1].line - 1
    assert got[1].excerpt.splitlines()[-1].split("]", 1)[1].strip().startswith("x2 :")
    assert "qemu-system-aarch64" not in got[1].excerpt


def test_clean_boot_has_no_crash():
    # boot and two access_tracking_perf_test runs (capture payload left out, see README)
    assert crashes("console-boot-clean.log") == []


def test_fingerprint_ignores_offsets_and_timestamps():
    text = (FIX / "console-oops-warning.log").read_text()
    shifted = text.replace("kvm_age_gfn+0x28/0x3c", "kvm_age_gfn+0x2c/0x44").replace("[    5.", "[  105.")
    a = crashlog.find_crashes(text)[1]
    b = crashlog.find_crashes(shifted)[1]
    assert a.fingerprint == b.fingerprint and a.excerpt != b.excerpt


def test_truncated_report_is_kept():
    lines = (FIX / "console-oops-warning.log").read_text().split("\n")
    got = crashlog.find_crashes("\n".join(lines[:240]))  # cut in the WARNING's register dump
    assert [c.kind for c in got] == ["oops", "warning"]
    assert got[1].end_line == 240 and got[1].frames == ()


def test_garbage_and_interleaving_do_not_break_it():
    rng = random.Random(1)
    log = (FIX / "console-oops-warning.log").read_bytes()
    noise = bytes(rng.randrange(256) for _ in range(20000))
    got = crashlog.find_crashes(noise + b"\n" + log + noise)
    assert [c.kind for c in got] == ["oops", "warning", "warning", "warning"]
    assert crashlog.find_crashes(noise) == []
    assert crashlog.find_crashes(b"\x00" * 100000) == []


def test_bounded_time_on_large_input():
    log = (FIX / "console-softlockup.log").read_text()
    filler = "[   12.345678] random driver chatter: WARNING BUG Oops rcu INFO: task\n" * 200000
    long_line = "x" * 5_000_000  # no newline for megabytes
    start = time.monotonic()
    got = crashlog.find_crashes(filler + long_line + "\n" + log)
    assert time.monotonic() - start < 20
    assert [c.title for c in got] == ["BUG: soft lockup", "BUG: soft lockup"]


# Header regexes against lines written with the printk formats of the 6.12 tree
# (no captured report of these kinds exists yet: they are format checks, not fixtures).
@pytest.mark.parametrize("line,pattern,title_start", [
    ("WARNING: possible circular locking dependency detected", "lockdep-circular", "possible deadlock"),
    ("WARNING: possible recursive locking detected", "lockdep-recursive", "possible deadlock"),
    ("WARNING: inconsistent lock state", "lockdep-inconsistent", "inconsistent lock state"),
    ("WARNING: lock held when returning to user space!", "lockdep-return-to-user", "lock held"),
    ("WARNING: suspicious RCU usage", "lockdep-rcu", "suspicious RCU usage"),
    ("WARNING: CPU: 0 PID: 1 at mm/vmscan.c:123 lru_gen_seq_write+0x10/0x20", "warning", "WARNING in lru_gen_seq_write"),
    ("WARNING: CPU: 0 PID: 1 at kvm_age_gfn+0x10/0x20", "warning", "WARNING in kvm_age_gfn"),
    ("BUG: sleeping function called from invalid context at kernel/locking/rwsem.c:1578", "bug-sleeping", "BUG: sleeping function"),
    ("BUG: scheduling while atomic: kworker/0:1/12/0x00000002", "bug-scheduling-atomic", "BUG: scheduling while atomic"),
    ("watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [qemu:123]", "soft-lockup", "BUG: soft lockup"),
    ("kernel BUG at mm/vmscan.c:4242!", "kernel-bug", "kernel BUG"),
    ("Unable to handle kernel paging request at virtual address ffff800012345678", "unable-to-handle", "Unable to handle kernel paging request"),
    ("Internal error: Oops - BUG: 00000000f2000800 [#1] SMP", "internal-error", "Internal error: Oops - BUG"),
    ("Kernel panic - not syncing: Oops: Fatal exception", "panic", "kernel panic: Oops: Fatal exception"),
    ("rcu: INFO: rcu_sched self-detected stall on CPU", "rcu-stall", "INFO: rcu detected stall"),
    ("rcu: INFO: rcu_sched detected stalls on CPUs/tasks:", "rcu-stall", "INFO: rcu detected stall"),
    ("INFO: task kworker/u4:1:42 blocked for more than 122 seconds.", "hung-task", "INFO: task hung"),
    ("BUG: KASAN: slab-use-after-free in kvm_age_gfn+0x44/0x80", "kasan", "KASAN: slab-use-after-free in kvm_age_gfn"),
    ("UBSAN: array-index-out-of-bounds in mm/vmscan.c:3000:12", "ubsan", "UBSAN: array-index-out-of-bounds"),
    ("Watchdog detected hard LOCKUP on cpu 1", "hard-lockup", "BUG: hard lockup"),
    ("BUG: MAX_LOCKDEP_ENTRIES too low!", "bug-other", "BUG: MAX_LOCKDEP_ENTRIES too low!"),
])
def test_header_formats(line, pattern, title_start):
    (c,) = crashlog.find_crashes(f"[   12.345678] {line}\n")
    assert c.pattern == pattern and c.title.startswith(title_start) and c.line == 1


def test_pattern_table_loads_and_rejects_bad_files(tmp_path):
    table = crashlog.load_patterns()
    assert {p.kind for p in table.patterns} >= {"warning", "bug", "oops", "panic", "lockdep", "rcu_stall",
                                                 "lockup", "hung_task", "kasan", "ubsan"}
    assert table.is_generic("dump_backtrace") and table.is_generic("_raw_write_lock")
    assert not table.is_generic("kvm_age_gfn")
    bad = tmp_path / "p.yaml"
    bad.write_text("patterns:\n  - name: x\n    kind: bug\n    header: 'BUG: ('\n    title: t\n")
    with pytest.raises(UserError, match="bad regular expression"):
        crashlog.load_patterns(bad)
    bad.write_text("patterns:\n  - name: x\n    kind: bug\n    header: 'BUG'\n    title: '{nope} in {frame}'\n")
    with pytest.raises(UserError, match="nope"):
        crashlog.load_patterns(bad)
    bad.write_text("patterns:\n  - name: x\n    kind: bug\n    header: 'X'\n")
    with pytest.raises(UserError, match="missing title"):
        crashlog.load_patterns(bad)


def test_user_pattern_file(tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text("patterns:\n  - name: marker\n    kind: bug\n    header: '@@TEST-DONE rc=(?P<rc>\\d+)'\n"
                   "    title: 'test finished with {rc}'\n    max_lines: 1\n")
    got = crashlog.find_crashes((FIX / "console-oops-warning.log").read_bytes(), crashlog.load_patterns(own))
    assert [c.title for c in got] == ["test finished with 0"]
