"""Kernel source specs and identities (tiny git repos stand in for kernel trees
only where the property is about git, not about the kernel)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.kernel.source import DEFAULT_TARBALL, SourceSpec, kernel_version, prepare, worktree_identity


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@l", *args], check=True,
                   capture_output=True)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "linux"
    t.mkdir()
    (t / "Makefile").write_text("VERSION = 9\nPATCHLEVEL = 99\nSUBLEVEL = 987\nEXTRAVERSION =\n")
    (t / "a.c").write_text("int a;\n")
    git(t, "init", "-q")
    git(t, "add", "-A")
    git(t, "commit", "-qm", "base")
    return t


def test_spec_forms(tree: Path, tmp_path: Path):
    assert SourceSpec.parse(None) == SourceSpec("tarball", DEFAULT_TARBALL)
    assert SourceSpec.parse(str(tree)).kind == "worktree"
    s = SourceSpec.parse(f"{tree}@HEAD")
    assert (s.kind, s.path, s.ref) == ("git", tree, "HEAD")
    tarball = tmp_path / "linux-6.12.tar.xz"
    tarball.write_bytes(b"")
    assert SourceSpec.parse(str(tarball)).kind == "tarball"


def test_kernel_version_from_makefile(tree: Path):
    assert kernel_version(tree) == "9.99.987"  # a synthetic Makefile, not a Debian release


def test_worktree_identity_tracks_uncommitted_and_untracked_changes(tree: Path):
    head, clean = worktree_identity(tree)
    (tree / "a.c").write_text("int a = 1;\n")
    _, dirty = worktree_identity(tree)
    (tree / "new.c").write_text("int b;\n")
    _, untracked = worktree_identity(tree)
    assert head and len({clean, dirty, untracked}) == 3
    (tree / "new.c").unlink()
    (tree / "a.c").write_text("int a;\n")
    assert worktree_identity(tree) == (head, clean)


def test_worktree_built_in_place_is_refused(tree: Path):
    (tree / ".config").write_text("CONFIG_X=y\n")
    with pytest.raises(UserError) as exc:
        prepare(SourceSpec.parse(str(tree)))
    assert "mrproper" in str(exc.value)


def test_unknown_git_ref_is_a_clear_error(tree: Path):
    with pytest.raises(UserError) as exc:
        prepare(SourceSpec.parse(f"{tree}@no-such-branch"))
    assert "ref 'no-such-branch' not found" in str(exc.value)


def test_missing_default_tarball_names_the_package(monkeypatch, tmp_path: Path):
    monkeypatch.setattr("orchestrator.kernel.source.DEFAULT_TARBALL", tmp_path / "none.tar.xz")
    with pytest.raises(UserError) as exc:
        prepare(SourceSpec("tarball", tmp_path / "none.tar.xz"))
    assert "not found" in str(exc.value) and "apt-get install linux-source-6.12" in str(exc.value)
