"""An arm64 host has no cross compiler and needs none: the KVM probe is built
with the toolchain the kernel build uses (before, `aarch64-linux-gnu-gcc` was
hard-coded, so every boot on a native arm64 host failed)."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.vm import nested_kvm; from orchestrator.kernel import toolchain


def test_native_arm64_host_uses_plain_gcc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain, "host_is_arm64", lambda: True)
    monkeypatch.setattr(toolchain.shutil, "which", lambda name, *a, **k: f"/usr/bin/{name}")
    monkeypatch.setattr(toolchain.proc, "run", lambda argv, **kw: type("R", (), {"stdout": "gcc (Debian 12.2.0-14) 12.2.0\n"})())
    tc = toolchain.detect()
    assert tc.cross_compile == "" and tc.gcc == "gcc"
    argv = nested_kvm.probe_compile_argv(tc, Path("/tmp/out"))
    assert argv[0] == "gcc" and "-static" in argv and argv[-1] == str(nested_kvm.PROBE_SOURCE)


def test_x86_host_uses_the_cross_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain, "host_is_arm64", lambda: False)
    monkeypatch.setattr(toolchain.shutil, "which", lambda name, *a, **k: f"/usr/bin/{name}")
    monkeypatch.setattr(toolchain.proc, "run", lambda argv, **kw: type("R", (), {"stdout": "x\n"})())
    tc = toolchain.detect()
    assert nested_kvm.probe_compile_argv(tc, Path("/tmp/out"))[0] == "aarch64-linux-gnu-gcc"


def test_probe_cache_is_keyed_by_compiler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real cross build; another compiler identity is another cache entry."""
    tc = toolchain.detect()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    probe = nested_kvm.build_kvm_probe(tc)
    assert probe.read_bytes()[:4] == b"\x7fELF" and nested_kvm.build_kvm_probe(tc) == probe
    other = toolchain.Toolchain(tc.arch, tc.cross_compile, tc.gcc_version + " (other)", tc.ccache)
    assert nested_kvm.build_kvm_probe(other) != probe
    assert not [p for p in probe.parent.iterdir() if ".tmp" in p.name]
