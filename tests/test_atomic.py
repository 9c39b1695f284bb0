"""orchestrator/atomic.py: same-directory temporary file, then os.replace."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator import atomic


def test_text_bytes_json_replace_the_target(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    atomic.write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    atomic.write_bytes_atomic(tmp_path / "b.bin", b"\0\1")
    assert (tmp_path / "b.bin").read_bytes() == b"\0\1"
    atomic.write_json_atomic(tmp_path / "d.json", {"b": 1, "a": [2]})
    assert (tmp_path / "d.json").read_text() == json.dumps({"b": 1, "a": [2]}, indent=1, sort_keys=True)
    atomic.write_json_atomic(tmp_path / "e.json", {"b": 1, "a": 2}, indent=2, sort_keys=False, fsync=True)
    assert (tmp_path / "e.json").read_text() == json.dumps({"b": 1, "a": 2}, indent=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "d.json", "e.json", "f.txt"]


def test_temp_names_are_next_to_the_target(tmp_path: Path) -> None:
    # NAME.tmp is what the run's cleanup of interrupted writes removes (*.tmp).
    assert atomic.temp_path(tmp_path / "cell.json") == tmp_path / "cell.json.tmp"
    assert atomic.temp_path(tmp_path / "x.gz", per_process=True) == tmp_path / f"x.gz.tmp{os.getpid()}"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    for per_process in (False, True):
        with pytest.raises(RuntimeError):
            with atomic.atomic_writer(target, "w", per_process=per_process) as f:
                f.write("half")
                raise RuntimeError("interrupted")
        assert target.read_text() == "old"
        assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_path_for_other_writers_and_copy(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x" * 5000)
    atomic.copy_file_atomic(src, tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == src.read_bytes()
    with atomic.atomic_path(tmp_path / "out", per_process=True) as tmp:
        assert tmp.parent == tmp_path and not tmp.exists()
        tmp.write_text("made by another program")
    assert (tmp_path / "out").read_text() == "made by another program"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "out", "src"]


def test_results_write_json_atomic_still_makes_its_directory(tmp_path: Path) -> None:
    from orchestrator.reports.results import write_json_atomic

    write_json_atomic(tmp_path / "new" / "m.json", {"z": 1, "a": 2})
    assert json.loads((tmp_path / "new" / "m.json").read_text()) == {"a": 2, "z": 1}
