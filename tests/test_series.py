"""Patch series input: directories, quilt series files, mboxes, lone mails, plain diffs."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from orchestrator import proc
from orchestrator.kernel import series as S
from orchestrator.errors import UserError
from orchestrator.kernel.series import CANONICAL_FROM_LINE, Series, load_series, parse_diff

V4_NAMES = [f"v4-0{i}.patch" for i in range(1, 8)]

PLAIN_DIFF = """\
diff --git a/hello.txt b/hello.txt
index 0000001..0000002 100644
--- a/hello.txt
+++ b/hello.txt
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three
"""


def _mail(subject: str, diff: str, *, from_line: bool = False) -> str:
    head = f"{CANONICAL_FROM_LINE}\n" if from_line else ""
    return (
        f"{head}From: A U Thor <a@example.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
        f"Subject: {subject}\n\nWhy.\n\nSigned-off-by: A U Thor <a@example.org>\n---\n{diff}-- \n2.39.5\n"
    )


# --------------------------------------------------------------- the real v4 mails


def test_v4_directory_gives_seven_patches_and_skips_cover_letter(v4_dir: Path) -> None:
    s = load_series(v4_dir)
    assert [p.name for p in s.patches] == V4_NAMES  # review-of-6-7.txt is not read
    assert [p.index for p in s.patches] == list(range(1, 8))
    assert s.patches[0].subject == "[PATCH v4 1/7] mm/Kconfig: Add LRU_GEN_WALKS_SECONDARY_MMU"
    assert s.patches[0].files == ("mm/Kconfig",)
    assert s.patches[1].files == (
        "Documentation/admin-guide/mm/multigen_lru.rst",
        "include/linux/mmzone.h",
        "mm/rmap.c",
        "mm/vmscan.c",
    )
    assert "tools/testing/selftests/kvm/lib/lru_gen_util.c" in s.patches[6].files
    # The mails have no From_ line in the archive: a synthetic one is added for git am.
    for p in s.patches:
        assert p.text.startswith(CANONICAL_FROM_LINE + "\nDate: ")
        assert p.source == str(v4_dir / p.name)
    assert [(k.name, k.reason) for k in s.skipped] == [("v4-00.patch", "cover letter (no diff)")]
    # Folded Subject: header joined into one line.
    assert s.skipped[0].subject.endswith("Walk secondary MMU page tables while aging")
    assert len(s.key()) == 64 and s.key() == load_series(v4_dir).key()


def test_v4_as_mbox_gives_the_same_patches(v4_dir: Path, tmp_path: Path) -> None:
    parts = []
    for f in sorted(v4_dir.glob("v4-*.patch")):  # cover letter included, as in a list archive
        parts.append(f"From jthoughton@google.com Wed May 29 18:05:03 2024\n{f.read_text()}\n")
    mbox = tmp_path / "v4.mbox"
    mbox.write_text("".join(parts))
    from_dir, from_mbox = load_series(v4_dir), load_series(mbox)
    assert [p.name for p in from_mbox.patches] == [f"v4.mbox#{i}" for i in range(1, 8)]
    assert [p.sha256 for p in from_mbox.patches] == [p.sha256 for p in from_dir.patches]
    assert [p.subject for p in from_mbox.patches] == [p.subject for p in from_dir.patches]
    assert from_mbox.key() == from_dir.key()
    assert from_mbox.patches[0].source == f"{mbox}:{1 + parts[0].count(chr(10))}"
    assert [k.reason for k in from_mbox.skipped] == ["cover letter (no diff)"]
    # Compressed, as lore serves them.
    gz = tmp_path / "v4.mbox.gz"
    gz.write_bytes(gzip.compress(mbox.read_bytes()))
    assert load_series(gz).key() == from_dir.key()


def test_only_selects_by_name_and_rejects_unknown_names(v4_dir: Path) -> None:
    s = load_series(v4_dir, only=["v4-01.patch", "v4-03.patch"])
    assert [(p.index, p.name) for p in s.patches] == [(1, "v4-01.patch"), (2, "v4-03.patch")]
    assert s.key() != load_series(v4_dir).key()
    assert load_series(v4_dir, only=[]).key() == "none"
    with pytest.raises(UserError, match="no patch named 'v4-09.patch'") as exc:
        load_series(v4_dir, only=["v4-09.patch"])
    assert "v4-01.patch" in str(exc.value)  # the hint lists what exists


def test_series_key_depends_on_order() -> None:
    assert Series("x", ()).key() == "none"
    a = S.parse_file_text(PLAIN_DIFF, file_name="a.diff", source="a.diff")[0]
    b = S.parse_file_text(PLAIN_DIFF.replace("TWO", "2"), file_name="b.diff", source="b.diff")[0]
    assert Series("x", (a, b)).key() != Series("x", (b, a)).key()


# --------------------------------------------------------------- quilt series files


def test_quilt_series_file_order_comments_and_options(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.patch").write_text(_mail("[PATCH] b", PLAIN_DIFF))
    (tmp_path / "sub" / "a.diff").write_text(PLAIN_DIFF.replace("TWO", "2"))
    (tmp_path / "unlisted.patch").write_text(_mail("[PATCH] c", PLAIN_DIFF))
    (tmp_path / "series").write_text("# order matters\n\nb.patch -p1\nsub/a.diff  # trailing comment\n")
    s = load_series(tmp_path)
    assert [p.name for p in s.patches] == ["b.patch", "sub/a.diff"]
    assert s.patches[1].source == str(tmp_path / "sub" / "a.diff")


def test_quilt_series_missing_file_names_series_line(tmp_path: Path) -> None:
    (tmp_path / "a.patch").write_text(_mail("[PATCH] a", PLAIN_DIFF))
    (tmp_path / "series").write_text("a.patch\n# comment\nmissing.patch\n")
    with pytest.raises(UserError, match=r"series:3: listed patch 'missing.patch' does not exist"):
        load_series(tmp_path)


@pytest.mark.parametrize(
    ("line", "match"),
    [("a.patch -p0", "option '-p0'"), ("a.patch -R", "option '-R'"), ("../a.patch", "outside the series directory")],
)
def test_quilt_series_rejects_unsupported_entries(tmp_path: Path, line: str, match: str) -> None:
    (tmp_path / "a.patch").write_text(_mail("[PATCH] a", PLAIN_DIFF))
    (tmp_path / "series").write_text(line + "\n")
    with pytest.raises(UserError, match=r"series:1: .*" + match):
        load_series(tmp_path)


# --------------------------------------------------------------- single files


def test_directory_uses_natural_name_order_and_patch_suffixes_only(tmp_path: Path) -> None:
    for name in ("10-x.patch", "2-x.diff", "1-x.eml", "notes.txt", ".1-x.patch.swp"):
        (tmp_path / name).write_text(_mail(f"[PATCH] {name}", PLAIN_DIFF))
    assert load_series(tmp_path).names() == ["1-x.eml", "2-x.diff", "10-x.patch"]


def test_plain_git_diff_gets_headers_that_git_am_accepts(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    def git(*args: str) -> str:
        res = proc.run(["git", "-C", str(repo), *args], env=env, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout
    git("init", "-q")
    (repo / "hello.txt").write_text("one\ntwo\nthree\n")
    git("add", "hello.txt")
    git("commit", "-q", "-m", "base")
    (repo / "hello.txt").write_text("one\nTWO\nthree\n")
    diff = git("diff")
    git("checkout", "-q", "hello.txt")
    (tmp_path / "fix-two.diff").write_text(diff)

    s = load_series(tmp_path / "fix-two.diff")
    (p,) = s.patches
    assert p.subject == "fix-two.diff" and p.files == ("hello.txt",)
    assert p.text.startswith(CANONICAL_FROM_LINE + "\nFrom: unknown <unknown@localhost>\n")
    (tmp_path / "mail").write_text(p.text)
    git("am", str(tmp_path / "mail"))
    assert (repo / "hello.txt").read_text() == "one\nTWO\nthree\n"
    assert git("log", "-1", "--format=%an|%s") == "unknown|fix-two.diff\n"


def test_plain_diff_with_description_uses_first_line_as_subject() -> None:
    text = "Make two loud\n\nBecause.\n\n" + PLAIN_DIFF
    (p,) = S.parse_file_text(text, file_name="loud.patch", source="loud.patch")
    assert p.subject == "Make two loud"
    assert "Subject: [PATCH] Make two loud\n\nBecause.\n\ndiff --git" in p.text


def test_non_git_unified_diff_with_timestamps() -> None:
    text = "--- a/mm/x.c\t2024-01-01 00:00:00\n+++ b/mm/x.c\t2024-01-02 00:00:00\n@@ -1 +1 @@\n-a\n+b\n"
    (p,) = S.parse_file_text(text, file_name="x.diff", source="x.diff")
    assert p.files == ("mm/x.c",)


def test_mail_with_from_line_and_lone_mail_hash_alike() -> None:
    lone = S.parse_file_text(_mail("[PATCH] x", PLAIN_DIFF), file_name="x.eml", source="x")[0]
    boxed = S.parse_file_text(_mail("[PATCH] x", PLAIN_DIFF, from_line=True) + "\n", file_name="x.mbx", source="y")[0]
    assert lone.sha256 == boxed.sha256 and boxed.name == "x.mbx"


def test_encoded_subject_and_quoted_printable_body() -> None:
    qp_diff = PLAIN_DIFF.replace("+TWO", "+T=3DWO")
    mail = (
        "From: A <a@b>\nSubject: =?UTF-8?q?=5BPATCH=5D_caf=C3=A9?=\n"
        "Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        "Body.\n---\n" + qp_diff
    )
    (p,) = S.parse_file_text(mail, file_name="q.eml", source="q.eml")
    assert p.subject == "[PATCH] café"
    assert p.files == ("hello.txt",)


def test_undecodable_bytes_do_not_crash(tmp_path: Path) -> None:
    raw = _mail("[PATCH] bytes", PLAIN_DIFF).encode().replace(b"Why.", b"Why \xff\xfe.")
    (tmp_path / "b.patch").write_bytes(raw)
    (p,) = load_series(tmp_path).patches
    assert "Why \ufffd\ufffd." in p.text


def test_commit_message_text_is_not_taken_for_diff_headers() -> None:
    message = "--- v3 changes ---\nrename from the old name\nBinary files a/x and b/x differ\n"
    (p,) = S.parse_file_text(_mail("[PATCH] msg", PLAIN_DIFF).replace("Why.", message), file_name="m", source="m")
    assert p.files == ("hello.txt",)


def test_removed_line_that_looks_like_a_header_is_hunk_content() -> None:
    diff = "diff --git a/x.lua b/x.lua\n--- a/x.lua\n+++ b/x.lua\n@@ -1,2 +1,1 @@\n--- /etc/passwd\n+++ b/x\n"
    info = parse_diff(diff)
    assert info.files == ("x.lua",) and not info.bad_paths
    assert [(h.file, h.number, h.old_start) for h in info.hunks] == [("x.lua", 1, 1)]


# --------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("minus", "plus", "bad"),
    [
        ("/etc/passwd", "/etc/passwd", "/etc/passwd"),
        ("a/../../etc/passwd", "b/../../etc/passwd", "a/../../etc/passwd"),
        ("a/mm/../../x", "b/mm/../../x", "a/mm/../../x"),
        ("Makefile", "Makefile", "Makefile"),  # no prefix: -p1 would leave nothing
    ],
)
def test_paths_outside_the_tree_are_rejected(tmp_path: Path, minus: str, plus: str, bad: str) -> None:
    diff = f"--- {minus}\n+++ {plus}\n@@ -1 +1 @@\n-a\n+b\n"
    (tmp_path / "evil.patch").write_text(_mail("[PATCH] evil", diff))
    with pytest.raises(UserError, match="evil.patch touches " + repr(bad).replace(".", r"\.")):
        load_series(tmp_path)


def test_rename_outside_the_tree_is_rejected() -> None:
    diff = "diff --git a/x b/y\nsimilarity index 100%\nrename from x\nrename to ../../y\n"
    with pytest.raises(UserError, match=r"touches '\.\./\.\./y'"):
        S.parse_file_text(_mail("[PATCH] mv", diff), file_name="mv.patch", source="mv.patch")


@pytest.mark.parametrize(
    "diff",
    [
        "diff --git a/f.bin b/f.bin\nindex 1..2 100644\nGIT binary patch\nliteral 3\nKcmZ?\n\n",
        "diff --git a/f.bin b/f.bin\nindex 1..2 100644\nBinary files a/f.bin and b/f.bin differ\n",
    ],
)
def test_binary_patches_are_rejected(tmp_path: Path, diff: str) -> None:
    (tmp_path / "bin.patch").write_text(_mail("[PATCH] bin", diff))
    with pytest.raises(UserError, match="bin.patch contains a binary diff"):
        load_series(tmp_path)


def test_empty_inputs_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="contains no patches"):
        load_series(empty)
    (empty / "notes.txt").write_text("not a patch\n")
    with pytest.raises(UserError, match="contains no patches"):
        load_series(empty)
    covers = tmp_path / "covers.mbox"
    covers.write_text(_mail("[PATCH 0/2] cover", "", from_line=True) * 2)
    with pytest.raises(UserError, match=r"covers.mbox contains no patches \(1 file\(s\), 2 mail\(s\) without a diff\)"):
        load_series(covers)
    with pytest.raises(UserError, match="does not exist"):
        load_series(tmp_path / "nope")


def test_size_and_count_bounds(tmp_path: Path) -> None:
    big = tmp_path / "big.patch"
    with big.open("wb") as f:
        f.truncate(S.MAX_PATCH_BYTES + 1)  # sparse: refused before reading
    with pytest.raises(UserError, match="larger than the 64 MiB limit"):
        load_series(big)
    many = tmp_path / "many"
    many.mkdir()
    (many / "series").write_text("a.patch\n" * (S.MAX_PATCHES + 1))
    with pytest.raises(UserError, match="more than 20000 entries"):
        load_series(many)


# --------------------------------------------------------------- CRLF, gaps, revisions

PROJECT_0001 = Path(__file__).resolve().parents[1] / "patches" / "0001-KVM-let-architectures-take-mmu_lock-for-aging.patch"


def test_crlf_mail_is_converted_and_says_so(tmp_path: Path) -> None:
    """The project's own 0001 as a web archive saves it (CRLF): the same patch as the LF file."""
    for p in sorted(PROJECT_0001.parent.glob("000[1-3]-*.patch")):  # [PATCH n/3]: the whole series
        data = p.read_bytes()
        (tmp_path / p.name).write_bytes(data.replace(b"\n", b"\r\n") if p == PROJECT_0001 else data)
    got = load_series(tmp_path).patches[0]
    want = load_series(PROJECT_0001.parent, only=[PROJECT_0001.name]).patches[0]
    assert "\r" not in got.text and got.sha256 == want.sha256 and got.files == want.files
    assert got.notes == ("the mail had CRLF line endings; converted to LF before applying",)
    assert want.notes == ()


