"""Crash classifier: syzkaller-style titles, frames and fingerprints.

Real console logs of the project's kernel (tests/fixtures/evidence/README.md,
tests/fixtures/crashes/README.md) are checked against their expected titles;
formats no captured log shows yet (x86 reports from CI of other architectures,
older kernels) are checked on short reports written with the printk formats of
the kernel source named in each case: those are format checks, not fixtures."""
from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.errors import UserError
from orchestrator.parsers import crashlog

FIX = Path(__file__).parent / "fixtures" / "evidence"
CRASHES = Path(__file__).parent / "fixtures" / "crashes"


def crashes(name: str) -> list[crashlog.Crash]:
    return crashlog.find_crashes((FIX / name).read_bytes())


def console_line(name: str, lineno: int) -> str:
    return (FIX / name).read_bytes().decode().split("\n")[lineno - 1]


def one(text: str) -> crashlog.Crash:
    got = crashlog.find_crashes(text)
    assert len(got) == 1, [c.title for c in got]
    return got[0]


# ---------------------------------------------------------------- captured logs (evidence fixtures)

def test_sysrq_panic():
    (c,) = crashes("console-panic-sysrq.log")
    assert c.kind == "panic" and not c.corrupted
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
    # syzkaller's arm64 rule: "Unable to handle kernel X" -> "BUG: unable to handle kernel X in FUNC"
    assert oops.title == "BUG: unable to handle kernel NULL pointer dereference in sysrq_handle_showmem"
    assert not oops.corrupted
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
        ("lockup", "BUG: soft lockup in corrupted", "0", "36"), ("lockup", "BUG: soft lockup in corrupted", "1", "36")]
    # no kernel stack (user mode): each report ends with the register dump, and has
    # no frame to name it (syzkaller would call it corrupted too)
    assert got[0].end_line == got[1].line - 1
    assert got[1].excerpt.splitlines()[-1].split("]", 1)[1].strip().startswith("x2 :")
    assert "qemu-system-aarch64" not in got[1].excerpt
    assert got[0].corrupted and got[0].corrupted_reason == "no call trace in the report"


def test_clean_boot_has_no_crash():
    # boot and two access_tracking_perf_test runs (capture payload left out, see README)
    assert crashes("console-boot-clean.log") == []


def test_fingerprint_ignores_offsets_and_timestamps():
    text = (FIX / "console-oops-warning.log").read_text()
    shifted = text.replace("kvm_age_gfn+0x28/0x3c", "kvm_age_gfn+0x2c/0x44").replace("[    5.", "[  105.")
    a = crashlog.find_crashes(text)[1]
    b = crashlog.find_crashes(shifted)[1]
    assert a.fingerprint == b.fingerprint and a.excerpt != b.excerpt


def test_truncated_report_is_flagged():
    lines = (FIX / "console-oops-warning.log").read_text().split("\n")
    got = crashlog.find_crashes("\n".join(lines[:240]))  # cut in the WARNING's register dump
    assert [c.kind for c in got] == ["oops", "warning"]
    w = got[1]
    assert w.end_line == 240 and w.frames == ("kvm_pgtable_stage2_test_clear_young",)  # the pc line only
    assert w.title == "WARNING in kvm_pgtable_stage2_test_clear_young"
    assert w.corrupted and w.corrupted_reason == "the log ends before its call trace"
    assert not got[0].corrupted


def test_garbage_and_interleaving_do_not_break_it():
    rng = random.Random(1)
    log = (FIX / "console-oops-warning.log").read_bytes()
    noise = bytes(rng.randrange(256) for _ in range(20000))
    got = crashlog.find_crashes(noise + b"\n" + log + noise)
    assert [c.kind for c in got] == ["oops", "warning", "warning", "warning"]
    assert crashlog.find_crashes(noise) == []
    assert crashlog.find_crashes(b"\x00" * 100000) == []


