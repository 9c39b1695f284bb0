"""Kernel sources: a tarball, a git tree at a ref, or a developer's work tree.

Tarballs and git refs are turned into a cached git repository with one base
commit, so a series applies with `git am` and every variant of the same
source shares one work tree (and so one object directory).  A developer's
work tree is built as it is, uncommitted changes included.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import proc
from orchestrator.atomic import write_json_atomic
from orchestrator.errors import UserError
from orchestrator.paths import cache_dir

DEFAULT_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
DEFAULT_TARBALL_PACKAGE = "linux-source-6.12"

# Fixed identity and dates make the base commit (and every commit `git am`
# makes on it) reproducible, so equal inputs give equal commit ids.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "orchestrator",
    "GIT_AUTHOR_EMAIL": "orchestrator@localhost",
    "GIT_COMMITTER_NAME": "orchestrator",
    "GIT_COMMITTER_EMAIL": "orchestrator@localhost",
    "GIT_AUTHOR_DATE": "1970-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "1970-01-01T00:00:00Z",
}


def git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GIT_ENV)
    return env


def git(repo: Path, *args: str, check: bool = True, timeout: float = 600) -> str:
    """Run git in repo with the fixed identity; return stdout."""
    res = proc.run(["git", "-C", str(repo), *args], env=git_env(), timeout=timeout)
    if check and res.returncode != 0:
        detail = (res.stderr.strip() or res.stdout.strip())[-2000:]
        raise UserError(f"git {' '.join(args[:3])} failed (exit {res.returncode}) in {repo}: {detail}")
    return res.stdout


@dataclass(frozen=True)
class SourceSpec:
    """What the user asked for."""

    kind: str  # "tarball" | "git" | "worktree"
    path: Path
    ref: str | None = None

    @staticmethod
    def parse(text: str | None) -> "SourceSpec":
        """`None` -> Debian tarball; `PATH.tar.*` -> tarball; `PATH@REF` -> git ref;
        `PATH` (a git or plain tree) -> work tree as it is."""
        if not text:
            return SourceSpec("tarball", DEFAULT_TARBALL)
        if "@" in text and not Path(text).exists():
            path, ref = text.rsplit("@", 1)
            return SourceSpec("git", Path(path).expanduser().resolve(), ref)
        path = Path(text).expanduser().resolve()
        if path.is_file() and re.search(r"\.tar(\.(xz|gz|bz2|zst))?$", path.name):
            return SourceSpec("tarball", path)
        return SourceSpec("worktree", path)


@dataclass
class PreparedSource:
    """A tree ready to build.  `repo` is where make runs (the srctree)."""

    spec: SourceSpec
    repo: Path
    base_commit: str | None  # None for a plain (non-git) work tree
    key: str  # stable, filesystem-safe identity of the source content
    kernel_version: str
    identity: dict = field(default_factory=dict)
    in_place: bool = False  # True: the developer's tree, never modified by us


def kernel_version(tree: Path) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL from the top Makefile."""
    try:
        head = (tree / "Makefile").read_text(errors="replace")[:2000]
    except OSError as exc:
        raise UserError(f"{tree} is not a kernel tree (no Makefile)", hint="point --source at a Linux source tree") from exc
    vals = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION) = ?(\S*)", head, re.M))
    if "VERSION" not in vals:
        raise UserError(f"{tree}/Makefile has no VERSION line: not a Linux source tree")
    ver = f"{vals['VERSION']}.{vals.get('PATCHLEVEL', '0')}.{vals.get('SUBLEVEL', '0')}"
    return ver + vals.get("EXTRAVERSION", "")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tarball_sha256(path: Path) -> str:
    """sha256 of a tarball, memoised by (path, size, mtime): hashing 150 MB each run is waste."""
    st = path.stat()
    memo = cache_dir("sources") / "tarball-sha256.json"
    key = f"{path}:{st.st_size}:{int(st.st_mtime)}"
    try:
        table = json.loads(memo.read_text())
    except (OSError, ValueError):
        table = {}
    if key not in table:
        table[key] = sha256_file(path)
        write_json_atomic(memo, table, sort_keys=False)
    return table[key]


def _debian_package_version(package: str) -> str | None:
    res = proc.run(["dpkg-query", "-W", "-f=${Version}", package], timeout=30)
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None


def installed_source_package_version() -> str | None:
    """The installed linux-source-6.12 package version (e.g. 6.12.118-1~deb12u1), or None.

    Debian replaces it with each 6.12.y security update and drops the old one from
    the archive: code and tests ask what is installed, never assume a patch level.
    """
    return _debian_package_version(DEFAULT_TARBALL_PACKAGE)


def _prepare_tarball(spec: SourceSpec) -> PreparedSource:
    if not spec.path.is_file():
        hint = (
            f"install it: apt-get install {DEFAULT_TARBALL_PACKAGE} (or run `orchestrator install-deps`)"
            if spec.path == DEFAULT_TARBALL
            else "give an existing kernel tarball"
        )
        raise UserError(f"kernel tarball {spec.path} not found", hint=hint)
    digest = _tarball_sha256(spec.path)
    key = f"tar-{digest[:16]}"
    root = cache_dir("sources", key)
    repo = root / "linux"
    ready = root / "ready.json"
    if not ready.is_file():
        _unpack_to_repo(spec.path, root, repo)
        base = git(repo, "rev-parse", "HEAD").strip()
        ready.write_text(json.dumps({"base_commit": base, "tarball": str(spec.path), "sha256": digest}))
    meta = json.loads(ready.read_text())
    identity = {
        "kind": "tarball",
        "tarball": str(spec.path),
        "sha256": digest,
        "debian_package": installed_source_package_version() if spec.path == DEFAULT_TARBALL else None,
    }
    version = kernel_version(repo)
    identity["kernel_version"] = version
    return PreparedSource(spec, repo, meta["base_commit"], key, version, identity)


