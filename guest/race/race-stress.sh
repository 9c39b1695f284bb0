#!/bin/sh
# race-stress SECONDS AGERS VCPUS BYTES
#
# Makes stage-2 age walks race with each other and with stage-2 faults:
# - dirty_log_perf_test runs VCPUS inner vCPUs that write BYTES each, pass
#   after pass, with dirty logging on: every pass write-protects the memslot,
#   so every first write takes a permission fault, handled under the read
#   side of mmu_lock (kvm_pgtable_stage2_relax_perms, a cmpxchg on the PTE);
#   without the hardware access flag every access to an aged page also takes
#   an access-flag fault (kvm_pgtable_stage2_mkyoung).
# - once its memory is populated, race_ager ages exactly that process's pages
#   through page_idle from AGERS threads at once (clear_young -> kvm_age_gfn).
# After SECONDS of aging everything stops.  Results are ORCH-METRIC lines.
set -u
secs=${1:?seconds} agers=${2:?agers} vcpus=${3:?vcpus} bytes=${4:?bytes}
LOAD=/opt/orch/selftests/dirty_log_perf_test
AGER=/opt/orch/bin/race_ager
MIN_VMA=1048576  # guest memory slots; skips small anonymous mappings
W=$(mktemp -d /tmp/race.XXXXXX) || exit 2

for f in "$LOAD" "$AGER"; do [ -x "$f" ] || { echo "race-stress: $f missing"; exit 2; }; done

now() { cut -d' ' -f1 /proc/uptime; }

t0=$(now)
"$LOAD" -m 6 -v "$vcpus" -b "$bytes" -i 1000000 > "$W/load.out" 2>&1 &
lp=$!
# Age only once the guest memory is populated (and mapped at stage 2).
n=0
until grep -q "Enabling dirty logging" "$W/load.out"; do
  if ! kill -0 "$lp" 2>/dev/null || [ "$n" -ge 600 ]; then
    echo "race-stress: load did not populate its memory"; cat "$W/load.out"; exit 2
  fi
  usleep 500000; n=$(( n + 1 ))
done
t1=$(now)
"$AGER" "$lp" "$secs" "$agers" "$MIN_VMA"
ager_rc=$?
kill "$lp" 2>/dev/null
wait "$lp" 2>/dev/null
echo "--- dirty_log_perf_test (tail) ---"; tail -n 6 "$W/load.out"
iters=$(sed -n 's/^Iteration \([0-9]*\) dirty memory time.*/\1/p' "$W/load.out" | tail -n 1)
echo "ORCH-METRIC populate_s $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
echo "ORCH-METRIC load_iterations ${iters:-0}"
echo "ORCH-METRIC vcpus $vcpus"
rm -rf "$W"
exit "$ager_rc"
