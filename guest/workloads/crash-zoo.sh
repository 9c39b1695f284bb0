#!/bin/sh
# crash-zoo: provoke one kernel report with LKDTM (drivers/misc/lkdtm), so the
# console log shows it as the project's kernel prints it (matrices/crash-zoo.yaml,
# fixtures in tests/fixtures/crashes/).  Needs the crash-zoo config set.
#
# usage: crash-zoo.sh TYPE [WAIT_S]
#   TYPE    an LKDTM crash type (cat /sys/kernel/debug/provoke-crash/DIRECT lists them)
#   WAIT_S  seconds to wait for detector reports (hung task, lockups, RCU stalls)
#
# The detectors are made quick first: hung tasks after 5 s, soft lockups after
# 2 * watchdog_thresh = 6 s (RCU stalls come after CONFIG_RCU_CPU_STALL_TIMEOUT=5).
# Types that never return (HUNG_TASK, SOFTLOCKUP, HARDLOCKUP, SPINLOCKUP) run in
# the background; a fatal type (PANIC, EXHAUST_STACK ...) ends the guest.
set -u
type=${1:?usage: crash-zoo.sh TYPE [WAIT_S]}
wait_s=${2:-0}
# USER_FAULTS: no kernel report at all, only user-space SIGSEGV/SIGBUS that the
# kernel logs (crash-free corpus logs); the program is installed by
# tests/fixtures/crashes/capture_user_faults.py
if [ "$type" = USER_FAULTS ]; then
    prog=/opt/orch/crash-zoo/user-faults
    [ -x "$prog" ] || { echo "crash-zoo: $prog missing (capture_user_faults.py installs it)" >&2; exit 2; }
    echo 1 > /proc/sys/debug/exception-trace 2>/dev/null
    "$prog" segv; "$prog" bus
    echo "crash-zoo: done $type"
    exit 0
fi
d=/sys/kernel/debug/provoke-crash
[ -e "$d/DIRECT" ] || mount -t debugfs none /sys/kernel/debug 2>/dev/null
if [ ! -w "$d/DIRECT" ]; then
    echo "crash-zoo: $d/DIRECT missing: the kernel needs CONFIG_LKDTM (config set crash-zoo)" >&2
    exit 2
fi
if ! grep -qx "$type" "$d/DIRECT" 2>/dev/null && ! cat "$d/DIRECT" | grep -qw "$type"; then
    echo "crash-zoo: unknown LKDTM type $type; known: $(tr '\n' ' ' < "$d/DIRECT")" >&2
    exit 2
fi
echo 5 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null
echo 3 > /proc/sys/kernel/watchdog_thresh 2>/dev/null
echo "crash-zoo: provoking $type"
case "$type" in
    HUNG_TASK|SOFTLOCKUP|HARDLOCKUP|SPINLOCKUP|LOOP)
        echo "$type" > "$d/DIRECT" &
        ;;
    *)
        # the write fails (EFAULT, killed by an oops) for most types: that is the point
        echo "$type" > "$d/DIRECT" || echo "crash-zoo: write returned $?"
        ;;
esac
[ "$wait_s" -gt 0 ] && sleep "$wait_s"
if [ "$type" = KMEMLEAK ] && [ -w /sys/kernel/debug/kmemleak ]; then
    # kmemleak only reports after a scan (no background scan in crash-zoo-debug);
    # like syzkaller, one "BUG: memory leak" line before each object it lists.
    # Written to /dev/kmsg (not ratelimited), so the report is in the console log.
    echo scan > /sys/kernel/debug/kmemleak; echo scan > /sys/kernel/debug/kmemleak
    echo on > /proc/sys/kernel/printk_devkmsg 2>/dev/null
    while IFS= read -r line; do
        case "$line" in "unreferenced object"*) echo "BUG: memory leak" > /dev/kmsg ;; esac
        printf '%s\n' "$line" > /dev/kmsg
    done < /sys/kernel/debug/kmemleak
    echo "crash-zoo: kmemleak listed $(grep -c '^unreferenced object' /sys/kernel/debug/kmemleak) object(s) on the console"
fi
echo "crash-zoo: done $type"
exit 0
