"""The project's guest programs: compiled like the tree's KVM selftests,
static arm64, cached by their inputs; compile errors name the file."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from orchestrator.kernel import guest_programs as gp
from orchestrator.errors import BuildFailed
from orchestrator.vm.image import EM_AARCH64, read_elf
from orchestrator.paths import GUEST_DIR
from orchestrator.kernel.toolchain import detect


def test_sources_found_and_probe_left_out():
    srcs = gp.find_sources()
    names = {p.name for p in srcs.programs}
    assert {"mglru_aging.c", "memcg_reclaim.c"} <= names
    assert "kvm_probe.c" not in names  # built on its own by nested_kvm
    assert "orch_vm.h" in {p.name for p in srcs.headers}
    assert "memcg-reclaim.sh" in {p.name for p in srcs.scripts}


def test_digest_changes_with_any_input(tmp_path):
    guest = tmp_path / "guest"
    shutil.copytree(GUEST_DIR, guest)
    before = gp.find_sources(guest).digest()
    assert gp.find_sources(guest).digest() == before
    for rel in ("orch_vm.h", "workloads/memcg-reclaim.sh", "mglru_aging.c"):
        p = guest / rel
        original = p.read_bytes()
        p.write_bytes(original + b"\n")
        assert gp.find_sources(guest).digest() != before, rel
        p.write_bytes(original)
    assert gp.find_sources(guest).digest() == before


def _makefile_cflags(tree: Path) -> set[str]:
    """Every option word of the KVM selftests Makefile's `CFLAGS +=` block for all arches."""
    text = (tree / "tools/testing/selftests/kvm/Makefile").read_text()
    m = re.search(r"^CFLAGS \+= (.*?)(?<!\\)\n", text, flags=re.M | re.S)
    assert m, "CFLAGS += block not found in the selftests Makefile"
    words = re.sub(r"-I\s+\S+", "", m.group(1).replace("\\\n", " ")).split()  # include dirs: checked by the build
    return {w for w in words if not w.startswith(("-I", "$("))}


@pytest.mark.integration
def test_flags_are_the_makefiles(kernel_source):
    ours = set(gp.CFLAGS) - {"-static", "-D_GNU_SOURCE="}  # -static: our EXTRA_CFLAGS; _GNU_SOURCE: lib.mk
    theirs = _makefile_cflags(kernel_source.repo)
    assert ours <= theirs, ours - theirs
    assert theirs - {"-MD", "-MP"} <= ours, theirs - ours
    text = (kernel_source.repo / "tools/testing/selftests/kvm/Makefile").read_text()
    assert "LDLIBS += -ldl" in text and "LDFLAGS += -pthread $(no-pie-option)" in text


@pytest.mark.integration
def test_build_static_arm64_cached(baseline_build, kernel_source):
    tc = detect()
    files = gp.build_guest_programs(kernel_source, baseline_build.selftests, tc)
    assert set(files) >= {"/opt/orch/bin/mglru_aging", "/opt/orch/bin/memcg_reclaim",
                          "/opt/orch/workloads/memcg-reclaim.sh"}
    for guest_path, host in files.items():
        assert host.is_file()
        if guest_path.startswith(gp.GUEST_PROGRAMS_DIR):
            elf = read_elf(host)
            assert elf is not None and elf.machine == EM_AARCH64
            assert elf.interp is None and elf.needed == ()  # static: runs in the bare initramfs
        else:
            assert host.stat().st_mode & 0o111  # the image keeps the executable bit
            assert host.read_bytes() == (GUEST_DIR / "workloads" / host.name).read_bytes()
    mtimes = {p: h.stat().st_mtime_ns for p, h in files.items()}
    again = gp.build_guest_programs(kernel_source, baseline_build.selftests, tc)
    assert again == files and {p: h.stat().st_mtime_ns for p, h in again.items()} == mtimes


@pytest.mark.integration
def test_compile_error_names_the_file(baseline_build, kernel_source, tmp_path):
    guest = tmp_path / "guest"
    guest.mkdir()
    shutil.copy(GUEST_DIR / "orch_vm.h", guest)
    (guest / "broken.c").write_text('#include "orch_vm.h"\nint main(void) { return undeclared_thing; }\n')
    with pytest.raises(BuildFailed) as exc:
        gp.build_guest_programs(kernel_source, baseline_build.selftests, detect(), guest_dir=guest)
    assert "broken.c" in str(exc.value)
    assert any("undeclared_thing" in line for line in exc.value.first_errors)
    assert Path(exc.value.log_path).is_file()
