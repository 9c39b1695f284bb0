"""Nested KVM evidence parsing, on dmesg and probe output captured in real guests."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import need_command
from orchestrator.vm import image as guest_image
from orchestrator.vm.nested_kvm import build_kvm_probe, parse_nested_kvm

FIXTURES = Path(__file__).parent / "fixtures" / "console"


def _read(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_vhe_guest() -> None:
    check = parse_nested_kvm(_read("dmesg-vhe.txt"), True, _read("probe-vhe.txt"))
    assert check.ok and check.mode == "vhe" and check.reason == ""
    assert any("All CPU(s) started at EL2" in e for e in check.evidence)
    assert "KVM-PROBE run ok exit=mmio addr=0x10000000" in check.evidence


def test_nvhe_guest() -> None:
    check = parse_nested_kvm(_read("dmesg-nvhe.txt"), True, _read("probe-nvhe.txt"))
    assert check.ok and check.mode == "nvhe"
    assert any("Hyp nVHE mode initialized successfully" in e for e in check.evidence)


def test_failures_say_why() -> None:
    dmesg = "\n".join(line for line in _read("dmesg-vhe.txt").splitlines()
                      if "EL2" not in line and "VHE mode" not in line)
    probe = "KVM-PROBE open FAIL errno=2 (No such file or directory)\n"
    check = parse_nested_kvm(dmesg, False, probe)
    assert not check.ok and check.mode is None
    assert "did not all start at EL2" in check.reason
    assert "KVM did not initialise (last kvm line: " in check.reason
    assert "/dev/kvm is missing" in check.reason
    assert "KVM-PROBE open FAIL" in check.reason
    # An EL1 boot says so in its own words.
    el1 = parse_nested_kvm("[ 0.1] CPU: All CPU(s) started at EL1\n", True, "")
    assert "started at EL1" in el1.reason and "no output" in el1.reason


def test_probe_builds_static_arm64() -> None:
    need_command("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")
    probe = build_kvm_probe()
    info = guest_image.read_elf(probe)
    assert info is not None and info.machine == guest_image.EM_AARCH64
    assert info.interp is None and info.needed == ()  # static: runs in any initramfs
    assert build_kvm_probe() == probe  # cached by source hash