def _numbered(tmp_path: Path, subjects: list[str], name: str = "thread.mbox") -> Path:
    mbox = tmp_path / name
    mbox.write_text("".join(_mail(s, PLAIN_DIFF.replace("TWO", f"TWO {i}"), from_line=True) if "0/" not in s
                            else _mail(s, "", from_line=True) for i, s in enumerate(subjects)))
    return mbox


def test_lone_first_patch_of_three_is_reported_before_anything_is_built(tmp_path: Path) -> None:
    d = tmp_path / "series"
    d.mkdir()
    (d / "0001-x.patch").write_text(_mail("[PATCH 1/3] mm: one", PLAIN_DIFF))
    with pytest.raises(UserError) as exc:
        load_series(d)
    assert exc.value.message == f"patch series {d} is incomplete: 2 of 3 missing: 2/3, 3/3"
    assert "b4 am" in exc.value.hint
    # Listed in a quilt series file, the subset is the user's choice: no error, but a note.
    (d / "series").write_text("0001-x.patch\n")
    assert load_series(d).notes == (f"patch series {d} is incomplete: 2 of 3 missing: 2/3, 3/3 "
                                    "(applied as listed in its series file)",)


def test_cover_letter_count_must_match(tmp_path: Path) -> None:
    mbox = _numbered(tmp_path, ["[PATCH v2 0/3] cover", "[PATCH v2 1/2] a", "[PATCH v2 2/2] b"])
    with pytest.raises(UserError) as exc:
        load_series(mbox)
    assert "incomplete (v2): the cover letter announces 3 patch(es), the patches say /2" in exc.value.message