def test_bounded_time_on_large_input_and_chunk_boundaries(tmp_path, monkeypatch):
    log = (FIX / "console-softlockup.log").read_text()
    filler = "[   12.345678] random driver chatter: WARNING BUG Oops rcu INFO: task\n" * 200000
    long_line = "x" * 5_000_000  # no newline for megabytes
    start = time.monotonic()
    got = crashlog.find_crashes(filler + long_line + "\n" + log)
    assert time.monotonic() - start < 20
    assert [c.title for c in got] == ["BUG: soft lockup in corrupted"] * 2
    # a report split across read chunks is the same report, with the same line numbers
    monkeypatch.setattr(crashlog, "CHUNK_BYTES", 4096)
    path = tmp_path / "console.log"
    path.write_bytes((FIX / "console-oops-warning.log").read_bytes())
    small = crashlog.scan_file(path)
    monkeypatch.undo()
    assert [(c.title, c.line, c.end_line, c.frames) for c in small] == \
        [(c.title, c.line, c.end_line, c.frames) for c in crashes("console-oops-warning.log")]


# ---------------------------------------------------------------- the LKDTM corpus (tests/fixtures/crashes)

def _corpus() -> list[tuple[str, dict]]:
    expected = CRASHES / "expected.yaml"
    if not expected.exists():
        return []
    return [(name, spec) for name, spec in (yaml.safe_load(expected.read_text()) or {}).items()]


@pytest.mark.parametrize("name,spec", _corpus(), ids=[n for n, _ in _corpus()])
def test_lkdtm_corpus(name, spec):
    got = crashlog.scan_file(CRASHES / name)
    want = spec["reports"]
    assert [(c.kind, c.title) for c in got] == [(w["kind"], w["title"]) for w in want]
    for c, w in zip(got, want):
        assert list(c.frames[:len(w["frames"])]) == w["frames"], c.title
        assert c.corrupted == w.get("corrupted", False), c.corrupted_reason


def test_corpus_has_every_expected_log():
    names = {n for n, _ in _corpus()}
    logs = {p.name for p in CRASHES.glob("*.log")}
    assert logs == names, "each captured log needs its expected titles in expected.yaml (and vice versa)"


# ---------------------------------------------------------------- syzkaller rules on other formats
# Reports below are written with the printk formats of the kernel file named in
# each case (x86 6.x unless said otherwise), not captured.

X86_WARN = """\
[  101.000001] ------------[ cut here ]------------
[  101.000002] WARNING: CPU: 1 PID: 4321 at {src} {func}+0x2a/0x60
[  101.000003] Modules linked in:
[  101.000004] CPU: 1 UID: 0 PID: 4321 Comm: syz-executor.3 Not tainted 6.12.0 #1
[  101.000005] RIP: 0010:{func}+0x2a/0x60
[  101.000006] Code: 48 89 df e8 00 00 00 00 <0f> 0b 5b 5d c3
[  101.000007] RSP: 0018:ffffc90003f3fc28 EFLAGS: 00010246
[  101.000008] Call Trace:
[  101.000009]  <TASK>
[  101.000010]  ? show_regs+0x8c/0xa0
[  101.000011]  ? __warn+0xe5/0x3c0
{frames}[  101.000020]  do_syscall_64+0xd2/0x260
[  101.000021]  entry_SYSCALL_64_after_hwframe+0x77/0x7f
[  101.000022]  </TASK>
[  101.000023] ---[ end trace 0000000000000000 ]---
"""


def x86_warn(func, src="net/core/foo.c:12", frames=("bar", "baz")):
    body = "".join(f"[  101.000012]  {f}+0x10/0x20\n" for f in (func, *frames))
    return X86_WARN.format(func=func, src=src, frames=body)


def test_x86_warning_uses_rip_and_skips_unreliable_frames():
    c = one(x86_warn("tcp_close"))
    assert c.title == "WARNING in tcp_close" and c.frames[:3] == ("tcp_close", "bar", "baz")
    assert "show_regs" not in c.frames and not c.corrupted


