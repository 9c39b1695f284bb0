#!/bin/sh
# kselftest-kvm: run the tree's KVM selftests one at a time, the way the
# kselftest runner (tools/testing/selftests/kselftest/runner.sh) does, and
# print its KTAP: "# selftests: kvm: NAME", the test's own lines prefixed
# with "# ", then "ok N selftests: kvm: NAME [# SKIP]" or "not ok N ... #
# exit=RC" / "# TIMEOUT S seconds".  runner.sh itself needs bash, perl and
# /usr/bin/timeout; this is the same protocol in busybox sh.
#
# usage: kselftest-kvm.sh [-f FACTOR] [-o SECONDS] [-s NAME=REASON]... [-a NAME=ARGS]... all|NAME...
#   -f FACTOR       multiply the `settings` timeout (nested TCG is slow)
#   -o SECONDS      every test's timeout instead (run_kselftest.sh --override-timeout); 0: none
#   -s NAME=REASON  do not run NAME: "ok N ... # SKIP REASON" (known not to work here)
#   -a NAME=ARGS    arguments for NAME (kselftest's KSELFTEST_<NAME>_ARGS)
#   all             every test of kselftest-list.txt (the tree's Makefile order)
#
# Files next to the tests (orchestrator/kernel/selftests.py writes them):
#   kselftest-list.txt  "kvm:NAME" per built test, as kselftest's install writes it
#   unavailable.txt     "NAME<TAB>why" per test that did not build: SKIP "unavailable: why"
#   settings            the tree's tools/testing/selftests/kvm/settings (timeout=N)
#
# Extra lines, all KTAP diagnostics: "# orch-plan: NAME..." first (so a run cut
# short by a crash still says what was planned) and "# orch-time: NAME SECONDS"
# after each result.  Every line also goes to /dev/console: if the guest
# kernel dies mid-suite, the host's console log keeps what ran.
# Exit status: 0 when no test failed, 1 otherwise.
set -u
# the tests: ../selftests from this script (GUEST_SELFTESTS_DIR beside GUEST_WORKLOADS_DIR)
dir=$(cd "$(dirname "$0")/../selftests" && pwd) || exit 2
factor=1
override=0
skips=
targs=
while getopts "f:o:s:a:" opt; do
	case "$opt" in
	f) factor=$OPTARG ;;
	o) override=$OPTARG ;;
	s) skips="$skips
$OPTARG" ;;
	a) targs="$targs
$OPTARG" ;;
	*) echo "usage: kselftest-kvm.sh [-f FACTOR] [-s NAME=REASON]... [-a NAME=ARGS]... all|NAME..." >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- all

# ORCH_CONSOLE: where the copy goes instead (tests of this script on the host)
console=${ORCH_CONSOLE:-/dev/console}
[ -n "${ORCH_CONSOLE:-}" ] || [ -w "$console" ] || console=/dev/null
# out LINE: to stdout and the console (tee would buffer a test's last lines).
out() { printf '%s\n' "$1"; printf '%s\n' "$1" >> "$console" 2>/dev/null; }

# kselftest's default, then the directory's settings file (timeout=N).
timeout=45
if [ -r "$dir/settings" ]; then
	t=$(sed -n 's/^timeout=\([0-9][0-9]*\)$/\1/p' "$dir/settings")
	[ -n "$t" ] && timeout=$t
fi
timeout=$(awk -v t="$timeout" -v f="$factor" 'BEGIN { printf "%d", t * f + 0.5 }')
how="settings x $factor"
if [ "$override" -gt 0 ] 2>/dev/null; then timeout=$override how="override"; fi

if [ "$1" = all ]; then
	names=$(sed -n 's/^kvm://p' "$dir/kselftest-list.txt" 2>/dev/null)
	# unavailable tests are reported too (in the Makefile's order: they are listed after)
	names="$names $(cut -f1 "$dir/unavailable.txt" 2>/dev/null)"
else
	names="$*"
fi
set -- $names

lookup() { # lookup LIST NAME: the value of NAME=VALUE in LIST
	printf '%s\n' "$1" | sed -n "s/^$2=//p" | head -n 1
}
uptime_cs() { # centiseconds since boot
	awk '{ split($1, a, "."); print a[1] * 100 + substr(a[2] "00", 1, 2) }' /proc/uptime
}

out "TAP version 13"
out "1..$#"
out "# orch-plan: $*"
out "# timeout set to $timeout ($how)"
n=0 failed=0
for name in "$@"; do
	n=$((n + 1))
	hdr="selftests: kvm: $name"
	out "# $hdr"
	why=$(lookup "$skips" "$name")
	if [ -n "$why" ]; then
		out "ok $n $hdr # SKIP $why"
		out "# orch-time: $name 0.00"
		continue
	fi
	if [ ! -x "$dir/$name" ]; then
		why=$(awk -F '\t' -v n="$name" '$1 == n { print $2; exit }' "$dir/unavailable.txt" 2>/dev/null)
		out "ok $n $hdr # SKIP unavailable: ${why:-not in this tree's KVM selftests}"
		out "# orch-time: $name 0.00"
		continue
	fi
	args=$(lookup "$targs" "$name")
	rcfile=/tmp/kselftest-kvm.rc
	rm -f "$rcfile"
	t0=$(uptime_cs)
	# The test by absolute path (selftests re-open argv[0] to load guest code),
	# from its directory as runner.sh does; each line prefixed as prefix.pl does.
	( cd "$dir" && timeout -s TERM "$timeout" "$dir/$name" $args 2>&1; echo $? > "$rcfile" ) |
		while IFS= read -r line || [ -n "$line" ]; do out "# $line"; done
	t1=$(uptime_cs)
	rc=$(cat "$rcfile" 2>/dev/null || echo 255)
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 100 }')
	elapsed=$(((t1 - t0) / 100))
	if [ "$rc" = 0 ]; then
		out "ok $n $hdr"
	elif [ "$rc" = 4 ]; then
		out "ok $n $hdr # SKIP"
	elif { [ "$rc" = 124 ] || [ "$rc" = 143 ] || [ "$rc" = 137 ]; } && [ "$elapsed" -ge $((timeout - 1)) ]; then
		out "#"
		out "not ok $n $hdr # TIMEOUT $timeout seconds"
		failed=1
	else
		out "not ok $n $hdr # exit=$rc"
		failed=1
	fi
	out "# orch-time: $name $secs"
done
exit $failed