def test_thread_with_several_revisions_uses_the_newest_complete_one(tmp_path: Path) -> None:
    mbox = _numbered(tmp_path, ["[PATCH 1/2] a", "[PATCH 2/2] b",
                                "[PATCH v2 0/2] cover", "[PATCH v2 1/2] a", "[PATCH v2 2/2] b",
                                "[PATCH v3 1/2] a"])
    s = load_series(mbox)
    assert [p.subject for p in s.patches] == ["[PATCH v2 1/2] a", "[PATCH v2 2/2] b"]
    assert [p.index for p in s.patches] == [1, 2]
    assert s.notes == (f"{mbox} holds revisions v1, v2, v3: using v2, the newest complete one (2 patch(es)); "
                       "v3 is incomplete: 1 of 2 missing: 2/2",)


def test_no_complete_revision_is_an_error(tmp_path: Path) -> None:
    mbox = _numbered(tmp_path, ["[PATCH 2/2] b", "[PATCH v2 1/2] a"])
    with pytest.raises(UserError) as exc:
        load_series(mbox)
    assert "holds revisions v1, v2, none complete: v1: 1 of 2 missing: 1/2; v2: 1 of 2 missing: 2/2" in exc.value.message


def test_numbering_forms() -> None:
    assert S.numbering("[PATCH v3 2/5] x") == S.Numbering(3, 2, 5)
    assert S.numbering("[RFC PATCH 0/7] x") == S.Numbering(1, 0, 7)
    assert S.numbering("[PATCH v2] x") == S.Numbering(2, 1, 1)
    assert S.numbering("[PATCH NOT-FOR-UPSTREAM] x") is None and S.numbering("[PATCH] x") is None