@pytest.mark.parametrize("helper,title", [
    ("__might_sleep", "WARNING in bar"),             # kernel/sched/core.c
    # drivers/usb/core/urb.c: syzkaller names the driver that submitted the urb
    ("usb_submit_urb", "WARNING in bar/usb_submit_urb"),
    ("_raw_spin_lock_irqsave", "WARNING in bar"),
    ("__do_kernel_fault", "WARNING in bar"),         # arch/arm64/mm/fault.c
])
def test_warning_names_the_first_frame_that_is_not_a_helper(helper, title):
    assert one(x86_warn(helper)).title == title


def test_clone_suffixes_and_syscall_prefixes():
    c = one(x86_warn("foo.isra.0", frames=("bar.constprop.0", "baz.part.0", "__x64_sys_ioctl")))
    assert c.title == "WARNING in foo"
    assert c.frames[:4] == ("foo", "bar", "baz", "sys_ioctl")


def test_newer_warning_header():
    # kernel/panic.c of newer kernels: "WARNING: %s:%d at %pS, CPU#%d: %s/%d"
    text = ("[    5.1] WARNING: mm/vmscan.c:3140 at lru_gen_seq_write+0x10/0x20, CPU#1: sh/77\n"
            "[    5.1] pc : lru_gen_seq_write+0x10/0x20\n[    5.1] Call trace:\n"
            "[    5.1]  lru_gen_seq_write+0x10/0x20\n[    5.1]  vfs_write+0x1/0x2\n[    5.1] ---[ end trace 0 ]---\n")
    c = one(text)
    assert c.title == "WARNING in lru_gen_seq_write" and c.fields["file"] == "mm/vmscan.c"


def test_panic_on_warn_is_the_warning():
    warn = x86_warn("tcp_close").replace("[  101.000023] ---[ end trace 0000000000000000 ]---\n", "")
    panic = ("[  101.000030] Kernel panic - not syncing: kernel: panic_on_warn set ...\n"
             "[  101.000031] CPU: 1 UID: 0 PID: 4321 Comm: syz-executor.3\n[  101.000032] Call Trace:\n"
             "[  101.000033]  panic+0x1/0x2\n[  101.000034]  check_panic_on_warn+0x1/0x2\n"
             "[  101.000035]  __warn+0x1/0x2\n[  101.000036] ---[ end Kernel panic - not syncing: kernel: panic_on_warn set ... ]---\n")
    c = one(warn + panic)
    assert c.title == "WARNING in tcp_close" and not c.corrupted
    assert "panic_on_warn set" in c.excerpt and c.end_line == (warn + panic).count("\n")
    # the same panic without the report it belongs to: flagged, not mistitled
    lone = one("[    1.0] boot\n" + panic)
    assert lone.title == "kernel panic: kernel: panic_on_warn set" and lone.corrupted


def test_headers_after_other_text_on_the_line():
    # syzkaller's console prefixes: a login prompt, dropped printk messages
    for prefix in ("buildroot login: ", "** 12 printk messages dropped ** "):
        c = one(prefix + x86_warn("tcp_close").split("\n", 1)[1])
        assert c.title == "WARNING in tcp_close"


GPF = """\
[  50.0] Oops: general protection fault, probably for non-canonical address 0xdffffc0000000001: 0000 [#1] PREEMPT SMP KASAN NOPTI
[  50.0] KASAN: null-ptr-deref in range [0x0000000000000008-0x000000000000000f]
[  50.0] CPU: 0 UID: 0 PID: 99 Comm: syz Not tainted 6.12.0 #1
[  50.0] RIP: 0010:{top}+0x61/0x3a0
[  50.0] Call Trace:
[  50.0]  <TASK>
[  50.0]  ? die_addr+0x3c/0xa0
[  50.0]  {top}+0x61/0x3a0
[  50.0]  netlink_sendmsg+0x8e4/0xcb0
[  50.0]  </TASK>
[  50.0] ---[ end trace 0000000000000000 ]---
"""


