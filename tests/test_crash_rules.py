"""Crash titles on formats the project's arm64 kernels cannot print (issue 24).

SYNTHETIC: every report below is written by hand from the printk formats of
the kernel source named in each case (x86 traps and KMSAN are x86-only; the
pre-4.15 RIP spelling and panic_on_warn stack are older kernels; the WARNING
spelling "FILE:LINE at FUNC, CPU#N" is newer than 6.12).  They are unit cases
of the rules in orchestrator/parsers/crash_patterns.yaml, not fixtures: the
real captured logs are tests/fixtures/crashes/*.log (test_parsers_crashlog.py).
The expected titles follow syzkaller's pkg/report/linux.go rules.
"""
from __future__ import annotations

import pytest

from orchestrator.parsers import crashlog


def reports(text: str) -> list[crashlog.Crash]:
    return crashlog.find_crashes(text)


def one(text: str) -> crashlog.Crash:
    got = reports(text)
    assert len(got) == 1, [c.title for c in got]
    return got[0]


def lines(*rows: str) -> str:
    return "".join(f"[  300.{i:06d}] {r}\n" for i, r in enumerate(rows))


# x86 (arch/x86/kernel/apic/apic.c, kernel/rcu/tree_stall.h): the stall is seen in
# the timer interrupt; the interrupted code follows the interrupt entry, with
# its pt_regs (RIP, Code, registers) printed inside the call trace.
X86_RCU_STALL = lines(
    "rcu: INFO: rcu_preempt self-detected stall on CPU",
    "rcu: \t1-....: (10499 ticks this GP) idle=d4a/1/0x4000000000000000 softirq=9133/9133 fqs=5240",
    "\t(t=10500 jiffies g=12345 q=1203 ncpus=2)",
    "NMI backtrace for cpu 1",
    "CPU: 1 PID: 8123 Comm: syz-executor Not tainted 5.10.0-syzkaller #0",
    "Call Trace:",
    " <IRQ>",
    " __dump_stack lib/dump_stack.c:77 [inline]",
    " dump_stack+0x107/0x163 lib/dump_stack.c:118",
    " nmi_cpu_backtrace.cold+0x44/0xd7 lib/nmi_backtrace.c:105",
    " rcu_dump_cpu_stacks+0x1e3/0x21e kernel/rcu/tree_stall.h:331",
    " rcu_sched_clock_irq.cold+0x472/0xee8 kernel/rcu/tree.c:2567",
    " update_process_times+0x16d/0x200 kernel/time/timer.c:1709",
    " hrtimer_interrupt+0x334/0x940 kernel/time/hrtimer.c:1645",
    " __sysvec_apic_timer_interrupt+0x146/0x540 arch/x86/kernel/apic/apic.c:1102",
    " </IRQ>",
    " sysvec_apic_timer_interrupt+0xbd/0x100 arch/x86/kernel/apic/apic.c:1096",
    " asm_sysvec_apic_timer_interrupt+0x12/0x20 arch/x86/include/asm/idtentry.h:628",
    "RIP: 0010:hash_walk+0x3a/0x100 net/netfilter/hash.c:120",
    "Code: 48 89 df e8 00 00 00 00 <0f> 0b 5b 5d c3",
    "RSP: 0018:ffffc90000d2f8b8 EFLAGS: 00000246",
    "RAX: 0000000000000000 RBX: ffff888012345678 RCX: 0000000000000000",
    "R13: 0000000000000001 R14: ffff888012345000 R15: 0000000000000000",
    " hash_lookup+0x51/0x90 net/netfilter/hash.c:130",
    " hash_ioctl+0x2a2/0x400 net/netfilter/hash.c:300",
    " vfs_ioctl fs/ioctl.c:48 [inline]",
    " __do_sys_ioctl fs/ioctl.c:753 [inline]",
    " __x64_sys_ioctl+0x193/0x200 fs/ioctl.c:739",
    " do_syscall_64+0x2d/0x70 arch/x86/entry/common.c:46",
    " entry_SYSCALL_64_after_hwframe+0x44/0xa9",
)


