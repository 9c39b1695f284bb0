"""Boot stage detection on real console logs (tests/fixtures/console/README.md).

The logs are replayed through the real GuestConsole (pty, pexpect, timers) by
a child process that prints them, so stage, panic, hang, exit and timeout
handling run exactly as with QEMU, in a fraction of a second.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from orchestrator.vm.console import BootFailure, GuestConsole, GuestCrashed, scan_boot_log

FIXTURES = Path(__file__).parent / "fixtures" / "console"


def _replay(log: str, then: str = "exit") -> list[str]:
    """argv of a child that writes a fixture (in chunks), then exits/sleeps/repeats."""
    script = (
        "import sys, time\n"
        f"data = open({str(FIXTURES / log)!r}, 'rb').read()\n"
        "def out():\n"
        "    for i in range(0, len(data), 4000):\n"
        "        sys.stdout.buffer.write(data[i:i + 4000]); sys.stdout.flush(); time.sleep(0.01)\n"
        "out()\n"
        f"mode = {then!r}\n"
        "if mode == 'sleep': time.sleep(60)\n"
        "while mode == 'repeat': out(); time.sleep(0.1)\n"
    )
    return [sys.executable, "-c", script]


def test_scan_boot_log_on_fixtures() -> None:
    def scan(name: str):
        return scan_boot_log((FIXTURES / name).read_text(errors="replace"))

    assert scan("boot-ready-vhe.log") == (["banner", "init", "ready"], False)
    assert scan("boot-ready-nvhe.log") == (["banner", "init", "ready"], False)
    assert scan("boot-panic-no-init.log") == (["banner"], True)
    assert scan("boot-hang.log") == (["banner", "init"], False)
    assert scan("crash-sysrq.log") == (["banner", "init", "ready"], True)


def test_ready(tmp_path: Path) -> None:
    with GuestConsole(_replay("boot-ready-vhe.log", "sleep"), tmp_path / "c.log") as con:
        info = con.wait_ready(silence=10, overall=20)
    assert list(info.stages) == ["banner", "init", "ready"]
    assert info.stages["banner"] <= info.stages["init"] <= info.stages["ready"]
    assert info.guest_uptime == pytest.approx(6.49)
    # The log file holds what was streamed, byte for byte (up to the ready line at least).
    assert b"ORCH-READY uptime=6.49" in (tmp_path / "c.log").read_bytes()


def test_panic_before_init(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(BootFailure) as err:
        with GuestConsole(_replay("boot-panic-no-init.log"), tmp_path / "c.log") as con:
            con.wait_ready(silence=30, overall=60)
    assert err.value.reason == "panic" and err.value.stage == "banner"
    assert "VFS: Unable to mount root fs" in str(err.value)
    assert any("Memory Limit: none" in line for line in err.value.last_lines)
    assert time.monotonic() - start < 15  # early: not the silence timeout


def test_panic_after_ready_surfaces_in_next_command(tmp_path: Path) -> None:
    with GuestConsole(_replay("crash-sysrq.log"), tmp_path / "c.log") as con:
        info = con.wait_ready(silence=30, overall=60)
        assert "ready" in info.stages
        with pytest.raises(GuestCrashed) as err:
            con.run("true", timeout=20)
    assert err.value.reason == "panic"
    assert con.panic_line() is not None and "sysrq triggered crash" in con.panic_line()


def test_hang(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(BootFailure) as err:
        with GuestConsole(_replay("boot-hang.log", "sleep"), tmp_path / "c.log") as con:
            con.wait_ready(silence=1.5, overall=30)
    assert (err.value.stage, err.value.reason) == ("init", "hang")
    assert err.value.last_lines[-1] == "ORCH-NET ok"
    assert time.monotonic() - start < 10


def test_exit(tmp_path: Path) -> None:
    with pytest.raises(BootFailure) as err:
        with GuestConsole(_replay("boot-hang.log"), tmp_path / "c.log") as con:
            con.wait_ready(silence=30, overall=30)
    assert (err.value.stage, err.value.reason) == ("init", "qemu-exit")
    assert "status 0" in str(err.value)


def test_overall_timeout_while_output_flows(tmp_path: Path) -> None:
    with pytest.raises(BootFailure) as err:
        with GuestConsole(_replay("boot-hang.log", "repeat"), tmp_path / "c.log") as con:
            con.wait_ready(silence=5, overall=2)
    assert err.value.reason == "timeout"
    pid = con.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # ended with its group when the block exited