@pytest.mark.parametrize("header,title", [
    # arch/x86/kernel/traps.c
    ("general protection fault, probably for non-canonical address 0xdffffc0000000001: 0000 [#1] PREEMPT SMP KASAN",
     "general protection fault in nla_put"),
    ("divide error: 0000 [#1] PREEMPT SMP KASAN", "divide error in nla_put"),
    ("stack segment: 0000 [#1] PREEMPT SMP KASAN", "stack segment fault in nla_put"),
    ("BUG: kernel NULL pointer dereference, address: 0000000000000008",
     "BUG: unable to handle kernel NULL pointer dereference in nla_put"),
    ("BUG: unable to handle page fault for address: ffffed100c8a0001",
     "BUG: unable to handle kernel paging request in nla_put"),
])
def test_x86_faults(header, title):
    text = GPF.format(top="nla_put").split("\n", 1)[1]
    c = one(f"[  50.0] {header}\n" + text)
    assert c.title == title and c.kind == "oops"


def test_x86_oops_line_belongs_to_the_fault_report():
    # arch/x86/mm/fault.c then arch/x86/kernel/dumpstack.c __die_header ("Oops: " + "Oops")
    text = ("[ 50.0] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
            "[ 50.0] #PF: supervisor read access in kernel mode\n[ 50.0] Oops: Oops: 0000 [#1] PREEMPT SMP KASAN NOPTI\n"
            + GPF.format(top="nla_put").split("\n", 1)[1])
    c = one(text)
    assert c.title == "BUG: unable to handle kernel NULL pointer dereference in nla_put"


def test_arm32_internal_error():
    # arch/arm/kernel/traps.c __die: "Internal error: %s: %x [#%d]" with an empty string
    text = ("[ 9.0] Internal error: : 1b [#1] SMP ARM\n[ 9.0] PC is at dev_ioctl+0x2c/0x40\n"
            "[ 9.0] LR is at sock_ioctl+0x10/0x20\n[ 9.0] Backtrace:\n"
            "[ 9.0]  dev_ioctl+0x2c/0x40\n[ 9.0]  sock_ioctl+0x10/0x20\n[ 9.0] ---[ end trace 0 ]---\n")
    assert one(text).title == "Internal error in dev_ioctl"


LOCKDEP_CIRCULAR = """\
[  7.0] ======================================================
[  7.0] WARNING: possible circular locking dependency detected
[  7.0] 6.12.0 #1 Not tainted
[  7.0] ------------------------------------------------------
[  7.0] sh/88 is trying to acquire lock:
[  7.0] ffff0000c0a1b2c8 (&dev->lock){+.+.}-{3:3}, at: _raw_spin_lock+0x18/0x30
[  7.0] 
[  7.0] but task is already holding lock:
[  7.0] ffff0000c0a1b3d0 (&dev->other){+.+.}-{3:3}, at: dev_reset+0x44/0x120
[  7.0] 
[  7.0] which lock already depends on the new lock.
[  7.0] 
[  7.0] stack backtrace:
[  7.0] CPU: 0 UID: 0 PID: 88 Comm: sh Not tainted 6.12.0 #1
[  7.0] Call trace:
[  7.0]  dump_backtrace+0x9c/0x100
[  7.0]  print_circular_bug+0x1/0x2
[  7.0]  lock_acquire+0x1/0x2
[  7.0]  _raw_spin_lock+0x18/0x30
[  7.0]  dev_reset+0x50/0x120
[  7.0] Code: 1 2 3
"""


def test_lockdep_circular_names_the_acquire_site():
    # kernel/locking/lockdep.c print_circular_bug_header: "at:" of the acquired
    # lock; a lock primitive there is skipped, then the held lock's "at:"
    c = one(LOCKDEP_CIRCULAR)
    assert c.title == "possible deadlock in dev_reset" and c.kind == "lockdep"
    direct = one(LOCKDEP_CIRCULAR.replace("at: _raw_spin_lock+0x18/0x30", "at: dev_open+0x10/0x40"))
    assert direct.title == "possible deadlock in dev_open"