# --------------------------------------------------------------- git reads the mails (mailsplit, mailinfo)


def test_mbox_is_split_where_git_mailsplit_splits(tmp_path: Path) -> None:
    """A From_ line needs hh:mm:ss and a year, as git mailsplit (so git am) checks:
    'From x 12:34 2024' in a body is text, not the start of another mail."""
    mbox = tmp_path / "one.mbox"
    mbox.write_text(_mail("[PATCH 1/1] a", PLAIN_DIFF, from_line=True).replace("Why.", "Why.\nFrom x 12:34 2024"))
    (p,) = load_series(mbox).patches
    assert "\nFrom x 12:34 2024\n" in p.text and p.source == f"{mbox}:1" and p.name == "one.mbox"


def test_mbox_line_numbers_count_newlines_as_git_does(tmp_path: Path) -> None:
    first = _mail("[PATCH 1/2] a", PLAIN_DIFF.replace(" three", " three\x0c"), from_line=True)  # a form feed
    mbox = tmp_path / "ff.mbox"
    mbox.write_text("\n" + first + _mail("[PATCH 2/2] b", PLAIN_DIFF.replace("TWO", "2"), from_line=True))
    assert [p.source for p in load_series(mbox).patches] == [f"{mbox}:2", f"{mbox}:{2 + first.count(chr(10))}"]


