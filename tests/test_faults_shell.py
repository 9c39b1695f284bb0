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
# The console bytes of a real `exit` (baseline 6.12 kernel, console.log of this
# file's integration test): lines end "\r\r\n", which the marker check missed.
REAL_EXIT = (b"# \x1b[6nexit\r\r\nORCH-SHELL-EXIT\r\r\n\r\r\n\r\r\n"
             b"BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) built-in shell (ash)\r\r\n")


@pytest.mark.parametrize("cut", [None, *range(1, 40)])
def test_the_real_shell_exit_bytes_end_the_session_wherever_a_read_splits_them(cut, tmp_path: Path, capfd) -> None:
    from orchestrator.vm.console import GuestConsole, _ShellExited
    con = GuestConsole(["true"], tmp_path / "console.log")  # never started: only its output filter is used
    con._interact_tail = b""
    chunks = [REAL_EXIT] if cut is None else [REAL_EXIT[:cut], REAL_EXIT[cut:]]
    shown = b""
    with pytest.raises(_ShellExited):
        for chunk in chunks:
            shown += con._watch_output(chunk)
    assert b"BusyBox" not in shown  # the new shell's banner is not passed on
    assert "ORCH-SHELL-EXIT" not in capfd.readouterr().out


def test_the_marker_inside_a_line_does_not_end_the_session(tmp_path: Path) -> None:
    from orchestrator.vm.console import GuestConsole
    con = GuestConsole(["true"], tmp_path / "console.log")
    con._interact_tail = b""
    text = b"# cat /init\r\r\n\techo \"ORCH-SHELL-EXIT\"\r\r\n# "
    assert con._watch_output(text) == text


@pytest.mark.integration
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
