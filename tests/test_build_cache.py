"""Build cache keys and corrupt-entry detection (no kernel build needed)."""
from __future__ import annotations

import json
from pathlib import Path

from orchestrator.kernel.build import first_errors, parse_warnings, valid_cached
from orchestrator.kernel.source import sha256_file


def _fake_entry(tmp_path: Path) -> Path:
    out = tmp_path / "entry"
    out.mkdir()
    (out / "Image").write_bytes(b"\x00" * 64 + b"ARMd")
    meta = {"key": "k", "artifacts_sha256": {"Image": sha256_file(out / "Image")}}
    (out / "metadata.json").write_text(json.dumps(meta))
    return out


def test_complete_entry_is_valid(tmp_path: Path):
    assert valid_cached(_fake_entry(tmp_path))["key"] == "k"


def test_corrupt_artifact_invalidates_entry(tmp_path: Path):
    out = _fake_entry(tmp_path)
    with (out / "Image").open("r+b") as f:
        f.write(b"\x01")
    assert valid_cached(out) is None


def test_missing_metadata_means_incomplete(tmp_path: Path):
    out = _fake_entry(tmp_path)
    (out / "metadata.json").unlink()
    assert valid_cached(out) is None


def test_truncated_metadata_means_incomplete(tmp_path: Path):
    out = _fake_entry(tmp_path)
    (out / "metadata.json").write_text('{"key": ')
    assert valid_cached(out) is None


# gcc 12 error output in the form make prints it.  The real thing is
# exercised end to end by tests/test_faults_input.py::test_run_matrix_build_error_shows_the_first_compiler_error
# (tests/fixtures/patches/break-build.patch, a patch that breaks the build).
REAL_FAILURE = """\
  CC      arch/arm64/kvm/mmu.o
../arch/arm64/kvm/mmu.c: In function 'kvm_age_gfn':
../arch/arm64/kvm/mmu.c:1785:9: error: 'youngx' undeclared (first use in this function); did you mean 'young'?
 1785 |         youngx = kvm_pgtable_stage2_test_clear_young(kvm->arch.mmu.pgt,
      |         ^~~~~~
../arch/arm64/kvm/mmu.c:1785:9: note: each undeclared identifier is reported only once for each function it appears in
make[5]: *** [../scripts/Makefile.build:229: arch/arm64/kvm/mmu.o] Error 1
make[4]: *** [../scripts/Makefile.build:478: arch/arm64/kvm] Error 2
""".splitlines()


def test_first_errors_starts_at_function_context():
    errs = first_errors(REAL_FAILURE)
    assert errs[0].endswith("In function 'kvm_age_gfn':")
    assert "error: 'youngx' undeclared" in errs[1]


def test_parse_warnings():
    w = parse_warnings(["../mm/vmscan.c:12:5: warning: unused variable 'x' [-Wunused-variable]", "  CC foo.o"])
    assert w == [{"file": "../mm/vmscan.c", "line": 12, "message": "unused variable 'x' [-Wunused-variable]"}]
