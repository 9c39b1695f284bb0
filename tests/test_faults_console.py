"""Binary garbage on the serial console: bounded in time and memory.

First through the real GuestConsole (pty, pexpect) with a child that plays a
guest printing tens of MB of random bytes inside one command's output, then
on a real guest, which also serves the SSH security checks (forwarding bound
to 127.0.0.1, per-run client key, pinned host key).
"""
from __future__ import annotations

import re
import sys
import time
import tracemalloc
from pathlib import Path

import paramiko
import pytest

import faults_support as fs
from orchestrator.vm.console import MAX_LINE_CHARS, MAX_PENDING, GuestConsole

FAKE_GUEST = r"""
import os, re, sys
out = sys.stdout.buffer
out.write(b"Booting Linux on physical CPU 0x0\nORCH-INIT\nORCH-READY uptime=1.00\n# "); out.flush()
while True:
    line = sys.stdin.readline()
    if not line:
        break
    m = re.search(r"BEGIN (\w+);", line)
    if not m:
        continue
    nonce = m.group(1)
    out.write(b"BEGIN-" + nonce.encode() + b"\n")
    if "garbage" in line:
        left = int(sys.argv[1])
        while left > 0:
            chunk = os.urandom(min(left, 1 << 20)).replace(b"END-", b"end-")
            out.write(chunk)
            left -= len(chunk)
    else:
        out.write(b"fine\n")
    out.write(b"\nEND-" + nonce.encode() + b"-0\n# "); out.flush()
"""


def test_garbage_in_command_output_is_bounded(tmp_path: Path) -> None:
    size = 40 << 20
    with GuestConsole([sys.executable, "-c", FAKE_GUEST, str(size)], tmp_path / "console.log") as con:
        con.wait_ready(silence=10, overall=30)
        tracemalloc.start()
        t0 = time.monotonic()
        try:
            res = con.run("cat garbage", timeout=120)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        seconds = time.monotonic() - t0
        assert res.exit_status == 0
        assert len(res.output) <= MAX_PENDING
        dropped = re.search(r"\[\.\.\. (\d+) characters of console output dropped \.\.\.\]", res.output)
        assert dropped and int(dropped.group(1)) + len(res.output) > size // 3  # the count adds up
        assert all(len(line) <= MAX_LINE_CHARS + 10 for line in con.last_lines)
        assert con.run("echo next").output.strip() == "fine"  # the console still works
    assert peak < 64 << 20, f"{peak >> 20} MiB for {size >> 20} MiB of console output"
    assert seconds < 60
    assert (tmp_path / "console.log").stat().st_size > size  # the log keeps everything


@pytest.mark.integration
def test_real_guest_garbage_and_ssh_security(tmp_path: Path, baseline_build, monkeypatch) -> None:
    from orchestrator.vm.session import start_guest
    from orchestrator.vm.machine import shape_by_name
    from orchestrator.vm.ssh import connect
    from orchestrator.vm.sshkeys import Ed25519Key

    token = fs.new_token()
    monkeypatch.setenv(fs.TOKEN_ENV, token)
    try:
        with start_guest(shape_by_name("default"), baseline_build.kernel.image, workdir=tmp_path,
                         cmdline_extra=f"orch.test={token}") as g:
            # Forwarding: QEMU listens on 127.0.0.1 only (not 0.0.0.0, not IPv6).
            listening = _listening_addresses(g.ssh_port)
            assert listening == ["127.0.0.1"], listening
            # Only this run's client key logs in; only this run's host key is accepted.
            assert g.ssh.run("echo in").stdout == "in\n"
            with pytest.raises(paramiko.AuthenticationException):
                connect(g.ssh_port, Ed25519Key.generate(), g.keys.host)
            with pytest.raises(paramiko.BadHostKeyException):
                connect(g.ssh_port, g.keys.client, Ed25519Key.generate())
            # 3 MB of random bytes through the serial console as a command's output.
            t0 = time.monotonic()
            res = g.console.run("head -c 3000000 /dev/urandom", timeout=300)
            assert res.exit_status == 0 and len(res.output) <= MAX_PENDING
            assert "characters of console output dropped" in res.output
            assert time.monotonic() - t0 < 240
            assert g.console.run("echo still-here").output == "still-here\n"
        assert not any(g.keys.client.seed in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    finally:
        left = fs.wait_no_leftovers(token)
        fs.kill_leftovers(token)
    assert left == []


def _listening_addresses(port: int) -> list[str]:
    """Local addresses with a TCP socket listening on port (from /proc/net/tcp and tcp6)."""
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.append("::" if v6 else ".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found