def test_x86_rcu_stall_is_named_below_the_timer_interrupt():
    c = one(X86_RCU_STALL)
    # frames after the RIP line (hash_walk ...), anchor sys_ioctl (__x64_ stripped):
    # the frame above it names the stall
    assert c.title == "INFO: rcu detected stall in hash_ioctl" and c.kind == "rcu_stall" and not c.corrupted
    assert c.frames[:3] == ("hash_walk", "hash_lookup", "hash_ioctl")


def test_rcu_stall_without_any_stack_is_corrupted():
    c = one(lines("rcu: INFO: rcu_sched detected stalls on CPUs/tasks:", "rcu: \t0-....: (1 GPs behind)",
                  "Sending NMI from CPU 1 to CPUs 0:"))
    assert c.title == "INFO: rcu detected stall in corrupted" and c.corrupted


def test_x86_soft_lockup_in_smp_call_function():
    # kernel/watchdog.c: RIP of the interrupted code, then its stack; the smp_call_function*
    # variants name the report themselves (the caller varies)
    text = lines(
        "watchdog: BUG: soft lockup - CPU#1 stuck for 123s! [syz-executor:8000]",
        "CPU: 1 PID: 8000 Comm: syz-executor Not tainted 6.1.0 #1",
        "RIP: 0010:csd_lock_wait kernel/smp.c:424 [inline]",
        "RIP: 0010:smp_call_function_single+0x1a4/0x4f0 kernel/smp.c:759",
        "Code: 89 ee e8 00 00 00 00 40 84 ed 75 0c e8 00 00 00 00 f3 90",
        "RSP: 0018:ffffc9000463f968 EFLAGS: 00000293",
        "Call Trace:",
        " <TASK>",
        " perf_event_read+0x2c0/0x400 kernel/events/core.c:4500",
        " __perf_read_group_add+0x8e/0x700",
        " perf_read+0x1e9/0x940 kernel/events/core.c:5430",
        " vfs_read+0x1f3/0x900 fs/read_write.c:468",
        " ksys_read+0x12b/0x250",
        " do_syscall_64+0x2d/0x70",
        " </TASK>",
    )
    c = one(text)
    assert c.title == "BUG: soft lockup in smp_call_function" and not c.corrupted


def test_stall_anchor_above_the_loop():
    # the loop is named by the frame above the first dispatcher (vfs_read here)
    text = lines("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [cat:10]",
                 "RIP: 0010:seq_loop+0x1/0x2", "Call Trace:", " <TASK>", " seq_loop+0x1/0x2",
                 " seq_read_iter+0x1/0x2", " dev_seq_read+0x1/0x2", " vfs_read+0x1/0x2", " </TASK>")
    assert one(text).title == "BUG: soft lockup in dev_seq_read"


X86_WARN_HEADER = "WARNING: CPU: 0 PID: 4100 at net/core/dev.c:6000 {func}+0x5/0x10"


def test_warning_new_header_spellings():
    # kernel/panic.c after the 2025 rework: "WARNING: %s:%d at %pS, CPU#%d: %s/%d"
    for header in ("WARNING: net/core/dev.c:6000 at dev_close_many+0x5/0x10, CPU#0: syz/4100",
                   "WARNING: net/core/dev.c:6000 at 0xffffffff81234567, CPU#0: syz/4100"):
        c = one(lines("------------[ cut here ]------------", header, "Modules linked in:",
                      "RIP: 0010:dev_close_many+0x5/0x10", "Code: 0f 0b", "RSP: 0018:ffffc900 EFLAGS: 00010246",
                      "Call Trace:", " <TASK>", " dev_close_many+0x5/0x10", " dev_close+0x1/0x2", " </TASK>",
                      "---[ end trace 0000000000000000 ]---"))
        assert c.title == "WARNING in dev_close_many" and c.kind == "warning", header