def _unpack_to_repo(tarball: Path, root: Path, repo: Path) -> None:
    """Unpack into a temporary dir and rename into place, so an interrupted
    unpack never looks like a finished one."""
    if repo.exists():
        shutil.rmtree(repo)  # left by an interrupted earlier attempt
    with tempfile.TemporaryDirectory(dir=root, prefix="unpack-") as tmp:
        print(f"[source] unpacking {tarball} (once; cached in {root})", flush=True)
        res = proc.run(["tar", "-xf", str(tarball), "-C", tmp], timeout=1800)
        if res.returncode != 0:
            raise UserError(f"cannot unpack {tarball}: {res.stderr.strip()[-500:]}")
        entries = [p for p in Path(tmp).iterdir()]
        top = entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(tmp)
        kernel_version(top)  # fail early on a tarball that is not a kernel
        print("[source] creating base git commit", flush=True)
        git(top, "init", "-q")
        git(top, "config", "core.autocrlf", "false")
        git(top, "config", "gc.auto", "0")
        # -f: Debian's tarball ships a .gitignore that ignores "/*" (its packaging rule).
        git(top, "add", "-A", "-f", timeout=1800)
        git(top, "commit", "-q", "--no-verify", "-m", f"base: {tarball.name}", timeout=1800)
        top.rename(repo)


def _prepare_git(spec: SourceSpec) -> PreparedSource:
    if not (spec.path / ".git").exists() and not (spec.path / "HEAD").exists():
        raise UserError(f"{spec.path} is not a git repository", hint="use PATH@REF only with a git tree")
    res = proc.run(["git", "-C", str(spec.path), "rev-parse", "--verify", f"{spec.ref}^{{commit}}"], timeout=60)
    if res.returncode != 0:
        raise UserError(f"ref {spec.ref!r} not found in {spec.path}", hint="give a branch, tag or commit that exists")
    commit = res.stdout.strip()
    key = f"git-{commit[:16]}"
    root = cache_dir("sources", key)
    repo = root / "linux"
    ready = root / "ready.json"
    if not ready.is_file():
        if repo.exists():
            shutil.rmtree(repo)
        print(f"[source] cloning {spec.path} at {commit[:12]} into the cache", flush=True)
        r = proc.run(["git", "clone", "-q", "--shared", "--no-checkout", str(spec.path), str(repo)], timeout=1800)
        if r.returncode != 0:
            raise UserError(f"git clone of {spec.path} failed: {r.stderr.strip()[-500:]}")
        git(repo, "checkout", "-q", "--detach", commit, timeout=1800)
        ready.write_text(json.dumps({"base_commit": commit}))
    version = kernel_version(repo)
    identity = {"kind": "git", "tree": str(spec.path), "ref": spec.ref, "commit": commit, "kernel_version": version}
    return PreparedSource(spec, repo, commit, key, version, identity)


def worktree_identity(tree: Path) -> tuple[str | None, str]:
    """(HEAD commit or None, sha256 over uncommitted changes and untracked files)."""
    if not (tree / ".git").exists():
        return None, "untracked-tree"
    head = proc.run(["git", "-C", str(tree), "rev-parse", "HEAD"], timeout=60).stdout.strip() or None
    h = hashlib.sha256()
    h.update(proc.run(["git", "-C", str(tree), "diff", "HEAD", "--binary"], timeout=600).stdout.encode())
    untracked = proc.run(["git", "-C", str(tree), "ls-files", "-z", "--others", "--exclude-standard"], timeout=600).stdout
    for name in sorted(filter(None, untracked.split("\0"))):
        p = tree / name
        if p.is_file():
            h.update(name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return head, h.hexdigest()


def _prepare_worktree(spec: SourceSpec) -> PreparedSource:
    if not spec.path.is_dir():
        raise UserError(f"source {spec.path} does not exist", hint="give a kernel tree, a tarball, or PATH@REF")
    version = kernel_version(spec.path)
    if (spec.path / ".config").exists() or (spec.path / "include" / "config").exists():
        raise UserError(
            f"{spec.path} has been built in place (.config present); out-of-tree builds need a clean tree",
            hint=f"run `make -C {spec.path} mrproper` (or build that tree elsewhere)",
        )
    head, dirty = worktree_identity(spec.path)
    key = "wt-" + hashlib.sha256(str(spec.path).encode()).hexdigest()[:16]
    identity = {"kind": "worktree", "tree": str(spec.path), "head": head, "dirty_sha256": dirty, "kernel_version": version}
    return PreparedSource(spec, spec.path, head, key, version, identity, in_place=True)


def prepare(spec: SourceSpec) -> PreparedSource:
    if spec.kind == "tarball":
        return _prepare_tarball(spec)
    if spec.kind == "git":
        return _prepare_git(spec)
    return _prepare_worktree(spec)
