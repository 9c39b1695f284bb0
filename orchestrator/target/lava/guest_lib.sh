# Guest side of a LAVA job (shipped in the initramfs as /opt/orch/lava/lib.sh).
#
# The job's inline test definition sources this file, then for each of the
# cell's scripts calls orch_run, lava-test-case and orch_emit.  LAVA runs the
# definition's steps in one `sh` with `set -e` and `set -x`, so every
# function here returns 0 and turns tracing off while it prints blocks.
#
# A lab hands back logs and results, not files: each output and evidence file
# is printed gzip+base64 between marker lines that the host
# (orchestrator/target/lava/joblog.py) cuts out of the job log again:
#   ORCH-LAVA-STATUS <n> status=<s> rc=<rc> seconds=<s>
#   ORCH-LAVA-BEGIN <n> <what>             what: "output" or a guest path
#   <base64 lines of gzip -c FILE>
#   ORCH-LAVA-END <n> <what> bytes=<size> sha256=<sha256 of the file>
#   ORCH-LAVA-MISSING <n> <path>           an evidence file the script did not leave
# Keep these in step with joblog.py.

ORCH_LAVA_DIR=/tmp/orch-lava
ORCH_LAVA_STEPS=/opt/orch/lava/steps

orch_uptime() { read -r orch_up _ < /proc/uptime; echo "$orch_up"; }

# orch_run N LIMIT [NEEDS]: run script N (steps/N.sh) as `sh FILE` under a
# guest-side limit of LIMIT seconds; NEEDS: the index of a script that must
# have passed.  After a timeout every later script is not run (job.py).
orch_run() {
	{ orch_x=$-; set +x; } 2>/dev/null
	mkdir -p "$ORCH_LAVA_DIR"
	orch_n=$1 orch_limit=$2 orch_needs=${3:-}
	orch_rc= orch_secs=0 orch_status=not-run
	: > "$ORCH_LAVA_DIR/$orch_n.out"
	if [ -e "$ORCH_LAVA_DIR/stopped" ]; then
		echo "not run: $(cat "$ORCH_LAVA_DIR/stopped")" > "$ORCH_LAVA_DIR/$orch_n.out"
	elif [ -n "$orch_needs" ] && [ "$(cat "$ORCH_LAVA_DIR/$orch_needs.status" 2>/dev/null)" != pass ]; then
		echo "not run: script $orch_needs did not pass" > "$ORCH_LAVA_DIR/$orch_n.out"
	else
		orch_t0=$(orch_uptime)
		orch_rc=0
		timeout -s KILL "$orch_limit" sh "$ORCH_LAVA_STEPS/$orch_n.sh" > "$ORCH_LAVA_DIR/$orch_n.out" 2>&1 < /dev/null || orch_rc=$?
		orch_secs=$(awk -v a="$orch_t0" -v b="$(orch_uptime)" 'BEGIN { printf "%.2f", b - a }')
		if [ "$orch_rc" = 0 ]; then
			orch_status=pass
		elif [ "$orch_rc" = 137 ] && awk -v s="$orch_secs" -v l="$orch_limit" 'BEGIN { exit !(s >= l - 1) }'; then
			orch_status=timeout
			echo "script $orch_n was killed after its limit of $orch_limit s" > "$ORCH_LAVA_DIR/stopped"
		else
			orch_status=fail
		fi
	fi
	echo "$orch_status" > "$ORCH_LAVA_DIR/$orch_n.status"
	echo "$orch_secs" > "$ORCH_LAVA_DIR/$orch_n.seconds"
	echo "ORCH-LAVA-STATUS $orch_n status=$orch_status rc=${orch_rc:--} seconds=$orch_secs"
	case $orch_x in *x*) set -x ;; esac
	return 0
}

# lava-test-case's --result for script N: pass, fail (also a timeout) or skip.
orch_result() {
	case $(cat "$ORCH_LAVA_DIR/$1.status" 2>/dev/null) in
	pass) echo pass ;;
	not-run) echo skip ;;
	*) echo fail ;;
	esac
}

orch_seconds() { cat "$ORCH_LAVA_DIR/$1.seconds" 2>/dev/null || echo 0; }

# _orch_block N WHAT FILE: FILE gzip+base64 between marker lines.
_orch_block() {
	echo "ORCH-LAVA-BEGIN $1 $2"
	gzip -c "$3" | base64
	echo "ORCH-LAVA-END $1 $2 bytes=$(wc -c < "$3") sha256=$(sha256sum < "$3" | cut -d' ' -f1)"
}

# orch_emit N [PATH...]: script N's output, then each evidence file.  The
# console loglevel is lowered meanwhile so kernel messages do not land in
# the middle of a block (the host strips them anyway; the sha256 checks it).
orch_emit() {
	{ orch_x=$-; set +x; } 2>/dev/null
	orch_n=$1
	shift
	# Not `read`: a sysctl file read a byte at a time ends after the first byte.
	orch_level=$(cut -f1 /proc/sys/kernel/printk 2>/dev/null) || orch_level=
	echo 1 > /proc/sys/kernel/printk 2>/dev/null || :
	_orch_block "$orch_n" output "$ORCH_LAVA_DIR/$orch_n.out"
	for orch_f in "$@"; do
		if [ -f "$orch_f" ]; then
			_orch_block "$orch_n" "$orch_f" "$orch_f"
		else
			echo "ORCH-LAVA-MISSING $orch_n $orch_f"
		fi
	done
	[ -z "$orch_level" ] || echo "$orch_level" > /proc/sys/kernel/printk 2>/dev/null || :
	case $orch_x in *x*) set -x ;; esac
	return 0
}