def test_pre_414_lockdep_banner():
    text = ("[ 3.0] =======================================================\n"
            "[ 3.0] [ INFO: possible circular locking dependency detected ]\n"
            "[ 3.0] 4.9.0 #1 Not tainted\n[ 3.0] -------------------------------------------------------\n"
            "[ 3.0] syz/77 is trying to acquire lock:\n"
            "[ 3.0]  (&mm->mmap_sem){++++++}, at: [<ffffffff8143e3a1>] __might_fault+0xe1/0x1d0\n"
            "[ 3.0] \n[ 3.0] but task is already holding lock:\n"
            "[ 3.0]  (&pipe->mutex/1){+.+.+.}, at: [<ffffffff8156c1e0>] pipe_lock+0x56/0x70\n[ 3.0] \n")
    assert one(text).title == "possible deadlock in pipe_lock"


def hung(frames, header="INFO: task kworker/u4:1:42 blocked for more than 143 seconds."):
    body = "".join(f"[ 300.0]  {f}+0x10/0x20\n" for f in frames)
    return (f"[ 300.0] {header}\n[ 300.0]       Not tainted 6.12.0 #1\n"
            '[ 300.0] "echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.\n'
            f"[ 300.0] task:kworker state:D stack:0 pid:42\n[ 300.0] Call trace:\n{body}[ 300.0] \n")


def test_hung_task_rules():
    # kernel/hung_task.c: the first frame that is not scheduling/locking/waiting ...
    assert one(hung(["__switch_to", "__schedule", "schedule", "schedule_timeout", "wait_for_completion",
                     "fs_sync", "do_sync"])).title == "INFO: task hung in fs_sync"
    # ... unless the task waits in synchronize_rcu()/rtnl_lock(): all victims of one bug
    assert one(hung(["__schedule", "synchronize_srcu", "dev_close"])).title == "INFO: task hung in synchronize_rcu"
    assert one(hung(["__schedule", "rtnl_lock", "dev_ioctl"])).title == "INFO: task hung in rtnl_lock"
    io = one(hung(["__schedule", "io_schedule", "folio_wait_bit", "filemap_fault"],
                  header="INFO: task cc1:9 blocked in I/O wait for more than 122 seconds."))
    assert io.title == "INFO: task hung in filemap_fault"
    cant = one(hung(["__schedule", "schedule", "coredump_wait"],
                    header="INFO: task a.out:7 can't die for more than 143 seconds."))
    assert cant.title == "INFO: task can't die in coredump_wait"


