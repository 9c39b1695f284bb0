"""Patch series input: read what the user gives into mails `git am` accepts.

Accepted inputs (all end up as one `Patch` per mail, in application order):
  - a directory with a quilt-style `series` file (the listed files, in order);
  - a directory of *.patch / *.diff / *.mbx / *.eml files (natural name order,
    other files such as review notes are not read);
  - an mbox (mails separated by `From ` lines, as `git format-patch --stdout`
    or a list archive gives), optionally gzip-compressed;
  - a single mail without the leading `From ` line (archives save them so);
  - a plain diff without mail headers (headers are synthesised).

Mails without a diff (cover letters, replies) are recorded as skipped.  The
text handed to `git am` is the mail as given, with a fixed `From ` line in
front.  Reading mails is left to git, so a mail means here what it means to
`git am`: `git mailsplit` splits an mbox, `git mailinfo` decodes the headers
(RFC 2047, folding) and the body (base64, quoted-printable, MIME parts).
What git does not do stays here: the kinds of input, CRLF detection, the diff
parser (hunk numbers for apply.py's failure reports, paths outside the tree
named as written, binary diffs; `git apply --numstat` neither checks paths nor
reads a corrupt diff), and the numbering/revision checks.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import UserError

# What `git format-patch` writes; git ignores the contents of this line, so
# using the same one everywhere makes hashes independent of how the mail came.
CANONICAL_FROM_LINE = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001"
SYNTHETIC_AUTHOR = "unknown <unknown@localhost>"
SYNTHETIC_DATE = "Thu, 1 Jan 1970 00:00:00 +0000"

PATCH_SUFFIXES = (".patch", ".diff", ".mbx", ".eml")
MAX_PATCH_BYTES = 64 * 1024 * 1024  # per patch and per input file
MAX_TOTAL_BYTES = 1024 * 1024 * 1024  # over all files of one series
MAX_PATCHES = 20000

_FIX_DIFF = "regenerate it with `git format-patch` (or `git diff`) from the top of the kernel tree"


@dataclass(frozen=True)
class Patch:
    index: int  # 1-based position in the series
    name: str  # file name, or "FILE#N" for the N-th patch of an mbox
    subject: str  # from the Subject: header (folded lines joined), or first line
    sha256: str  # of the normalised mail text (stable cache key)
    text: str  # the mail as git am wants it (starts with a "From " line)
    files: tuple[str, ...]  # paths touched (from diff --git a/ b/ and ---/+++ lines)
    source: str  # "path/to/file[:line]" for messages
    notes: tuple[str, ...] = ()  # what was done to the mail before applying (CRLF -> LF)


@dataclass(frozen=True)
class Skipped:
    """A mail that carries no diff (cover letter, reply): kept for the report."""

    name: str
    subject: str
    reason: str
    source: str


@dataclass(frozen=True)
class Series:
    origin: str  # what the user gave
    patches: tuple[Patch, ...]
    skipped: tuple[Skipped, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())  # e.g. which revision of a thread was picked

    def key(self) -> str:
        """sha256 over the patch hashes in order; "none" for an empty series."""
        if not self.patches:
            return "none"
        h = hashlib.sha256()
        for p in self.patches:
            h.update(p.sha256.encode() + b"\n")
        return h.hexdigest()

    def names(self) -> list[str]:
        return [p.name for p in self.patches]


# ---------------------------------------------------------------- diff parsing


@dataclass(frozen=True)
class Hunk:
    file: str  # path in the tree (prefix stripped), new name if renamed
    number: int  # 1-based within its file section, as git apply counts ("Hunk #N")
    old_start: int  # line in the original file, as "patch failed: FILE:LINE" reports it


@dataclass(frozen=True)
class DiffInfo:
    files: tuple[str, ...]
    hunks: tuple[Hunk, ...]
    binary: bool
    bad_paths: tuple[str, ...]  # absolute, with "..", or empty after the prefix
    has_diff: bool


_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_DIFF_GIT_RE = re.compile(r"^diff --git (.+)$")
_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", '"': '"', "\\": "\\"}


def _unquote(path: str) -> str:
    """Undo git's C-style quoting of unusual path names ("a/x\\ty")."""
    if not (len(path) >= 2 and path.startswith('"') and path.endswith('"')):
        return path
    body, out, i = path[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in "01234567" and re.match(r"[0-7]{3}", body[i + 1 : i + 4]):
                out.append(int(body[i + 1 : i + 4], 8) & 0xFF)
                i += 4
                continue
            out += _C_ESCAPES.get(nxt, nxt).encode()
            i += 2
            continue
        out += c.encode()
        i += 1
    return out.decode("utf-8", errors="replace")


def _split_diff_git(rest: str) -> tuple[str, str] | None:
    """The two names of a `diff --git A B` line (quoted, or split at " b/")."""
    m = re.match(r'^("(?:[^"\\]|\\.)*"|\S+) ("(?:[^"\\]|\\.)*"|\S+)$', rest)
    if m:
        return _unquote(m.group(1)), _unquote(m.group(2))
    # Unquoted names with spaces: "a/x y b/x y" -> split in the middle.
    half = len(rest) // 2
    if len(rest) % 2 == 1 and rest[half] == " " and rest[: half][2:] == rest[half + 1 :][2:]:
        return rest[:half], rest[half + 1 :]
    return None


def _strip_prefix(raw: str) -> str | None:
    """Path as `git am -p1` sees it; None if it is absolute or escapes the tree."""
    if raw.startswith("/"):
        return None
    parts = raw.split("/")[1:]  # -p1: drop "a/", "b/" (or any first component)
    if not parts or any(p in ("", ".", "..") for p in parts):
        return None
    return "/".join(parts)


def _check_plain(raw: str) -> str | None:
    """Path without a prefix (rename from/to): same rules as _strip_prefix."""
    if raw.startswith("/"):
        return None
    parts = raw.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return raw


def parse_diff(text: str) -> DiffInfo:
    """Files, hunks and hazards of the diff(s) in `text` (a mail or a plain diff).

    Hunk bodies are skipped by counting lines from the @@ header, so a removed
    line that starts with "-- " is never taken for a file header.
    """
    files: list[str] = []
    bad: list[str] = []
    hunks: list[Hunk] = []
    binary = False
    has_diff = False
    old_left = new_left = 0
    section_file: str | None = None
    minus_file: str | None = None
    hunk_no = 0
    # rename/copy/binary lines count only after a diff started: before it is
    # the commit message, which may mention anything.
    in_diff = False

    def add(path: str | None, raw: str) -> str | None:
        if path is None:
            if raw not in bad:
                bad.append(raw)
            return None
        if path not in files:
            files.append(path)
        return path

    lines = text.splitlines()
    for i, line in enumerate(lines):
        if old_left > 0 or new_left > 0:
            tag = line[:1]
            if tag == " " or line == "":  # an empty line is context whose blank was eaten by a mailer
                old_left, new_left = old_left - 1, new_left - 1
                continue
            if tag == "-":
                old_left -= 1
                continue
            if tag == "+":
                new_left -= 1
                continue
            if tag == "\\":  # "\ No newline at end of file"
                continue
            old_left = new_left = 0  # truncated hunk: treat the line as a header below
        if line.startswith("diff "):
            in_diff = True
        m = _DIFF_GIT_RE.match(line)
        if m:
            has_diff = True
            section_file, minus_file, hunk_no = None, None, 0
            names = _split_diff_git(m.group(1))
            if names:
                a = add(_strip_prefix(names[0]), names[0])
                b = add(_strip_prefix(names[1]), names[1])
                section_file = b or a
            continue
        # "--- X" is a file header only when "+++ Y" follows (as git apply
        # requires); a commit message may well contain "--- v3 changes ---".
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            raw = _unquote(line[4:].split("\t")[0].rstrip())
            in_diff = True
            if raw != "/dev/null":
                minus_file = add(_strip_prefix(raw), raw)
            continue
        if line.startswith("+++ ") and i > 0 and lines[i - 1].startswith("--- "):
            raw = _unquote(line[4:].split("\t")[0].rstrip())
            has_diff = True
            new_name = None if raw == "/dev/null" else add(_strip_prefix(raw), raw)
            if section_file is None or hunk_no:
                hunk_no = 0  # a new plain-diff file section
            section_file = new_name or minus_file or section_file
            continue
        for key in ("rename from ", "rename to ", "copy from ", "copy to "):
            if in_diff and line.startswith(key):
                raw = _unquote(line[len(key) :])
                path = add(_check_plain(raw), raw)
                if key in ("rename to ", "copy to ") and path:
                    section_file = path
                break
        m = _HUNK_RE.match(line)
        if m and section_file is not None:
            has_diff = True
            hunk_no += 1
            hunks.append(Hunk(section_file, hunk_no, int(m.group(1))))
            old_left = int(m.group(2)) if m.group(2) is not None else 1
            new_left = int(m.group(4)) if m.group(4) is not None else 1
            continue
        if in_diff and (
            line.startswith("GIT binary patch") or (line.startswith("Binary files ") and line.endswith(" differ"))
        ):
            binary = True
            has_diff = True
    return DiffInfo(tuple(files), tuple(hunks), binary, tuple(bad), has_diff)


# ---------------------------------------------------------------- git's mail tools

GIT_TIMEOUT = 120  # s for one git mailsplit/mailinfo run (its input is at most MAX_PATCH_BYTES)
_COVER_RE = re.compile(r"\[[^\]]*\b0+/\d+\s*\]")
_DIFF_START_RE = re.compile(r"^(diff -|--- \S|Index: \S)", re.M)


def _encode(text: str) -> bytes:
    # surrogatepass: any str, even one with lone surrogates, goes through git and back unchanged.
    return text.encode("utf-8", errors="surrogatepass")


def _git(args: list[str], workdir: Path, *, stdin: Path | None = None) -> tuple[int, bytes, str]:
    """(exit status, stdout, stderr) of a git mail tool run in workdir.

    Outside any repository (GIT_CEILING_DIRECTORIES): the config of a
    repository around the temp dir must not change how a mail reads.  Input
    goes through a file, not proc.run's text pipe, so no locale re-encodes it."""
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(workdir.parent))
    with open(stdin or os.devnull, "rb") as infile, proc.managed(
        ["git", *args], cwd=workdir, env=env, stdin=infile, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        try:
            out, err = child.communicate(timeout=GIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise proc.CommandTimedOut(child.args, GIT_TIMEOUT) from None
    return child.returncode, out, err.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class MailInfo:
    """One mail as `git mailinfo` (which git am runs) reads it."""

    headers: dict[str, str]  # "Author", "Email", "Subject", "Date": those the mail has, decoded
    patch_file: Path  # the diff part, transfer encoding undone: what git am applies
    problem: str = ""  # why git am would refuse the mail (mailinfo's output), "" if it would not

    @property
    def is_mail(self) -> bool:
        """False for text without From/Subject/Date headers (a plain diff)."""
        return bool(self.headers.keys() & {"Author", "Subject", "Date"})

    def patch(self) -> str:
        return self.patch_file.read_text(encoding="utf-8", errors="replace")


def read_mail(mail: str, workdir: Path) -> MailInfo:
    """`git mailinfo` on one mail (a From_ line is optional); its files go to workdir.

    -k keeps the subject as written ("[PATCH v2 1/3] ..." is what the numbering
    checks read); --no-inbody-headers takes the mail's own headers, not a
    "From:"/"Subject:" at the top of the body; -c and --no-scissors keep a
    user's git config (i18n.commitEncoding, mailinfo.scissors) out; -u re-codes
    the headers to UTF-8 (git 2.39's --encoding=UTF-8 does not).  A mail git
    cannot re-code (unknown charset) stops mailinfo before the diff, so it is
    read again without re-coding (-n) and `problem` says why git am would fail.
    """
    src, patch = workdir / "mailinfo-in", workdir / "mailinfo-patch"
    src.write_bytes(_encode(mail))
    problem = ""
    for recode in ("-u", "-n"):
        rc, out, err = _git(["-c", "i18n.commitEncoding=UTF-8", "mailinfo", "-k", recode, "--no-inbody-headers",
                             "--no-scissors", "mailinfo-msg", patch.name], workdir, stdin=src)
        info = out.decode("utf-8", errors="replace")
        if rc == 0 and patch.is_file():
            break
        problem = problem or (info + err).strip()[-500:]
    else:
        raise UserError(f"git mailinfo could not read the mail: {problem}")
    headers: dict[str, str] = {}
    for line in info.splitlines():
        key, sep, value = line.partition(": ")
        if sep:  # a subject with an encoded newline comes as several "Subject:" lines
            headers[key] = f"{headers[key]} {value}".strip() if key in headers else value.strip()
    return MailInfo(headers, patch, problem)


def split_mbox(text: str, workdir: Path, *, source: str) -> list[tuple[int, str]] | None:
    """(1-based line of the From_ line, mail without it) for each mail, as
    `git mailsplit` splits `text`; None if git takes it for a lone mail (its
    first line is no From_ line).  Lines are counted at "\\n", as git does."""
    if not text.startswith("From "):
        return None  # git mailsplit would say "corrupt mailbox": spare the process
    # Every From_ line starts with "From ": bound the mail count before git writes a file per mail.
    if len(re.findall(r"^From ", text, re.M)) > MAX_PATCHES:
        raise UserError(f"{source}: more than {MAX_PATCHES} mails", hint="split the mbox")
    mbox, out_dir = workdir / "mbox", workdir / "mailsplit"
    mbox.write_bytes(_encode(text))
    out_dir.mkdir()
    # --keep-cr: whether a mail has CRLF line endings is judged per mail (_make_patch), and reported.
    rc, _, err = _git(["mailsplit", "--keep-cr", f"-o{out_dir.name}", "--", mbox.name], workdir)
    if rc != 0:
        if "corrupt mailbox" in err:
            return None
        raise UserError(f"{source}: git mailsplit could not split the mbox: {err.strip()[-500:]}")
    mails: list[tuple[int, str]] = []
    line = 1
    for part in sorted(out_dir.iterdir(), key=lambda f: int(f.name)):  # 0001, 0002 ... 10000
        raw = part.read_bytes().decode("utf-8", errors="surrogatepass")  # bytes as we wrote them
        mails.append((line, raw.partition("\n")[2]))  # each part starts with its From_ line
        line += raw.count("\n")
    return mails


# ---------------------------------------------------------------- mails to patches


def _normalised_hash(text: str) -> str:
    # Trailing blank lines differ between a lone file and the same mail in an
    # mbox (the separator's blank line); they never change what git applies.
    return hashlib.sha256((text.rstrip("\n") + "\n").encode("utf-8", errors="replace")).hexdigest()


def _with_from_line(mail: str) -> str:
    if not mail.endswith("\n"):
        mail += "\n"
    return f"{CANONICAL_FROM_LINE}\n{mail}"


def _validate(info: DiffInfo, *, name: str, source: str) -> None:
    if info.bad_paths:
        raise UserError(
            f"{source}: patch {name} touches {info.bad_paths[0]!r}, which is outside the source tree "
            "(absolute, contains '..', or has no a/ b/ prefix)",
            hint=_FIX_DIFF,
        )
    if info.binary:
        raise UserError(
            f"{source}: patch {name} contains a binary diff ('GIT binary patch' / 'Binary files ... differ')",
            hint="binary changes are not supported: drop that file from the patch, or give a text diff",
        )


def _make_patch(mail: str, *, name: str, source: str, fallback_subject: str, workdir: Path) -> Patch | Skipped:
    """A mail (without From_ line) or a plain diff -> Patch, or Skipped if it has no diff."""
    if len(mail.encode("utf-8", errors="replace")) > MAX_PATCH_BYTES:
        raise UserError(
            f"{source}: patch {name} is larger than {MAX_PATCH_BYTES >> 20} MiB",
            hint="split the series or give a smaller patch",
        )
    notes: tuple[str, ...] = ()
    first_line = mail.split("\n", 1)[0]
    if first_line.endswith("\r") and mail.count("\r\n") * 2 > mail.count("\n"):
        # Saved with CRLF line endings (web archives, some mail clients): git am
        # --keep-cr would compare every context line with a trailing CR and fail.
        mail = mail.replace("\r\n", "\n")
        notes = ("the mail had CRLF line endings; converted to LF before applying",)
    try:
        mailinfo = read_mail(mail, workdir) if mail.strip() else None  # git refuses a blank mail
    except proc.CommandTimedOut:
        raise  # the host, not the mail, is at fault: keep its own message and hint
    except UserError as exc:
        raise UserError(f"{source}: patch {name}: {exc.message}",
                        hint="git am would refuse this mail too: fix or drop it") from exc
    if mailinfo is not None and mailinfo.is_mail:
        subject = mailinfo.headers.get("Subject") or fallback_subject
        info = parse_diff(mailinfo.patch())
        if not info.has_diff:
            cover = bool(_COVER_RE.search(subject))
            return Skipped(name, subject, "cover letter (no diff)" if cover else "no diff in this mail", source)
        _validate(info, name=name, source=source)
        text = _with_from_line(mail)
    else:
        info = parse_diff(mail)
        if not info.has_diff:
            return Skipped(name, fallback_subject, "no diff and no mail headers", source)
        _validate(info, name=name, source=source)
        # A plain diff: give git am the headers it needs.  Text before the diff
        # (a description) becomes the message; its first line the subject.
        m = _DIFF_START_RE.search(mail)
        preamble = mail[: m.start()] if m else ""
        desc = [ln for ln in preamble.splitlines() if ln.strip()]
        subject = desc[0].strip() if desc else fallback_subject
        body = preamble.split(desc[0], 1)[1].lstrip("\n") if desc else ""
        diff = mail[m.start() :] if m else mail
        text = _with_from_line(
            f"From: {SYNTHETIC_AUTHOR}\nDate: {SYNTHETIC_DATE}\nSubject: [PATCH] {subject}\n\n"
            + (body.rstrip("\n") + "\n\n" if body.strip() else "")
            + diff
        )
    return Patch(0, name, subject, _normalised_hash(text), text, info.files, source, notes)


def parse_file_text(text: str, *, file_name: str, source: str) -> list[Patch | Skipped]:
    """Every mail of one input file, in order (text in, patches out; git reads
    the mails in a temp dir).

    Patches of a file holding several get names "FILE#N" (N counts patches, not
    skipped mails); a file with one patch is named by the file name alone.
    """
    stripped = text.lstrip("\r\n")
    with tempfile.TemporaryDirectory(prefix="orchestrator-series-") as tmp:
        workdir = Path(tmp)
        split = split_mbox(stripped, workdir, source=source)
        if split is None:
            return [_make_patch(stripped, name=file_name, source=source, fallback_subject=file_name, workdir=workdir)]
        lead = text[: len(text) - len(stripped)].count("\n")
        mails = [(line + lead, mail) for line, mail in split]
        items: list[Patch | Skipped] = [
            # Final names ("FILE#N", N counting patches) are given below; errors name the mail.
            _make_patch(mail, name=f"{file_name} (mail {i})", source=f"{source}:{line}", fallback_subject=file_name,
                        workdir=workdir)
            for i, (line, mail) in enumerate(mails, 1)
        ]
    n_patches = sum(isinstance(x, Patch) for x in items)
    out: list[Patch | Skipped] = []
    count = 0
    for (line, _mail), item in zip(mails, items):
        if isinstance(item, Patch):
            count += 1
            nm = file_name if n_patches == 1 else f"{file_name}#{count}"
            out.append(_renamed(item, nm))
        else:
            out.append(Skipped(f"{file_name}:{line}", item.subject, item.reason, item.source))
    return out


def _renamed(p: Patch, name: str) -> Patch:
    return dataclasses.replace(p, name=name)


# ---------------------------------------------------------------- file input


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _read(path: Path, budget: list[int]) -> str:
    """Read (and gunzip) a file with a size bound; undecodable bytes are replaced."""
    try:
        size = path.stat().st_size
        if size > MAX_PATCH_BYTES:
            raise UserError(
                f"{path}: {size >> 20} MiB is larger than the {MAX_PATCH_BYTES >> 20} MiB limit for one input file",
                hint="split the series into smaller files",
            )
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read(MAX_PATCH_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot read patch file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_PATCH_BYTES:
        raise UserError(f"{path}: more than {MAX_PATCH_BYTES >> 20} MiB after decompression", hint="split it")
    budget[0] -= len(data)
    if budget[0] < 0:
        raise UserError(f"the series is larger than {MAX_TOTAL_BYTES >> 20} MiB in total", hint="split it")
    return data.decode("utf-8", errors="replace")


def _parse_series_file(series_file: Path) -> list[tuple[int, str]]:
    """(line number, entry) of a quilt series file; only -p1 is accepted as option."""
    entries: list[tuple[int, str]] = []
    text = _read(series_file, [MAX_TOTAL_BYTES])
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        name, *opts = line.split()
        for opt in opts:
            if opt != "-p1":
                raise UserError(
                    f"{series_file}:{lineno}: option {opt!r} for {name} is not supported (only -p1)",
                    hint="regenerate the patch with a/ b/ prefixes (git format-patch) and drop the option",
                )
        if name.startswith("/") or ".." in name.split("/"):
            raise UserError(
                f"{series_file}:{lineno}: {name!r} points outside the series directory",
                hint="list patch files relative to the directory holding the series file",
            )
        entries.append((lineno, name))
        if len(entries) > MAX_PATCHES:
            raise UserError(f"{series_file}: more than {MAX_PATCHES} entries", hint="split the series")
    return entries


def _inputs(path: Path) -> list[tuple[Path, str]]:
    """(file, display name) pairs in application order."""
    if path.is_file():
        return [(path, path.name)]
    if not path.is_dir():
        raise UserError(f"patch series {path} does not exist", hint="give a directory, an mbox, or a patch file")
    series_file = path / "series"
    if series_file.is_file():
        out = []
        for lineno, name in _parse_series_file(series_file):
            f = path / name
            if not f.is_file():
                raise UserError(
                    f"{series_file}:{lineno}: listed patch {name!r} does not exist in {path}",
                    hint="fix the name in the series file or add the patch file",
                )
            out.append((f, name))
        return out
    files = sorted(
        (p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in PATCH_SUFFIXES),
        key=lambda p: _natural_key(p.name),
    )
    if len(files) > MAX_PATCHES:
        raise UserError(f"{path}: more than {MAX_PATCHES} patch files", hint="split the series")
    return [(f, f.name) for f in files]


def load_series(path: Path, *, only: list[str] | None = None) -> Series:
    """Read a series (see the module docstring).  `only` keeps the patches with
    these names (for named variants); `only=[]` selects none (an empty Series)."""
    path = Path(path)
    inputs = _inputs(path)
    budget = [MAX_TOTAL_BYTES]
    patches: list[Patch] = []
    skipped: list[Skipped] = []
    for file, name in inputs:
        for item in parse_file_text(_read(file, budget), file_name=name, source=str(file)):
            if isinstance(item, Patch):
                patches.append(item)
            else:
                skipped.append(item)
        if len(patches) > MAX_PATCHES:
            raise UserError(f"{path}: more than {MAX_PATCHES} patches", hint="split the series")
    if not patches:
        what = "files" if path.is_dir() else "mails"
        seen = f"{len(inputs)} file(s), {len(skipped)} mail(s) without a diff" if inputs else f"no {'/'.join(PATCH_SUFFIXES)} files"
        raise UserError(
            f"patch series {path} contains no patches ({seen})",
            hint=f"give {what} that contain diffs (git format-patch output, an mbox, or a plain diff)",
        )
    # Revisions and gaps are judged on the whole input, before a variant picks its subset.
    patches, skipped, notes = pick_revision(path, patches, skipped)
    names = [p.name for p in patches]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"patch series {path}: duplicate patch names {dupes}", hint="list each patch once")
    if only is not None:
        wanted = set(only)
        unknown = [n for n in only if n not in names and not any(x.startswith(n + "#") for x in names)]
        if unknown:
            raise UserError(
                f"patch series {path}: no patch named {', '.join(map(repr, unknown))}",
                hint=f"choose from: {', '.join(names)}",
            )
        patches = [p for p in patches if p.name in wanted or p.name.split("#", 1)[0] in wanted]
    numbered = tuple(dataclasses.replace(p, index=i) for i, p in enumerate(patches, 1))
    return Series(str(path), numbered, tuple(skipped), tuple(notes))


# ---------------------------------------------------------------- numbering and revisions

_NUMBER_RE = re.compile(r"\[(?P<tags>[^\]]*?)\b(?P<n>\d+)\s*/\s*(?P<total>\d+)\s*\]")
_VERSION_RE = re.compile(r"^\s*\[[^\]]*?\b[vV](?P<v>\d+)\b[^\]]*\]")


@dataclass(frozen=True)
class Numbering:
    version: int
    n: int  # 0: cover letter
    total: int


def numbering(subject: str) -> Numbering | None:
    """`[PATCH v3 2/5] x` -> (3, 2, 5); `[PATCH v2] x` -> (2, 1, 1); unnumbered and
    unversioned (`[PATCH] x`, `[PATCH NOT-FOR-UPSTREAM] x`) -> None."""
    m = _NUMBER_RE.search(subject)
    v = _VERSION_RE.search(subject)
    version = int(v.group("v")) if v else 1
    if m:
        return Numbering(version, int(m.group("n")), int(m.group("total")))
    return Numbering(version, 1, 1) if v else None


def _gaps(items: list[tuple[Numbering, str]]) -> tuple[list[int], set[int]]:
    """(missing patch numbers, the totals seen) of one revision."""
    totals = {num.total for num, _ in items}
    have = {num.n for num, _ in items}
    total = max(totals)
    return [n for n in range(1, total + 1) if n not in have], totals


def _label(num: Numbering, missing: list[int], total: int) -> str:
    return ", ".join(f"{n}/{total}" for n in missing)


def pick_revision(path: Path, patches: list[Patch], skipped: list[Skipped]) -> tuple[list[Patch], list[Skipped], list[str]]:
    """What b4 am does with a thread: of several revisions (v1, v2 ...) keep the
    newest complete one and say which; refuse an incomplete series (numbering
    gaps, a count that disagrees with the cover letter) before anything is built."""
    numbered: dict[int, list[tuple[Numbering, str]]] = {}
    for p in patches:
        if (num := numbering(p.subject)) is not None:
            numbered.setdefault(num.version, []).append((num, p.name))
    covers = {}
    for sk in skipped:
        num = numbering(sk.subject)
        if num is not None and num.n == 0:
            covers[num.version] = num
            numbered.setdefault(num.version, [])
    if not any(numbered.values()):
        return patches, skipped, []
    notes: list[str] = []
    status: dict[int, str] = {}  # version -> "" if complete, else what is wrong
    for version, items in numbered.items():
        real = [(num, name) for num, name in items if num.n > 0]
        if not real:
            status[version] = f"the cover letter announces {covers[version].total} patch(es) but none is here"
            continue
        missing, totals = _gaps(real)
        total = max(totals)
        cover = covers.get(version)
        if len(totals) > 1:
            status[version] = f"the patches disagree on the series length ({', '.join(f'/{t}' for t in sorted(totals))})"
        elif cover is not None and cover.total != total:
            status[version] = f"the cover letter announces {cover.total} patch(es), the patches say /{total}"
        elif missing:
            status[version] = f"{len(missing)} of {total} missing: {_label(real[0][0], missing, total)}"
        else:
            status[version] = ""
        dupes = sorted({num.n for num, _ in real if sum(1 for o, _ in real if o.n == num.n) > 1})
        if dupes and not status[version]:
            status[version] = f"patch {dupes[0]}/{total} appears more than once"
    versions = sorted(numbered)
    if len(versions) == 1:
        problem = status[versions[0]]
        if problem:
            v = versions[0]
            what = f"patch series {path} is incomplete{f' (v{v})' if v > 1 else ''}: {problem}"
            if (path / "series").is_file():  # a quilt series file lists what the user chose
                return patches, skipped, [what + " (applied as listed in its series file)"]
            raise UserError(
                what,
                hint="add the missing mails (`b4 am MESSAGE-ID` fetches a whole thread), or give the patches "
                     "in a quilt `series` file if a partial series is meant")
        return patches, skipped, notes
    complete = [v for v in versions if not status[v]]
    if not complete:
        details = "; ".join(f"v{v}: {status[v]}" for v in versions)
        raise UserError(f"patch series {path} holds revisions {', '.join(f'v{v}' for v in versions)}, none complete: {details}",
                        hint="add the missing mails of the revision you want (`b4 am -v N MESSAGE-ID`)")
    chosen = complete[-1]
    keep = {name for _, name in numbered[chosen]}
    dropped = [v for v in versions if v != chosen]
    newer_broken = [v for v in versions if v > chosen]
    note = (f"{path} holds revisions {', '.join(f'v{v}' for v in versions)}: using v{chosen}, the newest complete one "
            f"({len([1 for num, _ in numbered[chosen] if num.n > 0])} patch(es))")
    if newer_broken:
        note += "; " + "; ".join(f"v{v} is incomplete: {status[v]}" for v in newer_broken)
    notes.append(note)
    drop_names = {name for v in dropped for _, name in numbered[v]}
    patches = [p for p in patches if p.name in keep or p.name not in drop_names]
    skipped = [sk for sk in skipped if (num := numbering(sk.subject)) is None or num.version == chosen]
    return patches, skipped, notes
