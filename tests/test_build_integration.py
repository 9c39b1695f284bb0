"""Real builds from Debian's linux-source-6.12: baseline, v4-fixed, a broken patch.

Minutes on 2 cores the first time (cold: ~9 min for baseline); the cache makes
reruns take seconds.  These are the builds every later stage boots.
"""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from orchestrator.cli import main as cli_main
from orchestrator.errors import BuildFailed
from orchestrator.paths import PATCHES_DIR
from orchestrator.kernel.variant_build import BuildRequest, build_variant
from orchestrator.kernel.source import installed_source_package_version

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parent / "fixtures"


def is_arm64_image(path: Path) -> bool:
    """arm64 Image header: magic "ARM\\x64" at offset 56 (Documentation/arch/arm64/booting.rst)."""
    head = path.read_bytes()[:64]
    return len(head) == 64 and head[56:60] == b"ARM\x64"


def is_static_aarch64_elf(path: Path) -> bool:
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    e_machine = struct.unpack_from("<H", data, 18)[0]
    e_phoff, = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    interp = any(struct.unpack_from("<I", data, e_phoff + i * e_phentsize)[0] == 3 for i in range(e_phnum))
    return e_machine == 183 and not interp  # EM_AARCH64, no PT_INTERP


@pytest.fixture(scope="module")
def baseline(baseline_build):
    return baseline_build


@pytest.fixture(scope="module")
def v4_fixed(v4_fixed_build):
    return v4_fixed_build


def test_baseline_builds_an_arm64_image(baseline):
    k = baseline.kernel
    assert is_arm64_image(k.image)
    assert k.vmlinux.stat().st_size > 1_000_000
    assert "CONFIG_KVM=y" in k.config.read_text()
    # baseline = 6.12 + only the measurement knob (inert without kvm-arm.stage2_sw_af)
    assert [r.patch.name[:4] for r in baseline.apply.results] == ["0000"]


def test_metadata_is_complete(baseline, kernel_source):
    meta = baseline.kernel.metadata
    for key in ("key", "source", "tree_id", "config_sha256", "toolchain", "durations_s", "artifacts_sha256",
                "reproducer", "fragments", "make"):
        assert meta.get(key), key
    # The version the installed tarball itself declares (its Makefile), never a
    # literal: Debian's linux-source-6.12 moves with 6.12.y security updates.
    assert meta["source"]["sha256"] and meta["source"]["kernel_version"] == kernel_source.kernel_version
    assert meta["source"]["kernel_version"].startswith("6.12.")
    package = installed_source_package_version()
    assert package is None or package.split(":")[-1].startswith(kernel_source.kernel_version + "-"), package
    assert set(meta["artifacts_sha256"]) == {"Image", "vmlinux", "System.map", ".config"}
    assert meta["reproducer"].startswith("orchestrator build")
    assert (baseline.kernel.out_dir / "build.log").is_file()


def test_same_request_is_a_cache_hit(baseline):
    again = build_variant(BuildRequest(series=PATCHES_DIR, variant="baseline"))
    assert again.kernel.cache_hit and again.kernel.key == baseline.kernel.key


def test_v4_fixed_applies_builds_and_differs(baseline, v4_fixed):
    # 0002 lands a few lines lower in mmu.c than written, below the knob 0000 adds
    assert [r.status for r in v4_fixed.apply.results] in (["applied"] * 4, ["applied", "applied", "applied-offset", "applied"])
    assert is_arm64_image(v4_fixed.kernel.image)
    assert v4_fixed.kernel.key != baseline.kernel.key
    assert "CONFIG_KVM_MMU_NOTIFIER_AGING_LOCKLESS=y" in v4_fixed.kernel.config.read_text()
    assert "CONFIG_KVM_MMU_NOTIFIER_AGING_LOCKLESS" not in baseline.kernel.config.read_text()
    patches = v4_fixed.kernel.metadata["series"]["patches"]
    assert [p["name"][:4] for p in patches] == ["0000", "0001", "0002", "0003"]


def test_selftests_are_static_arm64_and_shared_by_variants(baseline, v4_fixed):
    binary = baseline.selftests.binary("access_tracking_perf_test")
    assert is_static_aarch64_elf(binary)
    # The series touches no uapi/tools file: one selftests build serves both.
    assert v4_fixed.selftests.key == baseline.selftests.key


def test_broken_patch_surfaces_first_compiler_error(baseline, capsys):
    with pytest.raises(BuildFailed) as exc:
        build_variant(BuildRequest(series=FIXTURES / "patches" / "break-build.patch", selftests=False))
    errors = "\n".join(exc.value.first_errors)
    assert "young_pages_seen" in errors and "error:" in errors
    assert "arch/arm64/kvm/mmu.c" in errors
    # Through the CLI: exit status 1 and the error on stderr, no traceback.
    rc = cli_main(["build", "--series", str(FIXTURES / "patches" / "break-build.patch"), "--no-selftests"])
    err = capsys.readouterr().err
    assert rc == 1 and "BUILD FAILED" in err and "young_pages_seen" in err and "Traceback" not in err