@pytest.mark.parametrize("report,title", [
    # kernel/locking/lockdep.c lockdep_rcu_suspicious: named by the stack, not file:line
    ("WARNING: suspicious RCU usage\n6.12.0 #1 Not tainted\n-----------------------------\n"
     "net/core/dev.c:1234 suspicious rcu_dereference_check() usage!\nstack backtrace:\nCall trace:\n"
     " dump_stack_lvl+0x1/0x2\n lockdep_rcu_suspicious+0x1/0x2\n rcu_read_lock_held+0x1/0x2\n dev_get_by_index+0x1/0x2\n\n",
     "WARNING: suspicious RCU usage in dev_get_by_index"),
    # mm/kasan/report.c: bug type, access kind and the first non-KASAN frame
    ("BUG: KASAN: slab-use-after-free in memcpy+0x10/0x20\nRead of size 8 at addr ffff888012345678 by task sh/1\n"
     "Call trace:\n kasan_report+0x1/0x2\n __asan_memcpy+0x1/0x2\n memcpy+0x1/0x2\n nla_put+0x1/0x2\n"
     "\nAllocated by task 1:\n kmalloc+0x1/0x2\n==================================================================\n",
     "KASAN: slab-use-after-free Read in nla_put"),
    # every spelling of a bad free is "invalid-free" for syzkaller
    ("BUG: KASAN: double-free in kfree+0x10/0x20\nCall trace:\n kfree+0x1/0x2\n dev_free+0x1/0x2\n\n"
     "==================================================================\n", "KASAN: invalid-free in dev_free"),
    # mm/kmemleak.c (header printed by the harness)
    ("BUG: memory leak\nunreferenced object 0xffff888012345678 (size 32):\n  comm \"sh\", pid 1, jiffies 4294\n"
     "  backtrace (crc 1a2b3c4d):\n    kmemleak_alloc+0x1/0x2\n    __kmalloc_noprof+0x1/0x2\n    dev_add+0x1/0x2\n\n",
     "memory leak in dev_add"),
    # kernel/locking/lockdep.c assign_lock_key
    ("INFO: trying to register non-static key.\nThe code is fine but needs lockdep annotation, or maybe\n"
     "Call trace:\n dump_stack+0x1/0x2\n register_lock_class+0x1/0x2\n __lock_acquire+0x1/0x2\n"
     " lock_acquire+0x1/0x2\n _raw_spin_lock_irqsave+0x1/0x2\n dev_poll+0x1/0x2\n\n",
     "INFO: trying to register non-static key in dev_poll"),
    # mm/slub.c slab_bug / free_consistency_checks
    ("BUG kmalloc-64 (Not tainted): Object already free\n", "BUG: Object already free"),
    ("BUG kmalloc-64 (Tainted: G    B): Right Redzone overwritten\n",
     "BUG kmalloc-NUM (Tainted: G B): Right Redzone overwritten"),
    # kernel/rcu/tree_exp.h
    ("rcu: INFO: rcu_sched detected expedited stalls on CPUs/tasks: { 1-... } 21 jiffies s: 245 root: 0x2/.\n"
     "rcu: blocking rcu_node structures (internal RCU debug):\nSending NMI from CPU 0 to CPUs 1:\n"
     "NMI backtrace for cpu 1\npc : dev_spin+0x1/0x2\nCall trace:\n dev_spin+0x1/0x2\n dev_write+0x1/0x2\n"
     " vfs_write+0x1/0x2\n ksys_write+0x1/0x2\n\n", "INFO: rcu detected stall in dev_write"),
    # kernel/watchdog.c with the NMI watchdog's pr_fmt in front
    ("NMI watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [syz:123]\nRIP: 0010:loop_fn+0x1/0x2\n"
     "Call Trace:\n <IRQ>\n </IRQ>\n <TASK>\n loop_fn+0x1/0x2\n do_ioctl+0x1/0x2\n vfs_ioctl+0x1/0x2\n </TASK>\n\n",
     "BUG: soft lockup in do_ioctl"),
    # kernel/sched/core.c __schedule_bug: the first caller of the scheduler
    ("BUG: scheduling while atomic: kworker/0:1/12/0x00000002\nCall trace:\n __schedule+0x1/0x2\n"
     " schedule+0x1/0x2\n schedule_timeout+0x1/0x2\n msleep+0x1/0x2\n dev_poll+0x1/0x2\n\n",
     "BUG: scheduling while atomic in msleep"),
    ("BUG: MAX_LOCKDEP_ENTRIES too low!\n", "BUG: MAX_LOCKDEP_ENTRIES too low!"),
    ("Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n", "kernel panic: Attempted to kill init!"),
    ("Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: dev_read+0x1e0/0x1f0\n",
     "kernel panic: stack is corrupted in dev_read"),
    ("UBSAN: array-index-out-of-bounds in net/core/dev.c:3000:12\nindex 5 is out of range for type 'int [4]'\n"
     "Call trace:\n dump_stack_lvl+0x1/0x2\n __ubsan_handle_out_of_bounds+0x1/0x2\n dev_idx+0x1/0x2\n"
     "---[ end trace ]---\n", "UBSAN: array-index-out-of-bounds in dev_idx"),
])
def test_formats_and_titles(report, title):
    c = one(report)
    assert c.title == title and not c.corrupted, c.corrupted_reason


