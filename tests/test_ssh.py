"""SSH port handling: a taken port is recognised from QEMU's real failure."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from conftest import need_command
from orchestrator.vm.console import BootFailure, GuestConsole
from orchestrator.vm.machine import HostInfo, MachineShape, render_qemu_argv
from orchestrator.vm.ssh import free_port, port_in_use_failure


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.integration  # starts QEMU
def test_qemu_port_in_use_is_recognised(tmp_path: Path) -> None:
    need_command("qemu-system-aarch64", "qemu-system-arm")
    kernel = tmp_path / "Image"
    kernel.write_bytes(b"\0" * 4096)  # QEMU fails on the netdev before booting anything
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = render_qemu_argv(MachineShape(name="t"), kernel, kernel, ssh_port=port,
                                host=HostInfo("x86_64", False, False, (7, 2)))
        with pytest.raises(BootFailure) as err:
            with GuestConsole(argv, tmp_path / "console.log") as con:
                con.wait_ready(silence=20, overall=30)
    assert err.value.reason == "qemu-exit" and err.value.stage is None
    assert port_in_use_failure(err.value.last_lines)
    assert "status 1" in str(err.value)
    assert not port_in_use_failure(["[    2.563281] Kernel panic - not syncing: VFS"])