def test_subject_is_the_mail_header_as_git_decodes_it() -> None:
    """Latin-1 encoded words are re-coded to UTF-8; "From:"/"Subject:" at the top of
    the body (in-body headers) do not replace the header the numbering checks read."""
    mail = _mail("=?iso-8859-1?q?=5BPATCH_1/1=5D_r=E9sum=E9?=", PLAIN_DIFF).replace(
        "Why.", "From: Other <o@example.org>\nSubject: in-body subject\n\nWhy.")
    (p,) = S.parse_file_text(mail, file_name="m.eml", source="m.eml")
    assert p.subject == "[PATCH 1/1] résumé" and p.files == ("hello.txt",)


def test_user_git_config_does_not_change_how_a_mail_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[i18n]\n\tcommitEncoding = ISO-8859-1\n[mailinfo]\n\tscissors = true\n")
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "GIT_CONFIG_GLOBAL"):
        monkeypatch.delenv(var, raising=False)
    mail = _mail("=?UTF-8?q?=5BPATCH=5D_caf=C3=A9?=", PLAIN_DIFF).replace(
        "Why.", "Why.\n-- >8 --\nSubject: after the scissors\n")
    (p,) = S.parse_file_text(mail, file_name="c.eml", source="c.eml")
    assert p.subject == "[PATCH] café"


def test_mail_git_cannot_recode_keeps_its_diff(tmp_path: Path) -> None:
    """An unknown charset stops `git mailinfo -u` before the diff; the mail is read
    again without re-coding, so the patch is not taken for a mail without a diff."""
    mail = _mail("=?x-unknown?q?abc?= [PATCH] u", PLAIN_DIFF)
    (p,) = S.parse_file_text(mail, file_name="u.eml", source="u.eml")
    assert p.files == ("hello.txt",) and p.subject.endswith("[PATCH] u")
    assert "x-unknown" in S.read_mail(mail, tmp_path).problem  # apply.py reports it: git am would refuse it


def test_git_that_hangs_is_ended_at_its_time_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text('#!/bin/sh\necho $$ > "$FAKE_GIT_PID"\nexec sleep 60\n')
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GIT_PID", str(tmp_path / "pid"))
    monkeypatch.setattr(S, "GIT_TIMEOUT", 0.5)
    with pytest.raises(proc.CommandTimedOut, match="timed out after its limit of 0.5 s: git "):
        S.parse_file_text(_mail("[PATCH] x", PLAIN_DIFF), file_name="x.eml", source="x.eml")
    with pytest.raises(ProcessLookupError):
        os.kill(int((tmp_path / "pid").read_text()), 0)


def test_loading_leaves_no_git_process_behind(v4_dir: Path) -> None:
    load_series(v4_dir)
    assert not proc._live  # every git mailsplit/mailinfo was waited for and unregistered
