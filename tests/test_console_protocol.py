"""The serial command protocol, checked with a real POSIX shell on the host."""
from __future__ import annotations

import subprocess

from orchestrator.vm.console import command_line, parse_command_output


def _through_host_sh(cmd: str, nonce: str = "a1b2c3") -> str:
    """Feed the typed line to /bin/sh as the guest shell would get it."""
    return subprocess.run(["sh"], input=command_line(cmd, nonce), capture_output=True,
                          text=True, timeout=30).stdout


def test_exit_status_and_output() -> None:
    out = _through_host_sh("echo hello; echo err >&2; exit 3")
    assert parse_command_output(out, "a1b2c3") == (3, "hello\nerr\n")


def test_quotes_syntax_errors_and_no_trailing_newline() -> None:
    status, output = parse_command_output(_through_host_sh("printf '%s' \"it's\""), "a1b2c3")
    assert (status, output) == (0, "it's")
    status, output = parse_command_output(_through_host_sh("if then fi"), "a1b2c3")
    assert status == 2 and "syntax" in output.lower()


def test_command_cannot_read_following_input() -> None:
    line = command_line("cat", "n1") + "echo SHOULD-RUN\n"
    out = subprocess.run(["sh"], input=line, capture_output=True, text=True, timeout=30).stdout
    assert parse_command_output(out, "n1") == (0, "")
    assert "SHOULD-RUN" in out


def test_echoed_command_line_never_matches() -> None:
    nonce = "ffee00"
    typed = command_line("exit 7", nonce)
    # With tty echo on, the console shows the typed line before any output.
    assert f"BEGIN-{nonce}" not in typed and f"END-{nonce}-" not in typed
    echoed_then_output = typed.replace("\n", "\r\n") + f"BEGIN-{nonce}\r\nEND-{nonce}-7\r\n"
    assert parse_command_output(echoed_then_output, nonce) == (7, "")


def test_kernel_message_inside_a_marker() -> None:
    nonce = "0badc0de"
    text = (f"BEGIN-{nonce}\r\r\nline one\r\r\n"
            f"END-0bad[   12.345678] zram0: detected capacity change\r\r\nc0de-0\r\r\n# ")
    assert parse_command_output(text, nonce) == (0, "line one\n")
    # A complete kernel line between output lines stays in the output.
    text = f"BEGIN-{nonce}\r\na\r\n[    1.000000] random: crng init done\r\nb\r\nEND-{nonce}-1\r\n"
    assert parse_command_output(text, nonce) == (1, "a\n[    1.000000] random: crng init done\nb\n")


def test_incomplete_is_none() -> None:
    assert parse_command_output("BEGIN-x1\r\npartial", "x1") is None
    assert parse_command_output("END-x1-0\r\n", "x1") is None
