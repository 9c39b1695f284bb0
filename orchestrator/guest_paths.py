"""Where things live inside the test guest, and the exit-status conventions
host and guest share.

The host builds the guest image (orchestrator/vm/image.py) from guest path ->
host file maps, then runs programs and reads evidence by these paths; the
guest scripts (guest/workloads/*.sh, guest/race/*.sh) spell the same paths
in shell.  One place for the host side keeps the two from drifting apart.
"""
from __future__ import annotations

import signal

# Everything the project installs in the image lives under this root.
GUEST_ROOT = "/opt/orch"
# The project's own programs: guest/*.c on the selftest library, guest/race/*.c.
GUEST_BIN_DIR = f"{GUEST_ROOT}/bin"
# The tree's KVM selftests (kernel/selftests.py WANTED).
GUEST_SELFTESTS_DIR = f"{GUEST_ROOT}/selftests"
# Workload scripts: guest/workloads/*, guest/race/*.sh.  with-swap.sh finds
# bin/ as its own ../bin, so the two directories must stay siblings.
GUEST_WORKLOADS_DIR = f"{GUEST_ROOT}/workloads"

# guest/kvm_probe (nested_kvm.py), outside GUEST_ROOT: it is on $PATH.
KVM_PROBE_PATH = "/usr/bin/kvm_probe"

# Per-run evidence files, written in the guest and fetched afterwards (workload/evidence.py).
GUEST_EVIDENCE_DIR = "/tmp/orch-evidence"
# The memcg every workload runs in (MGLRU ages per memcg).
WORKLOAD_CGROUP = "/sys/fs/cgroup/orch-workload"

# A shell reports a child killed by signal N as exit status 128 + N.
SHELL_SIGNAL_BASE = 128
# The guest-side time limit (`timeout -s KILL LIMIT CMD`): a workload that
# overruns ends with SHELL_SIGNAL_BASE + SIGKILL (137).
GUEST_LIMIT_SIGNAL = signal.SIGKILL


def under_root(relative: str) -> str:
    """The guest path of something named relative to GUEST_ROOT (a workload's
    `program: selftests/access_tracking_perf_test`)."""
    return f"{GUEST_ROOT}/{relative}"
