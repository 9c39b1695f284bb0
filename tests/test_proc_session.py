"""A child that moves a process of its own into a new process group (as
lava-worker does with lava-run, and lava-run with QEMU) is still ended when
the orchestrator ends the child: popen makes every child a session leader and
kill_group sweeps the session.  Real processes, no mocks."""
from __future__ import annotations

import os
import sys
import time

from orchestrator import proc

# A shell that starts a Python grandchild in a process group of its own, prints
# the grandchild's PID and waits.
ESCAPER = f"""{sys.executable} -c 'import os, time; os.setpgid(0, 0); time.sleep(120)' &
echo $!
wait
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_a_grandchild_in_its_own_group_is_ended_with_its_session() -> None:
    import subprocess
    child = proc.popen(["sh", "-c", ESCAPER], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        deadline = time.monotonic() + 10
        while os.getpgid(grandchild) == child.pid and time.monotonic() < deadline:
            time.sleep(0.02)  # until it has moved to its own group
        assert os.getpgid(grandchild) == grandchild != child.pid
        assert grandchild in proc.session_members(child.pid)
        started = time.monotonic()
        proc.kill_group(child.pid, grace=2.0)
        child.wait(timeout=5)
        deadline = time.monotonic() + 5
        while alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(grandchild), "the grandchild in its own process group outlived kill_group"
        assert time.monotonic() - started < 4.5  # no wait on zombies
    finally:
        proc.unregister(child)
        for p in proc.session_members(child.pid):
            os.kill(p, 9)


def test_session_members_skips_nothing_of_another_session() -> None:
    assert os.getpid() not in proc.session_members(os.getpid() + 10**7)
