"""KVM selftests and guest programs on whatever tree: the Makefile's own test
list, and a program that does not build becoming a reason, not a failed build."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.kernel import guest_programs as gp
from orchestrator.kernel.build import make_env
from orchestrator.paths import GUEST_DIR
from orchestrator.kernel.selftests import WANTED, tree_test_list
from orchestrator.kernel.toolchain import detect

pytestmark = pytest.mark.integration


def test_the_trees_makefile_lists_the_arm64_tests(kernel_source, tmp_path: Path):
    """Asked from make itself (6.12): every wanted test is an arm64 test there."""
    tc = detect()
    kvm = kernel_source.repo / "tools/testing/selftests/kvm"
    listed = tree_test_list(kvm, ["ARCH=arm64", f"CROSS_COMPILE={tc.cross_compile}", f"OUTPUT={tmp_path / 'out'}",
                                  f"abs_objdir={tmp_path / 'obj'}"], make_env(tc), tmp_path / "out")
    assert set(WANTED) <= listed and "x86_64/vmx_dirty_log_test" not in listed
    assert not (kvm / "tools").exists()  # nothing written into the source tree


def test_a_program_that_does_not_compile_is_skipped_with_its_reason(baseline_build, kernel_source, tmp_path: Path):
    guest = tmp_path / "guest"
    guest.mkdir()
    shutil.copy(GUEST_DIR / "orch_vm.h", guest)
    (guest / "good.c").write_text('#include "orch_vm.h"\nint main(void) { return 0; }\n')
    (guest / "broken.c").write_text('#include "orch_vm.h"\nint main(void) { return undeclared_thing; }\n')
    tc = detect()
    files = gp.build_guest_programs(kernel_source, baseline_build.selftests, tc, guest_dir=guest, strict=False)
    assert set(files) == {"/opt/orch/bin/good"}
    why = gp.unavailable_programs(baseline_build.selftests, tc, guest_dir=guest)
    assert list(why) == ["/opt/orch/bin/broken"]
    assert "broken.c does not compile on this tree" in why["/opt/orch/bin/broken"]
    assert "undeclared_thing" in why["/opt/orch/bin/broken"]
