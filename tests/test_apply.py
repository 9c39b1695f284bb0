"""Applying series to the real 6.12 tree (a scratch clone; the cached source repo is never touched).

Synthetic cases are made with real git: commits are created with plumbing in a
temporary index (the work tree is not touched), and patches with format-patch.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import proc
from orchestrator.kernel.apply import HunkFailure, apply_series, parse_apply_output, three_way_reason
from orchestrator.kernel.series import Series, load_series, parse_diff
from orchestrator.kernel.source import PreparedSource, git_env
from orchestrator.paths import PATCHES_DIR

# Tests on `repo` (a clone of the real 86 K-file tree) are integration; the
# parsing of git's output is unit.
INTEGRATION = pytest.mark.integration

F = "mm/Kconfig"  # the file synthetic patches edit
G = "init/Kconfig"


def _git(repo: Path, *args: str, env: dict | None = None, input_text: str | None = None) -> str:
    res = proc.run(["git", "-C", str(repo), *args], env=env or git_env(), timeout=600, input_text=input_text)
    assert res.returncode == 0, f"git {args}: {res.stderr}"
    return res.stdout


@pytest.fixture(scope="session")
def repo(kernel_source: PreparedSource, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A scratch clone sharing the cached repo's objects.

    On tmpfs when there is room: 86k files take seconds to write and delete
    there, but minutes to delete on a disk busy with kernel builds.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 << 30:
        parent = Path(tempfile.mkdtemp(prefix="orchestrator-test-apply-", dir=shm))
    else:
        parent = tmp_path_factory.mktemp("apply")
    dest = parent / "linux"
    try:
        res = proc.run(["git", "clone", "-q", "--shared", str(kernel_source.repo), str(dest)], timeout=1800)
        assert res.returncode == 0, res.stderr
        yield dest
    finally:
        shutil.rmtree(parent, ignore_errors=True)  # 1.3 GB of work tree: never left behind


@pytest.fixture(scope="session")
def base(kernel_source: PreparedSource) -> str:
    assert kernel_source.base_commit
    return kernel_source.base_commit


def commit_with(repo: Path, parent: str, edits: dict[str, list[str]], message: str, tmp: Path) -> str:
    """A commit on `parent` whose files in `edits` have the given lines (work tree untouched)."""
    env = {**git_env(), "GIT_INDEX_FILE": str(tmp / f"index-{os.getpid()}")}
    _git(repo, "read-tree", parent, env=env)
    for path, lines in edits.items():
        blob = _git(repo, "hash-object", "-w", "--stdin", input_text="\n".join(lines) + "\n").strip()
        _git(repo, "update-index", "--cacheinfo", f"100644,{blob},{path}", env=env)
    tree = _git(repo, "write-tree", env=env).strip()
    return _git(repo, "commit-tree", tree, "-p", parent, "-m", message).strip()


def lines_of(repo: Path, commit: str, path: str) -> list[str]:
    return _git(repo, "show", f"{commit}:{path}").split("\n")[:-1]


def edited(lines: list[str], **changes: str) -> list[str]:
    """Copy of lines with line N (1-based, key "lN") replaced."""
    out = list(lines)
    for key, text in changes.items():
        out[int(key[1:]) - 1] = text
    return out


def series_of(repo: Path, tmp: Path, *commits: str) -> Series:
    """format-patch each commit (against its parent) into a directory, then load it."""
    d = tmp / "series"
    d.mkdir(exist_ok=True)
    for i, c in enumerate(commits, 1):
        (d / f"{i:04d}.patch").write_text(_git(repo, "format-patch", "-1", "--stdout", c))
    return load_series(d)


def head(repo: Path) -> str:
    return _git(repo, "rev-parse", "HEAD").strip()


def assert_clean(repo: Path) -> None:
    # --ignored: the kernel's .gitignore hides nearly everything (e.g. *.rej files).
    assert _git(repo, "status", "--porcelain", "--ignored") == ""
    assert not (repo / ".git" / "rebase-apply").exists()


# --------------------------------------------------------------- the real series


@INTEGRATION
def test_project_series_applies_to_the_installed_612(repo: Path, base: str) -> None:
    """patches/ must keep applying as Debian's linux-source-6.12 moves along 6.12.y.

    A clean apply, an offset or a 3-way merge is fine (0002 applies with an offset
    once 0000 is in); a failure names the patch, file and hunk that stopped it.
    """
    result = apply_series(repo, base, load_series(PATCHES_DIR))
    statuses = {r.patch.name: r.status for r in result.results}
    assert result.ok and set(statuses.values()) <= {"applied", "applied-offset", "applied-3way"}, (
        "patches/ no longer applies to the installed linux-source-6.12; refresh the failing patch:\n"
        + result.report())
    assert len(result.results) == len(load_series(PATCHES_DIR).patches)
    assert_clean(repo)


@INTEGRATION
def test_v4_series_against_612_stops_at_patch_2(repo: Path, base: str, v4_dir: Path) -> None:
    result = apply_series(repo, base, load_series(v4_dir))
    statuses = [r.status for r in result.results]
    assert statuses == ["applied-offset", "failed"] + ["not-attempted"] * 5
    assert not result.ok and not result.cached

    first, second = result.results[0], result.results[1]
    # The offset depends on the installed 6.12.y (Debian moves it): the shape, not the number.
    assert re.fullmatch(r"hunk #1 of mm/Kconfig at line \d+ \(offset [+-]\d+ lines?\)", first.detail), first.detail
    assert first.commit == result.head == head(repo)

    assert second.commit is None
    assert second.failures[0] == HunkFailure("include/linux/mmzone.h", 2, 557, "context does not match the tree")
    by_file: dict[str, list[int | None]] = {}
    for f in second.failures:
        by_file.setdefault(f.file, []).append(f.hunk)
    assert by_file == {
        "include/linux/mmzone.h": [2, 3],
        "mm/rmap.c": [1],
        "mm/vmscan.c": [1, 3, 4, 5, 6, 9, 10, 11, 12, 13, 15, 16, 17, 18, 19, 20],
    }
    assert "lacks the blobs the patch was made against" in second.detail  # why 3-way could not help

    report = result.report()
    assert "1 applied-offset, 1 failed, 5 not-attempted" in report
    assert "include/linux/mmzone.h hunk #2 (line 557)" in report
    assert report.count("not-attempted") == 6  # summary + 5 rows
    assert_clean(repo)
    # Failures are not cached.
    assert _git(repo, "for-each-ref", f"refs/orchestrator/series/{load_series(v4_dir).key()}-{base[:12]}") == ""


@INTEGRATION
def test_same_series_twice_hits_cache_and_gives_same_head(repo: Path, base: str, v4_dir: Path) -> None:
    s = load_series(v4_dir, only=["v4-01.patch"])
    ref = f"refs/orchestrator/series/{s.key()}-{base[:12]}"
    json_path = repo / ".git" / "orchestrator" / "series" / f"{s.key()}-{base[:12]}.json"
    _git(repo, "update-ref", "-d", ref)
    json_path.unlink(missing_ok=True)

    first = apply_series(repo, base, s)
    assert first.ok and not first.cached and [r.status for r in first.results] == ["applied-offset"]
    assert _git(repo, "rev-parse", ref).strip() == first.head and json_path.is_file()

    # Back to the base (mm/Kconfig changes, the top Makefile must not be rewritten) ...
    makefile_mtime = (repo / "Makefile").stat().st_mtime_ns
    apply_series(repo, base, Series("none", ()))
    assert head(repo) == base
    # ... then the cached series: a checkout of the stored head, nothing re-applied.
    second = apply_series(repo, base, s)
    assert second.cached and second.head == first.head == head(repo)
    assert [(r.status, r.detail, r.commit) for r in second.results] == [
        (r.status, r.detail, r.commit) for r in first.results
    ]
    assert "(cached result)" in second.report()
    assert (repo / "Makefile").stat().st_mtime_ns == makefile_mtime
    assert "LRU_GEN_WALKS_SECONDARY_MMU" in (repo / "mm" / "Kconfig").read_text()

    # Without the cache the commit is the same: commits are reproducible.
    _git(repo, "update-ref", "-d", ref)
    third = apply_series(repo, base, s)
    assert not third.cached and third.head == first.head


@INTEGRATION
def test_stale_git_am_state_is_cleared(repo: Path, base: str, v4_dir: Path, tmp_path: Path) -> None:
    _git(repo, "checkout", "-q", "-f", "--detach", base)
    mail = tmp_path / "m"
    mail.write_text(load_series(v4_dir, only=["v4-02.patch"]).patches[0].text)
    res = proc.run(["git", "-C", str(repo), "am", str(mail)], env=git_env(), timeout=600)
    assert res.returncode != 0 and (repo / ".git" / "rebase-apply").exists()  # an interrupted run's leftovers
    result = apply_series(repo, base, load_series(v4_dir, only=["v4-01.patch"]))
    assert result.ok
    assert_clean(repo)


# --------------------------------------------------------------- synthetic cases


@INTEGRATION
def test_offset_is_reported(repo: Path, base: str, tmp_path: Path) -> None:
    orig = lines_of(repo, base, F)
    patch_commit = commit_with(repo, base, {F: edited(orig, l40=orig[39] + " (patched)")}, "edit line 40", tmp_path)
    shifted_base = commit_with(repo, base, {F: [f"# pad {i}" for i in range(8)] + orig}, "insert 8 lines", tmp_path)
    result = apply_series(repo, shifted_base, series_of(repo, tmp_path, patch_commit))
    (r,) = result.results
    assert r.status == "applied-offset"
    assert r.detail == "hunk #1 of mm/Kconfig at line 45 (offset +8 lines)"
    assert (repo / F).read_text().splitlines()[47] == orig[39] + " (patched)"
    assert _git(repo, "rev-parse", "HEAD^").strip() == shifted_base


@INTEGRATION
def test_clean_patch_is_applied(repo: Path, base: str, tmp_path: Path) -> None:
    orig = lines_of(repo, base, G)
    c = commit_with(repo, base, {G: edited(orig, l3=orig[2] + " (patched)")}, "edit init/Kconfig", tmp_path)
    result = apply_series(repo, base, series_of(repo, tmp_path, c))
    assert [(r.status, r.detail) for r in result.results] == [("applied", "applied cleanly")]
    assert _git(repo, "rev-parse", "HEAD^{tree}") == _git(repo, "rev-parse", f"{c}^{{tree}}")


@INTEGRATION
def test_three_way_merge_when_context_moved(repo: Path, base: str, tmp_path: Path) -> None:
    orig = lines_of(repo, base, F)
    # The patch changes line 33; the tree we apply to changed line 30, inside the hunk's context.
    patch_commit = commit_with(repo, base, {F: edited(orig, l33=orig[32] + " (theirs)")}, "theirs", tmp_path)
    ours = commit_with(repo, base, {F: edited(orig, l30=orig[29] + " (ours)")}, "ours", tmp_path)
    result = apply_series(repo, ours, series_of(repo, tmp_path, patch_commit))
    (r,) = result.results
    assert r.status == "applied-3way", result.report()
    assert r.detail.startswith("applied by 3-way merge (mm/Kconfig hunk #1 (line 30)")
    text = (repo / F).read_text().splitlines()
    assert text[29].endswith(" (ours)") and text[32].endswith(" (theirs)")
    assert_clean(repo)


@INTEGRATION
def test_conflict_fails_cleanly_and_stops_the_series(repo: Path, base: str, tmp_path: Path) -> None:
    orig_f, orig_g = lines_of(repo, base, F), lines_of(repo, base, G)
    fine = commit_with(repo, base, {G: edited(orig_g, l5=orig_g[4] + " (fine)")}, "fine", tmp_path)
    clash = commit_with(repo, base, {F: edited(orig_f, l33="theirs")}, "clash", tmp_path)
    later = commit_with(repo, base, {G: edited(orig_g, l9=orig_g[8] + " (later)")}, "later", tmp_path)
    tree_base = commit_with(repo, base, {F: edited(orig_f, l33="ours")}, "ours", tmp_path)
    result = apply_series(repo, tree_base, series_of(repo, tmp_path, fine, clash, later))
    assert [r.status for r in result.results] == ["applied", "failed", "not-attempted"]
    failed = result.results[1]
    assert failed.failures == [HunkFailure(F, 1, 30, "context does not match the tree")]
    assert "3-way merge conflict in mm/Kconfig" in failed.detail
    assert result.head == result.results[0].commit == head(repo)
    assert (repo / F).read_text().splitlines()[32] == "ours"  # no conflict markers left behind
    assert_clean(repo)


@INTEGRATION
def test_missing_file_and_already_applied(repo: Path, base: str, tmp_path: Path) -> None:
    (tmp_path / "ghost.diff").write_text(
        "diff --git a/mm/ghost.c b/mm/ghost.c\n--- a/mm/ghost.c\n+++ b/mm/ghost.c\n@@ -1,2 +1,2 @@\n x\n-y\n+z\n"
    )
    result = apply_series(repo, base, load_series(tmp_path / "ghost.diff"))
    (r,) = result.results
    assert r.status == "failed"
    assert r.failures == [HunkFailure("mm/ghost.c", None, None, "file does not exist in the tree")]
    assert_clean(repo)

    orig = lines_of(repo, base, G)
    c = commit_with(repo, base, {G: edited(orig, l7=orig[6] + " (again)")}, "again", tmp_path)
    # The change is already in the tree.  With the blobs at hand, git am -3 sees that and makes no commit ...
    result = apply_series(repo, c, series_of(repo, tmp_path, c))
    assert [(r.status, r.commit) for r in result.results] == [("applied-3way", c)]
    assert result.results[0].detail.startswith("already in the tree")
    # ... without them (a diff with no index line) it fails, and the report says why.
    plain = "".join(ln for ln in _git(repo, "diff", base, c).splitlines(keepends=True) if not ln.startswith("index "))
    (tmp_path / "again.diff").write_text(plain)
    result = apply_series(repo, c, load_series(tmp_path / "again.diff"))
    assert result.results[0].status == "failed"
    assert result.results[0].detail.startswith("already applied")
    assert_clean(repo)


@INTEGRATION
def test_unknown_base_is_a_user_error(repo: Path) -> None:
    from orchestrator.errors import UserError

    with pytest.raises(UserError, match="base commit 'deadbeef' not found"):
        apply_series(repo, "deadbeef", Series("none", ()))


# --------------------------------------------------------------- pure parsing


def test_parse_apply_output_forms() -> None:
    hunks = parse_diff("--- a/x.c\n+++ b/x.c\n@@ -10,1 +10,1 @@\n-a\n+b\n@@ -40,1 +40,1 @@\n-c\n+d\n").hunks
    out = "\n".join([
        "Checking patch x.c...",
        "Hunk #1 succeeded at 12 (offset 2 lines).",
        "error: while searching for:",
        "c",  # the preimage git could not find: not a message
        "\tstatic int x;",
        "error: patch failed: x.c:40",
        "error: x.c: patch does not apply",
        "Checking patch new.c...",
        "error: new.c: already exists in working directory",
        "Applying patch y.c with 1 reject...",
        "Rejected hunk #3.",
        "error: corrupt patch at line 17",
    ])
    res = parse_apply_output(out, hunks)
    assert [(o.file, o.hunk, o.line, o.offset) for o in res.offsets] == [("x.c", 1, 12, 2)]
    assert res.failures == [
        HunkFailure("x.c", 2, 40, "context does not match the tree"),
        HunkFailure("new.c", None, None, "file to be created already exists"),
        HunkFailure("y.c", 3, None, "rejected"),
        HunkFailure("", None, 17, "corrupt patch"),
    ]
    assert three_way_reason("error: sha1 information is lacking or useless (x.c).\nerror: could not build fake ancestor") \
        .endswith("(x.c)")
    assert three_way_reason("CONFLICT (content): Merge conflict in x.c\n") == "3-way merge conflict in x.c"


@INTEGRATION
def test_crlf_saved_project_patch_applies_with_a_note(repo: Path, base: str, tmp_path: Path) -> None:
    """The project's 0001 saved with CRLF (as web archives give it): before, each of
    its hunks was "context does not match the tree"; now it applies and says why."""
    project = Path(__file__).resolve().parents[1] / "patches"
    d = tmp_path / "crlf"
    d.mkdir()
    for p in sorted(project.glob("000[1-3]-*.patch")):
        (d / p.name).write_bytes(p.read_bytes().replace(b"\n", b"\r\n"))
    series = load_series(d)
    first = Series(series.origin, series.patches[:1])
    result = apply_series(repo, base, first)
    assert [r.status for r in result.results] == ["applied"], result.report()
    assert "note: the mail had CRLF line endings; converted to LF before applying" in result.report()