def test_warning_before_415_with_panic_on_warn():
    # 4.x x86: the WARNING printed no stack of its own; the panic's stack has it after
    # invalid_op, from the RIP line (old spelling with two [<addr>])
    text = lines(
        "WARNING: CPU: 0 PID: 4100 at net/core/dev.c:6000 dev_close_many+0x5/0x10",
        "Kernel panic - not syncing: panic_on_warn set ...",
        "",
        "CPU: 0 PID: 4100 Comm: syz-executor Not tainted 4.9.0 #1",
        "Call Trace:",
        " [<ffffffff81d9b57d>] dump_stack+0xc1/0x124",
        " [<ffffffff8141d1f9>] panic+0x1b7/0x3a3",
        " [<ffffffff81285b7c>] __warn+0x1c4/0x1e0",
        " [<ffffffff81285dc1>] warn_slowpath_null+0x31/0x40",
        " [<ffffffff810d2c65>] do_error_trap+0x1a5/0x2c0",
        " [<ffffffff844a7c35>] invalid_op+0x1b/0x40",
        "RIP: 0010:[<ffffffff8351e1a5>]  [<ffffffff8351e1a5>] dev_close_many+0x5/0x10",
        "RSP: 0018:ffff8801c5d2f8b8  EFLAGS: 00010246",
        " [<ffffffff8351e3b0>] dev_close+0x40/0x80",
        " [<ffffffff83600aa0>] tun_detach+0x30/0x60",
        "Kernel Offset: disabled",
        "---[ end Kernel panic - not syncing: panic_on_warn set ...",
    )
    c = one(text)
    assert c.title == "WARNING in dev_close_many" and not c.corrupted
    assert c.frames[:3] == ("dev_close_many", "dev_close", "tun_detach")


def test_kmsan_is_named_by_its_stack_not_the_origin():
    # mm/kmsan/report.c: the stack follows the header; "Uninit was created at:" is the origin
    text = lines(
        "=====================================================",
        "BUG: KMSAN: uninit-value in crypto_aead_encrypt+0x1/0x2",
        " crypto_aead_encrypt+0x1/0x2 crypto/aead.c:90",
        " tls_do_encryption net/tls/tls_sw.c:540 [inline]",
        " tls_push_record+0x1/0x2 net/tls/tls_sw.c:800",
        " tls_sw_sendmsg+0x1/0x2",
        "",
        "Uninit was created at:",
        " slab_post_alloc_hook mm/slub.c:800 [inline]",
        " __kmalloc+0x1/0x2",
        " tls_set_sw_offload+0x1/0x2",
        "",
        "CPU: 0 PID: 1 Comm: syz Not tainted 6.6.0 #1",
        "=====================================================",
    )
    c = one(text)
    # crypto_* is generic code that hits its caller's uninit value
    assert c.title == "KMSAN: uninit-value in tls_push_record" and c.kind == "kmsan" and not c.corrupted


def test_memory_leak_skips_allocators_and_inline_frames():
    # mm/kmemleak.c, symbolized, with syzkaller's "BUG: memory leak" header
    text = lines(
        "BUG: memory leak",
        "unreferenced object 0xffff888109d3f200 (size 64):",
        "  comm \"syz-executor\", pid 3611, jiffies 4294945000",
        "  hex dump (first 32 bytes):",
        "    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................",
        "  backtrace (crc 7b1f5e3c):",
        "    [<ffffffff8166b7c5>] kmemleak_alloc_recursive include/linux/kmemleak.h:42 [inline]",
        "    [<ffffffff8166b7c5>] slab_post_alloc_hook mm/slab.h:766 [inline]",
        "    [<ffffffff8166b7c5>] __kmem_cache_alloc_node+0x2d5/0x3e0 mm/slub.c:3517",
        "    [<ffffffff815c3e3a>] __kmalloc_cache_noprof+0x2a/0xa0 mm/slab_common.c:1098",
        "    [<ffffffff83f1ab25>] kzalloc include/linux/slab.h:721 [inline]",
        "    [<ffffffff83f1ab25>] nci_hci_setup+0x45/0x100 net/nfc/nci/hci.c:150",
        "    [<ffffffff83f1ac00>] nci_register_device+0x1/0x2",
        "",
    )
    c = one(text)
    assert c.title == "memory leak in nci_hci_setup" and c.kind == "leak"


