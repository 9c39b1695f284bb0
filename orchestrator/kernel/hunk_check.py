"""Which hunk of a patch stops it, found by trying its hunks one by one.

apply.py reads git's own words first (`git apply --check --verbose`).  When
git names no file and hunk (a failed `git am` whose apply step said nothing
useful, or a "patch failed: FILE:LINE" that maps to no hunk), this module asks
git about each hunk alone: a diff made of the file's header and that one hunk,
checked with `git apply --check` against the tree as it is.  A hunk that fails
alone is named with its file, number and line; when every hunk applies alone,
the first one that fails after the earlier hunks of its file is named (the
hunks overlap or one changes another's context).  Nothing is written to the
tree or the index.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc
from orchestrator.kernel.source import git_env

_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_PLUS_RE = re.compile(r"^\+\+\+ (?:b/)?(.+?)(?:\t.*)?$")
_MINUS_RE = re.compile(r"^--- (?:a/)?(.+?)(?:\t.*)?$")
TIMEOUT = 300


@dataclass(frozen=True)
class SplitHunk:
    file: str
    number: int  # 1-based within its file, as git apply counts
    old_start: int
    header: str  # the file's diff header (diff --git ... +++ ...)
    body: str  # the @@ line and its lines


@dataclass(frozen=True)
class HunkProblem:
    file: str
    number: int
    old_start: int
    reason: str


def split_hunks(diff: str) -> list[SplitHunk]:
    """Every hunk of a (git) diff with the header of its file section.  A hunk's
    lines are counted from its @@ header, as git apply counts them, so a mail's
    signature ("-- ", git's version) after the last hunk is left out."""
    out: list[SplitHunk] = []
    header: list[str] = []
    file = ""
    number = 0
    in_header = False
    hunk: tuple[int, list[str]] | None = None  # (old start, lines) of the hunk being read
    old_left = new_left = 0

    for line in diff.splitlines(keepends=True):
        if hunk is not None:
            tag = line[:1]
            if tag == "\\":  # "\ No newline at end of file"
                hunk[1].append(line)
                continue
            if old_left > 0 or new_left > 0:
                hunk[1].append(line)
                if tag in (" ", "\n", "\r"):
                    old_left, new_left = old_left - 1, new_left - 1
                elif tag == "-":
                    old_left -= 1
                elif tag == "+":
                    new_left -= 1
                continue
            out.append(SplitHunk(file, number, hunk[0], "".join(header), "".join(hunk[1])))
            hunk = None
        if line.startswith("diff --git "):
            header, file, number, in_header = [line], "", 0, True
            continue
        m = _HUNK_RE.match(line)
        if m and header:
            in_header = False
            number += 1
            old_left = int(m.group(2)) if m.group(2) is not None else 1
            new_left = int(m.group(3)) if m.group(3) is not None else 1
            hunk = (int(m.group(1)), [line])
            continue
        if in_header:
            header.append(line)
            text = line.rstrip("\n")
            if (m := _PLUS_RE.match(text)) and m.group(1) != "/dev/null":
                file = m.group(1)
            elif (m := _MINUS_RE.match(text)) and not file and m.group(1) != "/dev/null":
                file = m.group(1)
    if hunk is not None:
        out.append(SplitHunk(file, number, hunk[0], "".join(header), "".join(hunk[1])))
    return out


def _applies(repo: Path, text: str, tmp: Path) -> tuple[bool, str]:
    path = tmp / "one.diff"
    path.write_text(text, encoding="utf-8", errors="replace")
    res = proc.run(["git", "-C", str(repo), "apply", "--check", str(path)], env=git_env(), timeout=TIMEOUT)
    return res.returncode == 0, (res.stderr or "") + (res.stdout or "")


def failing_hunks(repo: Path, diff: str, limit: int = 5) -> list[HunkProblem]:
    """The hunks that stop `diff` from applying to the tree at repo's work tree (at most `limit`)."""
    hunks = split_hunks(diff)
    problems: list[HunkProblem] = []
    with tempfile.TemporaryDirectory(prefix="orchestrator-hunks-") as tmp_name:
        tmp = Path(tmp_name)
        for h in hunks:
            ok, out = _applies(repo, h.header + h.body, tmp)
            if not ok:
                missing = "No such file or directory" in out or "does not exist in index" in out
                problems.append(HunkProblem(h.file, h.number, h.old_start,
                                            "file does not exist in the tree" if missing
                                            else "context does not match the tree"))
                if len(problems) >= limit:
                    return problems
        if problems:
            return problems
        # Each applies alone: the first that fails after the earlier hunks of its file.
        by_file: dict[str, list[SplitHunk]] = {}
        for h in hunks:
            by_file.setdefault(h.header, []).append(h)
        for group in by_file.values():
            for k in range(2, len(group) + 1):
                ok, _ = _applies(repo, group[0].header + "".join(h.body for h in group[:k]), tmp)
                if not ok:
                    h = group[k - 1]
                    problems.append(HunkProblem(h.file, h.number, h.old_start,
                                                f"applies alone but not after hunk(s) #1-#{k - 1} of this file "
                                                "(they overlap or change its context)"))
                    break
    return problems
