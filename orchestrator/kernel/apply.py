"""Apply a patch series onto a base commit with `git am`, and say what happened.

Per patch: `git apply --check --verbose` first (it reports the hunks that
moved, and a patch that cannot apply directly goes straight to the 3-way
attempt), then `git am`, then `git am -3`.  When both fail, the hunks that do
not apply are found with `git apply --check --reject --verbose`: unlike a real
`--reject` run it writes no *.rej files (the kernel's .gitignore hides them
from `git clean`) and touches no file, so make sees no false change.  When
git names no hunk, each hunk is checked alone (hunk_check.py).  The
remaining patches are "not-attempted" and the tree is left clean at the last
applied commit.

Commits are reproducible (source.GIT_ENV fixes committer and date; author and
author date come from each mail), so a series applied twice on one base gives
the same head.  A successful application is cached as a ref
refs/orchestrator/series/<series key>-<base[:12]> plus the result as JSON in
<git dir>/orchestrator/series/; a hit is a plain `git checkout`, which only
touches files that differ, so make rebuilds only what changed.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import proc
from orchestrator.atomic import write_json_atomic
from orchestrator.errors import UserError
from orchestrator.kernel.build import locked
from orchestrator.kernel.hunk_check import failing_hunks
from orchestrator.kernel.series import Hunk, Patch, Series, load_series, parse_diff, read_mail
from orchestrator.kernel.source import SourceSpec, git, git_env, prepare

STATUSES = ("applied", "applied-offset", "applied-3way", "failed", "not-attempted")
CACHE_VERSION = 1
GIT_TIMEOUT = 900


@dataclass
class HunkFailure:
    file: str
    hunk: int | None
    line: int | None  # line of the hunk in the original file, as the patch says
    reason: str

    def describe(self) -> str:
        where = self.file or "(patch)"
        if self.hunk is not None:
            where += f" hunk #{self.hunk}"
        if self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.reason}"


@dataclass
class PatchResult:
    patch: Patch
    status: str  # "applied" | "applied-offset" | "applied-3way" | "failed" | "not-attempted"
    detail: str  # human-readable: the hunks that moved, or why it failed
    commit: str | None
    failures: list[HunkFailure] = field(default_factory=list)


@dataclass
class ApplyResult:
    results: list[PatchResult]
    head: str  # commit after the last applied patch (the base if none applied)
    base: str = ""
    series_key: str = ""
    cached: bool = False
    notes: tuple[str, ...] = ()  # the series' own (which revision of a thread was used)

    @property
    def ok(self) -> bool:
        return all(r.status.startswith("applied") for r in self.results)

    def report(self) -> str:
        """One line per patch, then the details of what moved or failed."""
        counts = {s: sum(r.status == s for r in self.results) for s in STATUSES}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no patches"
        lines = [
            f"patch series on base {self.base[:12]}: {summary}"
            + (" (cached result)" if self.cached else "")
        ]
        lines += [f"  note: {n}" for n in self.notes]
        width = max((len(r.patch.name) for r in self.results), default=5)
        lines.append(f"  {'#':>3}  {'status':<15} {'commit':<12}  {'patch':<{width}}  subject")
        for r in self.results:
            commit = r.commit[:12] if r.commit else "-"
            lines.append(
                f"  {r.patch.index:>3}  {r.status:<15} {commit:<12}  {r.patch.name:<{width}}  {r.patch.subject}"
            )
            if r.status in ("applied-offset", "applied-3way", "failed") and r.detail:
                lines.append(f"         {r.detail}")
            lines += [f"         note: {n}" for n in r.patch.notes]
            for f in r.failures[:40]:
                lines.append(f"           - {f.describe()}")
            if len(r.failures) > 40:
                lines.append(f"           - ... {len(r.failures) - 40} more")
        lines.append(f"head: {self.head}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "version": CACHE_VERSION,
            "base": self.base,
            "series_key": self.series_key,
            "head": self.head,
            "ok": self.ok,
            "results": [
                {
                    "index": r.patch.index,
                    "name": r.patch.name,
                    "subject": r.patch.subject,
                    "sha256": r.patch.sha256,
                    "status": r.status,
                    "detail": r.detail,
                    "commit": r.commit,
                    "failures": [f.__dict__ for f in r.failures],
                }
                for r in self.results
            ],
        }

    @staticmethod
    def from_json(data: dict, series: Series) -> "ApplyResult":
        """Rebuild a stored result; ValueError if it does not belong to `series`."""
        rows = data["results"]
        if data.get("version") != CACHE_VERSION or len(rows) != len(series.patches):
            raise ValueError("stored result does not match the series")
        results = []
        for row, patch in zip(rows, series.patches):
            if row["sha256"] != patch.sha256 or row["status"] not in STATUSES:
                raise ValueError("stored result does not match the series")
            failures = [HunkFailure(**f) for f in row["failures"]]
            results.append(PatchResult(patch, row["status"], row["detail"], row["commit"], failures))
        return ApplyResult(results, data["head"], data["base"], data["series_key"], cached=True, notes=series.notes)


# ------------------------------------------------------- git output parsing (pure)


@dataclass(frozen=True)
class HunkOffset:
    file: str
    hunk: int
    line: int  # where it applied
    offset: int


@dataclass
class CheckOutcome:
    offsets: list[HunkOffset]
    failures: list[HunkFailure]


_CHECKING_RE = re.compile(r"^Checking patch (.+?)(?: => (.+?))?\.\.\.$")
_APPLYING_RE = re.compile(r"^Applying patch (.+?) with \d+ rejects?\.\.\.$")
_OFFSET_RE = re.compile(r"^Hunk #(\d+) succeeded at (\d+) \(offset (-?\d+) lines?\)\.")
_REJECTED_RE = re.compile(r"^Rejected hunk #(\d+)\.$")
_PATCH_FAILED_RE = re.compile(r"^error: patch failed: (.+):(\d+)$")
_FILE_ERROR_RE = re.compile(r"^error: (.+?): (does not exist in index|No such file or directory|already exists in index"
                            r"|already exists in working directory|does not match index|wrong type|patch does not apply)$")
_CORRUPT_RE = re.compile(r"^error: corrupt patch at line (\d+)$")
_NO_BLOB_RE = re.compile(r"^error: sha1 information is lacking or useless \((.+)\)\.$")
_CONFLICT_RE = re.compile(r"^CONFLICT \([^)]*\): .*? in (.+)$")

_FILE_REASONS = {
    "does not exist in index": "file does not exist in the tree",
    "No such file or directory": "file does not exist in the tree",
    "already exists in index": "file to be created already exists",
    "already exists in working directory": "file to be created already exists",
    "does not match index": "file differs from the index",
    "wrong type": "file has the wrong type (e.g. a symlink)",
}


def parse_apply_output(output: str, hunks: tuple[Hunk, ...] | list[Hunk] = ()) -> CheckOutcome:
    """Offsets and failures from `git apply --verbose` (with or without
    --check/--reject).  `hunks` (from series.parse_diff) maps the line of
    "patch failed: FILE:LINE" to the hunk number git counts."""
    by_line = {(h.file, h.old_start): h.number for h in hunks}
    offsets: list[HunkOffset] = []
    failures: list[HunkFailure] = []
    current = ""
    in_preimage = False  # inside the text after "error: while searching for:"
    for line in output.splitlines():
        if line == "error: while searching for:":
            in_preimage = True
            continue
        if in_preimage and not line.startswith(("error: ", "Checking patch ", "Hunk #", "Applied patch ",
                                                "Applying patch ", "Rejected hunk ")):
            continue
        in_preimage = False
        m = _CHECKING_RE.match(line) or _APPLYING_RE.match(line)
        if m:
            current = (m.groups()[-1] or m.group(1)) if m.re is _CHECKING_RE else m.group(1)
            continue
        m = _OFFSET_RE.match(line)
        if m:
            offsets.append(HunkOffset(current, int(m.group(1)), int(m.group(2)), int(m.group(3))))
            continue
        m = _PATCH_FAILED_RE.match(line)
        if m:
            file, at = m.group(1), int(m.group(2))
            number = by_line.get((file, at)) or by_line.get((current, at))
            failures.append(HunkFailure(file, number, at, "context does not match the tree"))
            continue
        m = _REJECTED_RE.match(line)
        if m:
            number = int(m.group(1))
            if not any(f.file == current and f.hunk == number for f in failures):
                failures.append(HunkFailure(current, number, None, "rejected"))
            continue
        m = _FILE_ERROR_RE.match(line)
        if m:
            file, what = m.group(1), m.group(2)
            if what == "patch does not apply":
                if not any(f.file == file for f in failures):
                    failures.append(HunkFailure(file, None, None, "patch does not apply"))
            else:
                failures.append(HunkFailure(file, None, None, _FILE_REASONS[what]))
            continue
        m = _CORRUPT_RE.match(line)
        if m:
            failures.append(HunkFailure("", None, int(m.group(1)), "corrupt patch"))
            continue
        if line.startswith("error: ") and line not in ("error: could not build fake ancestor",):
            failures.append(HunkFailure(current, None, None, line[len("error: "):]))
    return CheckOutcome(offsets, failures)


def three_way_reason(output: str) -> str:
    """Why `git am -3` failed, in one phrase."""
    lines = output.splitlines()
    missing = [m.group(1) for m in map(_NO_BLOB_RE.match, lines) if m]
    if missing or "error: could not build fake ancestor" in lines:
        where = f" ({missing[0]})" if missing else ""
        return f"3-way merge impossible: the repository lacks the blobs the patch was made against{where}"
    conflicts = [m.group(1) for m in map(_CONFLICT_RE.match, lines) if m]
    if conflicts:
        return "3-way merge conflict in " + ", ".join(dict.fromkeys(conflicts))
    errors = [ln[len("error: "):] for ln in lines if ln.startswith("error: ")]
    return "3-way merge failed" + (f": {errors[-1]}" if errors else "")


def describe_offsets(offsets: list[HunkOffset]) -> str:
    return "; ".join(f"hunk #{o.hunk} of {o.file} at line {o.line} (offset {o.offset:+d} lines)" for o in offsets)


# ----------------------------------------------------------------- git actions


def _run(repo: Path, *args: str, input_text: str | None = None) -> tuple[int, str]:
    """git with the fixed identity; (exit status, stdout+stderr)."""
    res = proc.run(["git", "-C", str(repo), *args], env=git_env(), timeout=GIT_TIMEOUT, input_text=input_text)
    return res.returncode, (res.stdout or "") + (res.stderr or "")


def _git_dir(repo: Path) -> Path:
    return Path(git(repo, "rev-parse", "--absolute-git-dir").strip())


def _abort_stale_am(repo: Path, git_dir: Path) -> None:
    """An interrupted earlier run may have left `git am` half-way."""
    if (git_dir / "rebase-apply").exists():
        _run(repo, "am", "--abort")
        if (git_dir / "rebase-apply").exists():
            shutil.rmtree(git_dir / "rebase-apply")


def _am(repo: Path, mail: Path, *, three_way: bool) -> tuple[int, str]:
    # Explicit flags so a user's am.threeWay / commit.gpgSign config cannot change the outcome.
    return _run(repo, "am", "--keep-cr", "--3way" if three_way else "--no-3way", "--no-gpg-sign", str(mail))


def _cache_paths(repo: Path, series: Series, base: str) -> tuple[str, Path]:
    name = f"{series.key()}-{base[:12]}"
    return f"refs/orchestrator/series/{name}", _git_dir(repo) / "orchestrator" / "series" / f"{name}.json"


def _cached(repo: Path, series: Series, base: str) -> ApplyResult | None:
    ref, json_path = _cache_paths(repo, series, base)
    rc, out = _run(repo, "rev-parse", "-q", "--verify", f"{ref}^{{commit}}")
    if rc != 0 or not json_path.is_file():
        return None
    try:
        result = ApplyResult.from_json(json.loads(json_path.read_text()), series)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or foreign: apply again and overwrite it
    if result.head != out.strip() or result.base != base:
        return None
    return result


def _store(repo: Path, series: Series, base: str, result: ApplyResult) -> None:
    ref, json_path = _cache_paths(repo, series, base)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(json_path, result.to_json(), sort_keys=False)
    git(repo, "update-ref", ref, result.head)  # the ref is written last: it marks the entry complete


def _mail_patch(mail_text: str, tmp: Path) -> Path:
    """The diff exactly as git am will apply it (git mailinfo decodes QP/base64),
    read as series.py reads the mail when loading it."""
    info = read_mail(mail_text, tmp)
    if info.problem:
        raise UserError(f"git mailinfo could not read the mail: {info.problem}")
    return info.patch_file


_FILE_LEVEL = {*_FILE_REASONS.values(), "corrupt patch"}


def _names_a_hunk(failures: list[HunkFailure]) -> bool:
    """Whether git's words already say where the patch stops: a hunk, or a reason
    about a whole file (missing, already there) where no hunk is to blame."""
    return any(f.hunk is not None or (f.file and f.reason in _FILE_LEVEL) for f in failures)


def _apply_one(repo: Path, patch: Patch, tmp: Path) -> PatchResult:
    mail = tmp / "mail"
    mail.write_text(patch.text, encoding="utf-8", errors="replace")
    diff_file = _mail_patch(patch.text, tmp)
    hunks = parse_diff(diff_file.read_text(encoding="utf-8", errors="replace")).hunks
    rc, out = _run(repo, "apply", "--check", "--verbose", str(diff_file))
    check = parse_apply_output(out, hunks)
    if rc == 0:
        # Applies as it is; git am runs the same apply code, so it succeeds unless something else is wrong.
        rc, am_out = _am(repo, mail, three_way=False)
        if rc == 0:
            head = git(repo, "rev-parse", "HEAD").strip()
            if check.offsets:
                return PatchResult(patch, "applied-offset", describe_offsets(check.offsets), head)
            return PatchResult(patch, "applied", "applied cleanly", head)
        _run(repo, "am", "--abort")
    # It does not apply as it is (a plain `git am` would fail the same way): try a 3-way merge.
    before = git(repo, "rev-parse", "HEAD").strip()
    rc, am3_out = _am(repo, mail, three_way=True)
    if rc == 0:
        head = git(repo, "rev-parse", "HEAD").strip()
        if head == before:  # git am: "No changes -- Patch already applied."
            return PatchResult(patch, "applied-3way", "already in the tree: the 3-way merge changed nothing, "
                               "no commit made", head)
        moved = ", ".join(f.describe() for f in check.failures[:5]) or "context did not match"
        return PatchResult(patch, "applied-3way", f"applied by 3-way merge ({moved})", head)
    _run(repo, "am", "--abort")
    reason = three_way_reason(am3_out)
    # Which hunks fail: --reject makes git go on after the first failing hunk of a file;
    # --check keeps it from writing anything.
    _, rej_out = _run(repo, "apply", "--check", "--reject", "--verbose", str(diff_file))
    failures = parse_apply_output(rej_out, hunks).failures or check.failures
    rc_rev, _ = _run(repo, "apply", "--check", "--reverse", str(diff_file))
    if rc_rev == 0:
        detail = "already applied: the tree already contains this change"
    else:
        if not _names_a_hunk(failures):
            # git said nothing that names a hunk: ask it about each hunk alone.
            found = failing_hunks(repo, diff_file.read_text(encoding="utf-8", errors="replace"))
            failures = [HunkFailure(p.file, p.number, p.old_start, p.reason) for p in found] or failures
        if failures:
            first = failures[0].describe()
        else:
            files = ", ".join(dict.fromkeys(h.file for h in hunks)) or "(no file)"
            first = (f"every hunk of {files} ({len(hunks)} hunk(s)) applies to the tree on its own and in order, "
                     "so git am failed for another reason")
        more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
        detail = f"does not apply: {first}{more}; {reason}"
    return PatchResult(patch, "failed", detail, None, failures)


def apply_series(repo: Path, base_commit: str, series: Series) -> ApplyResult:
    """Check out base_commit in repo (detached) and apply the series on it.

    Never raises for a patch that does not apply: that is a "failed" result
    (see ApplyResult.report()); UserError only for a missing base commit or a
    repository git cannot work in.
    """
    repo = Path(repo)
    rc, out = _run(repo, "rev-parse", "-q", "--verify", f"{base_commit}^{{commit}}")
    if rc != 0:
        raise UserError(f"base commit {base_commit!r} not found in {repo}", hint="prepare the source again")
    base = out.strip()
    git_dir = _git_dir(repo)
    _abort_stale_am(repo, git_dir)

    cached = _cached(repo, series, base)
    if cached is not None:
        git(repo, "checkout", "-q", "-f", "--detach", cached.head, timeout=GIT_TIMEOUT)
        return cached

    git(repo, "checkout", "-q", "-f", "--detach", base, timeout=GIT_TIMEOUT)
    results: list[PatchResult] = []
    head = base
    with tempfile.TemporaryDirectory(prefix="orchestrator-apply-") as tmp:
        for i, patch in enumerate(series.patches):
            result = _apply_one(repo, patch, Path(tmp))
            results.append(result)
            if result.status == "failed":
                # Leave the tree exactly at the last applied commit (never -x: the
                # kernel's .gitignore covers nearly everything; we wrote nothing ignored).
                git(repo, "reset", "-q", "--hard", timeout=GIT_TIMEOUT)
                git(repo, "clean", "-fdq", timeout=GIT_TIMEOUT)
                results += [PatchResult(p, "not-attempted", "an earlier patch failed", None) for p in series.patches[i + 1:]]
                break
            head = result.commit or head
    final = ApplyResult(results, head, base, series.key(), notes=series.notes)
    if final.ok and series.patches:
        _store(repo, series, base, final)
    return final


def check_series_applies(series_path: Path, source_arg: str | None) -> ApplyResult:
    """`orchestrator apply`: the series applied to a scratch commit of the
    source (a tarball or PATH@REF, never the developer's own work tree)."""
    series = load_series(series_path)  # bad input is refused before the source is unpacked
    source = prepare(SourceSpec.parse(source_arg))
    if source.in_place:
        raise UserError("`apply` works on a tarball or PATH@REF source, not your own work tree")
    with locked(f"tree-{source.key}"):
        return apply_series(source.repo, source.base_commit or "HEAD", series)
