"""A failed patch always names its file and hunk (issue 25): git's own words
first (kernel/apply.py), and when git names no hunk, each hunk checked alone
(kernel/hunk_check.py).  Real git on a small repository, commits made with
plumbing and patches with format-patch, as in tests/test_apply.py (which needs
the kernel tree: integration tier)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator import proc
from orchestrator.kernel.apply import HunkFailure, _names_a_hunk, apply_series
from orchestrator.kernel.hunk_check import failing_hunks, split_hunks
from orchestrator.kernel.series import load_series
from orchestrator.kernel.source import git_env

F = "mm/Kconfig"
LINES = [f"config OPTION_{i}\n\tbool \"option {i}\"" for i in range(1, 41)]  # 80 lines, every one distinct


def _git(repo: Path, *args: str, env: dict | None = None, input_text: str | None = None) -> str:
    res = proc.run(["git", "-C", str(repo), *args], env=env or git_env(), timeout=60, input_text=input_text)
    assert res.returncode == 0, f"git {args}: {res.stderr}"
    return res.stdout


def commit_with(repo: Path, parent: str | None, lines: list[str], message: str) -> str:
    env = {**git_env(), "GIT_INDEX_FILE": str(repo / ".git" / f"index-{os.getpid()}")}
    if parent:
        _git(repo, "read-tree", parent, env=env)
    blob = _git(repo, "hash-object", "-w", "--stdin", input_text="\n".join(lines) + "\n").strip()
    _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{F}", env=env)
    tree = _git(repo, "write-tree", env=env).strip()
    return _git(repo, "commit-tree", tree, *(["-p", parent] if parent else []), "-m", message).strip()


def file_lines() -> list[str]:
    return "\n".join(LINES).split("\n")


def edited(lines: list[str], changes: dict[int, str]) -> list[str]:
    out = list(lines)
    for n, text in changes.items():
        out[n - 1] = text
    return out


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "tree"
    r.mkdir()
    _git(r, "init", "-q")
    return r


def two_hunk_patch(repo: Path, tmp: Path) -> tuple[str, str, Path]:
    """base, a tree whose line 60 was changed upstream (the line hunk #2 edits: its
    context no longer matches and a 3-way merge conflicts), and the patch (edits
    lines 10 and 60) as a series directory."""
    base_lines = file_lines()
    base = commit_with(repo, None, base_lines, "base")
    fix = commit_with(repo, base, edited(base_lines, {10: "\tbool \"ten, fixed\"", 60: "\tbool \"sixty, fixed\""}),
                      "mm: fix two prompts")
    moved = commit_with(repo, base, edited(base_lines, {60: "\tbool \"sixty, changed upstream\""}), "upstream")
    series = tmp / "series"
    series.mkdir()
    (series / "0001-fix.patch").write_text(_git(repo, "format-patch", "-1", "--stdout", fix))
    return base, moved, series


def test_context_mismatch_names_file_and_hunk(repo: Path, tmp_path: Path) -> None:
    _, moved, series = two_hunk_patch(repo, tmp_path)
    result = apply_series(repo, moved, load_series(series))
    [r] = result.results
    assert r.status == "failed"
    assert f"{F} hunk #2 (line 57): context does not match the tree" in r.detail
    assert [(f.file, f.hunk, f.line) for f in r.failures] == [(F, 2, 57)]
    assert _git(repo, "status", "--porcelain") == ""  # nothing left behind


def test_checking_each_hunk_alone_finds_the_same_hunk(repo: Path, tmp_path: Path) -> None:
    """The fallback for a silent git agrees with git where git speaks."""
    _, moved, series = two_hunk_patch(repo, tmp_path)
    _git(repo, "checkout", "-q", "-f", "--detach", moved)
    diff = (series / "0001-fix.patch").read_text()
    problems = failing_hunks(repo, diff)
    assert [(p.file, p.number, p.old_start, p.reason) for p in problems] == [
        (F, 2, 57, "context does not match the tree")]
    _git(repo, "checkout", "-q", "-f", "--detach", f"{moved}~0")
    assert _git(repo, "status", "--porcelain") == ""  # --check wrote nothing


def test_hunks_that_apply_alone_but_not_together(repo: Path) -> None:
    """Hunk #2's context is a line hunk #1 changes: each applies alone, not in order."""
    base = commit_with(repo, None, file_lines(), "base")
    _git(repo, "checkout", "-q", "-f", "--detach", base)
    diff = (f"diff --git a/{F} b/{F}\n--- a/{F}\n+++ b/{F}\n"
            "@@ -4,3 +4,3 @@\n \tbool \"option 2\"\n-config OPTION_3\n+config OPTION_3X\n \tbool \"option 3\"\n"
            "@@ -5,3 +5,3 @@\n config OPTION_3\n-\tbool \"option 3\"\n+\tbool \"three\"\n config OPTION_4\n")
    problems = failing_hunks(repo, diff)
    assert [(p.file, p.number) for p in problems] == [(F, 2)]
    assert problems[0].reason.startswith("applies alone but not after hunk(s) #1-#1 of this file")


def test_a_hunk_for_a_missing_file(repo: Path) -> None:
    base = commit_with(repo, None, file_lines(), "base")
    _git(repo, "checkout", "-q", "-f", "--detach", base)
    diff = "diff --git a/mm/nope.c b/mm/nope.c\n--- a/mm/nope.c\n+++ b/mm/nope.c\n@@ -1,1 +1,1 @@\n-a\n+b\n"
    [p] = failing_hunks(repo, diff)
    assert (p.file, p.number, p.reason) == ("mm/nope.c", 1, "file does not exist in the tree")


def test_split_counts_hunk_lines_and_leaves_the_signature_out(repo: Path, tmp_path: Path) -> None:
    _, _, series = two_hunk_patch(repo, tmp_path)
    mail = (series / "0001-fix.patch").read_text()
    hunks = split_hunks(mail)
    assert [(h.file, h.number, h.old_start) for h in hunks] == [(F, 1, 7), (F, 2, 57)]
    assert hunks[0].header.startswith(f"diff --git a/{F} b/{F}\n") and f"+++ b/{F}\n" in hunks[0].header
    assert not any(h.body.endswith("-- \n") or "\n-- \n" in h.body for h in hunks)


def test_when_git_names_no_hunk_the_hunks_are_checked() -> None:
    assert not _names_a_hunk([])
    assert not _names_a_hunk([HunkFailure(F, None, None, "patch does not apply")])
    assert not _names_a_hunk([HunkFailure("", None, None, "3-way merge failed")])
    assert _names_a_hunk([HunkFailure(F, 2, 57, "context does not match the tree")])
    assert _names_a_hunk([HunkFailure("mm/nope.c", None, None, "file does not exist in the tree")])
