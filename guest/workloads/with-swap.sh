#!/bin/sh
# with-swap: run one of the project's guest programs (/opt/orch/bin/PROGRAM)
# with swap, so that a memory.max below an inner VM's size reclaims to swap
# instead of ending in the OOM killer.
#
# usage: with-swap.sh ZRAM_SIZE PROGRAM [program options...]
#
# When the guest has no swap yet (no orch.zram= on the kernel command line),
# this sets up zram of ZRAM_SIZE on /dev/zram0 for the run and removes it
# afterwards; ZRAM_SIZE 0 runs the program without setting up swap.  Whatever
# happens to the program, memory.max of this process's memcg is lifted at the
# end.  Prints ORCH-METRIC lines of its own (zram use) besides the program's.
set -u
zram_size=$1
bin=${0%/workloads/*}/bin/$2
shift 2
cg=$(sed -n 's/^0:://p' /proc/self/cgroup)
made_zram=

metric() { echo "ORCH-METRIC $1 $2"; }

if [ "$zram_size" != 0 ] && [ "$(awk 'NR > 1' /proc/swaps | wc -l)" -eq 0 ]; then
	if [ ! -e /sys/block/zram0/disksize ]; then
		echo "with-swap: no swap and no /dev/zram0 (CONFIG_ZRAM, BLK_DEV)" >&2
		exit 2
	fi
	if ! { echo "$zram_size" > /sys/block/zram0/disksize && mkswap /dev/zram0 > /dev/null &&
		swapon /dev/zram0; }; then
		echo "with-swap: setting up zram swap of $zram_size failed" >&2
		exit 2
	fi
	made_zram=1
fi
metric swap_made_here "${made_zram:-0}"

"$bin" "$@"
rc=$?

[ -n "$cg" ] && [ "$cg" != / ] && echo max > "/sys/fs/cgroup$cg/memory.max"
if [ -n "$made_zram" ] && [ -r /sys/block/zram0/mm_stat ]; then
	# mm_stat: orig_data_size compr_data_size mem_used_total mem_limit mem_used_max ...
	set -- $(cat /sys/block/zram0/mm_stat)
	metric zram_mem_used_max_bytes "$5"
fi
if [ -n "$made_zram" ]; then
	swapoff /dev/zram0 && echo 1 > /sys/block/zram0/reset
fi
exit $rc
