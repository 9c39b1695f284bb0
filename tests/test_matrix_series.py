"""A matrix's series is read when the matrix loads (`--list`), like every other
input (issue 25): before, a `series:` directory without patches passed `--list`
and failed only when the run reached the build."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.matrix.spec import load_matrix

ROOT = Path(__file__).resolve().parents[1]


def matrix(tmp_path: Path, series: Path | str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(f"name: m\nvariants: [baseline, v4]\nseries: {series}\nworkloads: [page-idle]\n")
    return p


def test_list_refuses_a_directory_without_patches(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no diff here\n")
    m = matrix(tmp_path, empty)
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run-matrix", "--matrix", str(m), "--list"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == "" and "Traceback" not in res.stderr
    assert f"error: {m}:3: series: patch series {empty} contains no patches" in res.stderr
    assert "how to fix: " in res.stderr


def test_missing_series_names_file_line_and_key(tmp_path: Path) -> None:
    m = matrix(tmp_path, tmp_path / "nowhere")
    with pytest.raises(UserError) as err:
        load_matrix(m)
    assert err.value.message == f"{m}:3: series: {tmp_path / 'nowhere'} does not exist"


def test_patches_without_variants_file_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    (d / "fix.patch").write_text("diff --git a/mm/Kconfig b/mm/Kconfig\n--- a/mm/Kconfig\n+++ b/mm/Kconfig\n"
                                 "@@ -1 +1 @@\n-a\n+b\n")
    with pytest.raises(UserError) as err:
        load_matrix(matrix(tmp_path, d))
    assert f"series: {d} has 1 patch(es) but no variants.yaml, so the variants baseline, v4 name nothing" in err.value.message
    assert "variants.yaml" in err.value.hint


def test_a_variant_naming_a_patch_that_is_not_there(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    (d / "variants.yaml").write_text("variants:\n  baseline: []\n  v4: [0001-gone.patch]\n")
    with pytest.raises(UserError) as err:
        load_matrix(matrix(tmp_path, d))
    assert f"{d / 'variants.yaml'}:3: variants.v4: lists missing patch(es): 0001-gone.patch" in err.value.message


def test_the_project_series_loads() -> None:
    assert load_matrix("default").cells