def test_kasan_skips_workqueue_helpers():
    # mm/kasan/report.c: the access was in __queue_work on behalf of its caller
    text = lines(
        "==================================================================",
        "BUG: KASAN: slab-use-after-free in __queue_work+0xb3d/0xf90",
        "Read of size 8 at addr ffff88807d2b4a18 by task kworker/1:2/5230",
        "",
        "Call Trace:",
        " <TASK>",
        " dump_stack_lvl+0x116/0x1b0",
        " print_report+0xc4/0x620",
        " kasan_report+0xda/0x110",
        " __queue_work+0xb3d/0xf90",
        " queue_work_on+0xf4/0x120",
        " tty_flip_buffer_push+0x1/0x2",
        " </TASK>",
        "",
        "==================================================================",
    )
    assert one(text).title == "KASAN: slab-use-after-free Read in tty_flip_buffer_push"


@pytest.mark.parametrize("line", [
    # arch/x86/kernel/traps.c show_signal: a user-space fault, not a kernel crash
    "traps: a.out[4213] general protection fault ip:401136 sp:7ffd3bd8ad20 error:0 in a.out[401000+1000]",
    # the page-dump line of a KASAN report body, alone
    "page dumped because: BUG kasan: bad access detected",
    # tools that print a WARNING or INFO line
    "sshd[301]: WARNING: /etc/ssh/moduli does not exist, using fixed modulus",
    "INFO: NMI handler (perf_event_nmi_handler) took too long to run: 1.2 msecs",
    "ODEBUG: object 000000001cf1cb7a is on stack, but NOT annotated. BUG: not a header",
])
def test_lines_that_are_not_crashes(line):
    assert reports(lines("random driver chatter", line, "more chatter")) == []


def test_frame_prefixes_pick_the_shortest():
    table = crashlog.default_patterns()
    assert table.strip_prefix("__x64_sys_ioctl") == "sys_ioctl"
    assert table.strip_prefix("__arm64_sys_write") == "sys_write"
    assert table.strip_prefix("__se_sys_bpf") == "bpf"
    assert table.strip_prefix("ksys_write") == "write"


@pytest.mark.parametrize("line,title,kind", [
    # x86 boot decompressor (arch/x86/boot/compressed/misc.c): a second boot in one log
    ("Booting the kernel (entry_offset: 0x0000000000000000).", "unexpected kernel reboot", "panic"),
    ("VFS: Busy inodes after unmount of loop0 (ext4). Self-destruct in 5 seconds.  Have a nice day...",
     "VFS: Busy inodes after unmount (use-after-free)", "bug"),
    ("VFS: Close: file count is 0", "VFS: Close: file count is zero (use-after-free)", "bug"),
    # syzkaller's executor
    ("SYZFAIL: failed to recv rpc", "SYZFAIL: failed to recv rpc", "bug"),
])
def test_one_line_reports(line, title, kind):
    c = one(lines(line))
    assert (c.title, c.kind) == (title, kind)


def test_lock_debugging_reports_are_lockdep_kind():
    # syzkaller files these under LockdepBug (pkg/report/crash/title_to_type.go)
    text = lines("BUG: spinlock already unlocked on CPU#0, syz/123", "Call Trace:", " do_raw_spin_unlock+0x1/0x2",
                 " dev_stop+0x1/0x2", "")
    c = one(text)
    assert (c.title, c.kind) == ("BUG: spinlock already unlocked in dev_stop", "lockdep")


def test_kfence_keeps_the_access_kind():
    # mm/kfence/report.c: "BUG: KFENCE: %s %s in %pS" then the stack without "Call Trace:"
    text = lines("==================================================================",
                 "BUG: KFENCE: use-after-free read in memcpy+0x1/0x2",
                 "", "Use-after-free read at 0x000000004f3c2c5e (in kfence-#79):",
                 " memcpy+0x1/0x2", " nfc_llcp_parse_tlv+0x1/0x2", " nfc_llcp_recv+0x1/0x2", "",
                 "==================================================================")
    assert one(text).title == "KFENCE: use-after-free read in nfc_llcp_parse_tlv"