def test_corrupted_reports_are_flagged_not_mistitled():
    lone = one("[ 1.0] Kernel panic - not syncing: Fatal exception\n")
    assert lone.title == "kernel panic: Fatal exception" and lone.corrupted
    empty = one("[ 1.0] BUG:\n")
    assert empty.title == "BUG: corrupted" and empty.corrupted
    # a second message printed into the title line
    merged = one("[ 1.0] BUG: MAX_LOCKDEP_ENTRIES [    1.2] sh/1/0x00000002 too low!\n")
    assert merged.corrupted and merged.corrupted_reason == "another message was printed into the title line"
    # a KASAN header whose access line was lost
    cut = one("BUG: KASAN: slab-out-of-bounds in dev_read+0x1/0x2\n==========================================\n")
    assert cut.title == "KASAN: slab-out-of-bounds in dev_read" and cut.corrupted


def test_title_sanitizer():
    assert crashlog.sanitize_title("WARNING in foo+0x1/0x2 at 0xffff8880123 CPU#3 pid 77") == \
        "WARNING in foo at ADDR CPU pid NUM"
    assert crashlog.sanitize_title("x" * 500) == "x" * 120


# ---------------------------------------------------------------- the table itself

def test_pattern_table_loads_and_rejects_bad_files(tmp_path):
    table = crashlog.load_patterns()
    assert {p.kind for p in table.patterns} >= {"warning", "bug", "oops", "panic", "lockdep", "rcu_stall",
                                                 "lockup", "hung_task", "kasan", "ubsan"}
    assert table.is_generic("dump_backtrace") and table.is_generic("_raw_write_lock")
    assert not table.is_generic("kvm_age_gfn")
    assert all(len(p.keyword) >= 3 for p in table.patterns)
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
    bad.write_text("patterns:\n  - name: x\n    kind: bug\n    header: 'BUG: x'\n    title: t\n    frame: [pc]\n")
    with pytest.raises(UserError, match="unknown key 'frame'.*did you mean 'frames'"):
        crashlog.load_patterns(bad)
    bad.write_text("patterns:\n  - name: x\n    kind: bug\n    header: '\\d+'\n    title: t\n")
    with pytest.raises(UserError, match="literal keyword"):
        crashlog.load_patterns(bad)


def test_user_pattern_file(tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text("patterns:\n  - name: marker\n    kind: bug\n    header: '@@TEST-DONE rc=(?P<rc>\\d+)'\n"
                   "    title: 'test finished with {rc}'\n    max_lines: 1\n")
    got = crashlog.find_crashes((FIX / "console-oops-warning.log").read_bytes(), crashlog.load_patterns(own))
    assert [c.title for c in got] == ["test finished with NUM"]  # numbers are made stable
    assert got[0].fields["rc"] == "0"


def test_repeated_reports_in_the_corpus_share_a_fingerprint():
    # a loop caught at different points, and a task reported hung again and again,
    # are one crash each: that is what compare/merge match on
    for name, title in (("SOFTLOCKUP.log", "BUG: soft lockup in full_proxy_write"),
                        ("HUNG_TASK.log", "INFO: task hung in lkdtm_HUNG_TASK")):
        path = CRASHES / name
        if not path.exists():
            pytest.fail(f"{path} is missing")
        same = [c for c in crashlog.scan_file(path) if c.title == title]
        assert len(same) >= 2 and len({c.fingerprint for c in same}) == 1


def test_user_space_faults_are_not_crashes():
    # USER_FAULTS.log: the kernel logs a user SIGSEGV and SIGBUS with the user
    # registers ("pc : 00000000004006d8"): no kernel report
    text = (CRASHES / "USER_FAULTS.log").read_text()
    assert text.count("unhandled exception") == 2 and "pc : 0000000000" in text
    assert crashlog.find_crashes(text) == []
