"""One QEMU version probe (vm/machine.qemu_version, issue 25): the string records
and the --resume key carry, and the (major, minor) the accelerator plan uses,
from one `--version` call per binary."""
from __future__ import annotations

import json
import shutil

from conftest import need_command
from orchestrator.vm import machine, session


def test_installed_qemu_gives_text_and_number() -> None:
    need_command("qemu-system-aarch64", "qemu-system-arm")
    machine.qemu_version.cache_clear()
    v = machine.qemu_version()
    assert v == f"{shutil.which('qemu-system-aarch64')}: {v.line}"
    assert v.line.startswith("QEMU emulator version ")
    major, minor = v.number
    assert v.line.startswith(f"QEMU emulator version {major}.{minor}") and major >= 7
    assert json.loads(json.dumps({"qemu": v})) == {"qemu": str(v)}  # records stay plain JSON
    assert machine.qemu_version() is v  # asked once
    assert session.qemu_version is machine.qemu_version  # one function


def test_missing_qemu_is_said_not_raised() -> None:
    v = machine.qemu_version("qemu-system-nosuch-arch")
    assert v == "qemu-system-nosuch-arch: not installed" and v.number == (0, 0) and v.path is None