def test_arm64_kernel_stack_overflow():
    # arch/arm64/kernel/traps.c panic_bad_stack (VMAP_STACK); the recursion is named
    # like a stall: the frame above the first dispatcher
    text = lines("Insufficient stack space to handle exception!",
                 "ESR: 0x0000000096000047 -- DABT (current EL)",
                 "Task stack:     [0xffff800082f78000..0xffff800082f80000]",
                 "Kernel panic - not syncing: kernel stack overflow",
                 "CPU: 0 UID: 0 PID: 70 Comm: sh Not tainted 6.12.0 #1",
                 "Call trace:", " dump_backtrace+0x1/0x2", " show_stack+0x1/0x2", " dump_stack_lvl+0x1/0x2",
                 " panic+0x1/0x2", " nmi_panic+0x1/0x2", " panic_bad_stack+0x1/0x2", " handle_bad_stack+0x1/0x2",
                 " __bad_stack+0x1/0x2", " recurse+0x1/0x2", " recurse+0x1/0x2", " dev_write+0x1/0x2",
                 " vfs_write+0x1/0x2", " ksys_write+0x1/0x2", "---[ end Kernel panic - not syncing: kernel stack overflow ]---")
    assert one(text).title == "kernel stack overflow in dev_write"


def test_bad_page_is_named_by_its_allocator():
    # mm/page_alloc.c bad_page with page_owner: the allocation stack, allocator frames skipped
    text = lines("BUG: Bad page state in process syz  pfn:2b3da",
                 "page: refcount:0 mapcount:1 mapping:0000000000000000 index:0x0 pfn:0x2b3da",
                 "page dumped because: nonzero mapcount",
                 "page_owner tracks the page as allocated",
                 "page last allocated via order 0, migratetype Movable, gfp_mask 0x140cca, pid 5000",
                 " set_page_owner include/linux/page_owner.h:32 [inline]",
                 " post_alloc_hook+0x1/0x2", " get_page_from_freelist+0x1/0x2", " __alloc_pages_noprof+0x1/0x2",
                 " folio_prealloc+0x1/0x2", " do_anonymous_page+0x1/0x2", " handle_mm_fault+0x1/0x2", "")
    assert one(text).title == "BUG: Bad page state in do_anonymous_page"


def test_dentry_still_in_use_leaves_the_device_out():
    text = lines("BUG: Dentry ffff888012345678{i=1,n=file0}  still in use (1) [unmount of ext4 loop0]",
                 "Call Trace:", " umount_check+0x1/0x2", " d_walk+0x1/0x2", "")
    assert one(text).title == "BUG: Dentry still in use in unmount"


def test_pre_415_rcu_stall_with_eoi_on_the_frame_line():
    # 4.x x86: "<EOI>" and the first interrupted frame share a line; the stall is
    # named below apic_timer_interrupt all the same
    text = lines(
        "INFO: rcu_sched self-detected stall on CPU",
        "\t0-...: (124999 ticks this GP) idle=9ab/140000000000001/0 softirq=1234/1234 fqs=31225",
        "NMI backtrace for cpu 0",
        "Call Trace:",
        " <IRQ>",
        " [<ffffffff81d9b57d>] dump_stack+0xc1/0x124",
        " [<ffffffff81da7b26>] nmi_cpu_backtrace+0xf6/0x110",
        " [<ffffffff812f4b1c>] rcu_check_callbacks+0x1bfc/0x1d50",
        " [<ffffffff81e0bba8>] smp_apic_timer_interrupt+0x78/0xa0",
        " [<ffffffff81e0b1e8>] apic_timer_interrupt+0x88/0x90",
        " <EOI>  [<ffffffff8124e3a8>] sock_poll_loop+0x48/0x60",
        " [<ffffffff8124e500>] sock_poll_wait+0x30/0x60",
        " [<ffffffff8352c9d0>] sock_ioctl+0x40/0x200",
        " [<ffffffff815b8c30>] do_vfs_ioctl+0x1a0/0x1000",
        " [<ffffffff815b9b0f>] SyS_ioctl+0x8f/0xc0",
        " [<ffffffff81e0a3c5>] entry_SYSCALL_64_fastpath+0x23/0xc6",
        "",
    )
    assert one(text).title == "INFO: rcu detected stall in sock_poll_wait"
