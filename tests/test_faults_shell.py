"""`orchestrator boot --shell` on a real guest: `exit` in the console shell ends
the session (before, guest/init started a new shell and the session went on),
QEMU is powered off and nothing is left running."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect
import pytest

import faults_support as fs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def test_exit_in_the_shell_ends_the_boot_session(baseline_build, tmp_path: Path) -> None:
    token = fs.new_token()
    env = {**os.environ, fs.TOKEN_ENV: token}
    child = pexpect.spawn(sys.executable, ["-m", "orchestrator.cli", "boot", "--series", "patches", "--variant",
                                           "baseline", "--shell", "--workdir", str(tmp_path / "boot")],
                          cwd=str(ROOT), env=env, timeout=120, encoding="utf-8", codec_errors="replace",
                          dimensions=(50, 200))
    try:
        child.expect("exit the shell or press Ctrl-\\] to stop", timeout=600)  # a cache hit, then the boot
        child.sendline("echo hello-$((40+2))")
        child.expect("hello-42")
        child.sendline("exit")
        child.expect("the shell exited: powering the guest off", timeout=30)
        child.expect(pexpect.EOF, timeout=60)
        child.close()
        assert child.exitstatus == 0, child.before
        assert "Traceback" not in (child.before or "")
        left = fs.wait_no_leftovers(token)
    finally:
        if child.isalive():
            child.terminate(force=True)
        fs.kill_leftovers(token)
    assert left == [], f"left behind: {left}"
    assert "ORCH-SHELL-EXIT" in (tmp_path / "boot" / "console.log").read_text(errors="replace")
