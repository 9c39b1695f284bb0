"""Cached, content-keyed arm64 kernel builds.

One work tree per source (variants are commits in it) and one object
directory per (source, config set): building a second variant after the first
recompiles only the files the series touched.  Artifacts are copied to a
directory named by the build key; a request with the same key is a cache hit.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import proc
from orchestrator.atomic import copy_file_atomic, write_json_atomic
from orchestrator.errors import BuildFailed
from orchestrator.kernel.kconfig import ConfigSet, generate_config
from orchestrator.paths import cache_dir
from orchestrator.progress import Progress, fmt_duration
from orchestrator.kernel.source import PreparedSource, sha256_file
from orchestrator.kernel.toolchain import Toolchain

# Bump when the build recipe changes in a way that changes artifacts.
RECIPE_VERSION = "1"
REPRO_ENV = {
    # Reproducible build identity: the banner and ccache hits do not depend on when/where.
    "KBUILD_BUILD_TIMESTAMP": "1970-01-01",
    "KBUILD_BUILD_USER": "orchestrator",
    "KBUILD_BUILD_HOST": "orchestrator",
}

_COMPILE_LINE = re.compile(r"^\s+(CC|AS|LD|AR|CPP|HOSTCC|OBJCOPY|GZIP|LDS|KSYMS|GEN|SYSMAP)\s+(\S+)")
_ERROR_LINE = re.compile(r"(: (fatal )?error: )|(^make(\[\d+\])?: \*\*\*)|(undefined reference to)")
# The kernel passes -fdiagnostics-color=always; logs and parsers want plain text.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_WARNING_LINE = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):(?P<col>\d+): warning: (?P<msg>.*)$")


@dataclass
class BuildResult:
    key: str
    out_dir: Path
    cache_hit: bool
    metadata: dict = field(default_factory=dict)

    @property
    def image(self) -> Path:
        return self.out_dir / "Image"

    @property
    def vmlinux(self) -> Path:
        return self.out_dir / "vmlinux"

    @property
    def config(self) -> Path:
        return self.out_dir / ".config"

    @property
    def log(self) -> Path:
        return self.out_dir / "build.log"


def sha256_text(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


@contextmanager
def locked(name: str) -> Iterator[None]:
    """An exclusive inter-process lock under the cache (one kernel build at a time).

    The holder writes who it is into the lock file, so a run that has to wait
    says what it waits for (two terminals building variants of one source).
    """
    lock_path = cache_dir("locks") / f"{name}.lock"
    with lock_path.open("a+") as fh:  # "a+": opening must not erase the holder's line
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another orchestrator process"
            print(f"waiting for {lock_path} (the {name} lock), held by {holder}", file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)


def make_env(tc: Toolchain) -> dict[str, str]:
    env = dict(os.environ)
    env.update(REPRO_ENV)
    env["ARCH"] = tc.arch
    if tc.cross_compile:
        env["CROSS_COMPILE"] = tc.cross_compile
    env["CCACHE_DIR"] = str(cache_dir("ccache"))
    # Object dirs differ per (source, config set): let ccache match across them.
    env["CCACHE_BASEDIR"] = str(cache_dir())
    env.setdefault("CCACHE_MAXSIZE", "5G")
    env.pop("MAKEFLAGS", None)
    env.pop("MAKELEVEL", None)
    return env


def first_errors(log_lines: list[str], limit: int = 12) -> list[str]:
    """The first compiler/linker error with a little context, for the user and JUnit."""
    for i, line in enumerate(log_lines):
        if _ERROR_LINE.search(line):
            start = i
            # Keep gcc's "In function ..." header that precedes the error.
            if i > 0 and ("In function" in log_lines[i - 1] or "In file included" in log_lines[i - 1]):
                start = i - 1
            return log_lines[start : start + limit]
    return log_lines[-limit:]


def parse_warnings(log_lines: list[str]) -> list[dict]:
    """Compiler warnings as {file, line, message} records."""
    out = []
    for line in log_lines:
        if m := _WARNING_LINE.match(line.strip()):
            out.append({"file": m["file"], "line": int(m["line"]), "message": m["msg"]})
    return out


def objdir_for(source: PreparedSource, config_set: ConfigSet) -> Path:
    return cache_dir("builds", "work", f"{source.key}-{config_set.name.replace('+', '_')}-{config_set.key()[:12]}")


def request_key(source: PreparedSource, tree_id: str, config_set: ConfigSet, tc: Toolchain, targets: list[str]) -> str:
    """What the user asked for: lets a repeat request hit without regenerating .config."""
    return sha256_text(RECIPE_VERSION, source.key, tree_id, config_set.key(), tc.describe(), " ".join(targets))


def valid_cached(out_dir: Path) -> dict | None:
    """Metadata of a complete, uncorrupted cached build, else None (the caller rebuilds)."""
    meta_path = out_dir / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    for name, digest in (meta.get("artifacts_sha256") or {}).items():
        p = out_dir / name
        if not p.is_file() or sha256_file(p) != digest:
            return None
    return meta if meta.get("artifacts_sha256") else None


def run_make(
    srctree: Path, objdir: Path, tc: Toolchain, targets: list[str], jobs: int, log_path: Path, progress: Progress
) -> list[str]:
    """make with a streamed log; returns the log lines.  Raises BuildFailed."""
    argv = ["make", f"O={objdir}", *tc.make_vars(), f"-j{jobs}", *targets]
    lines: list[str] = []
    counts = {"objects": 0}
    with log_path.open("a", buffering=1) as log:  # line-buffered: a crash loses nothing
        log.write("$ " + " ".join(argv) + "\n")

        def on_line(line: str) -> None:
            line = _ANSI.sub("", line)
            lines.append(line)
            log.write(line + "\n")
            if m := _COMPILE_LINE.match(line):
                counts["objects"] += 1
                progress.update(f"{counts['objects']} steps, {m.group(1)} {m.group(2)}")

        rc = proc.stream(argv, on_line=on_line, cwd=srctree, env=make_env(tc), timeout=4 * 3600)
    if rc != 0:
        raise BuildFailed(f"make {' '.join(targets)} failed (exit {rc})", first_errors(lines), str(log_path))
    return lines


def build_kernel(
    source: PreparedSource,
    tree_id: str,
    config_set: ConfigSet,
    tc: Toolchain,
    *,
    label: str,
    provenance: dict,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Build Image in `source.repo` as it is checked out now (the caller applied the series).

    tree_id identifies the checked-out content (commit, or commit+dirty hash).
    Must be called with the source's lock held.
    """
    jobs = jobs or os.cpu_count() or 2
    progress = progress or Progress(f"build {label}")
    targets = ["Image"]
    rkey = request_key(source, tree_id, config_set, tc, targets)
    index = cache_dir("builds", "requests") / f"{rkey}.json"
    if index.is_file():
        out_dir = Path(json.loads(index.read_text())["out_dir"])
        if meta := valid_cached(out_dir):
            progress.done(f"cache hit {meta['key'][:16]} -> {out_dir}")
            return BuildResult(meta["key"], out_dir, True, meta)

    t0 = time.monotonic()
    objdir = objdir_for(source, config_set)
    progress.set_phase("config")
    config = generate_config(source.repo, objdir, config_set, make_env(tc), tc.make_vars())
    t_config = time.monotonic() - t0
    config_sha = sha256_file(config)
    key = sha256_text(RECIPE_VERSION, source.key, tree_id, config_sha, tc.describe(), " ".join(targets), f"-j{jobs}")[:32]
    out_dir = cache_dir("builds", "out", key)
    if meta := valid_cached(out_dir):
        index.write_text(json.dumps({"out_dir": str(out_dir)}))
        progress.done(f"cache hit {key[:16]} -> {out_dir}")
        return BuildResult(key, out_dir, True, meta)

    log_path = out_dir / "build.log"
    log_path.write_text("")
    (out_dir / "metadata.json").unlink(missing_ok=True)
    progress.set_phase("make")
    t1 = time.monotonic()
    lines = run_make(source.repo, objdir, tc, targets, jobs, log_path, progress)
    t_make = time.monotonic() - t1
    recompiled = sum(1 for line in lines if line.lstrip().startswith("CC "))

    progress.set_phase("collect")
    sources = {"Image": objdir / "arch/arm64/boot/Image", "vmlinux": objdir / "vmlinux",
               "System.map": objdir / "System.map", ".config": config}
    digests = {}
    for name, src in sources.items():
        if not src.is_file():
            raise BuildFailed(f"make succeeded but {src} is missing", lines[-10:], str(log_path))
        dst = out_dir / name
        copy_file_atomic(src, dst)
        digests[name] = sha256_file(dst)
    meta = {
        "key": key,
        "request_key": rkey,
        "label": label,
        "source": source.identity,
        "tree_id": tree_id,
        "config_set": config_set.name,
        "config_base": config_set.base,
        "fragments": [str(f.path) for f in config_set.fragments],
        "config_sha256": config_sha,
        "toolchain": tc.describe(),
        "make": ["make", f"O={objdir}", *tc.make_vars(), f"-j{jobs}", *targets],
        "objdir": str(objdir),
        "durations_s": {"config": round(t_config, 2), "make": round(t_make, 2), "total": round(time.monotonic() - t0, 2)},
        "recompiled_c_files": recompiled,
        "warnings": parse_warnings(lines),
        "artifacts_sha256": digests,
        **provenance,
    }
    # Written last: its presence means complete.
    write_json_atomic(out_dir / "metadata.json", meta, indent=2, sort_keys=False)
    index.write_text(json.dumps({"out_dir": str(out_dir)}))
    progress.done(f"built in {fmt_duration(time.monotonic() - t0)} ({recompiled} C files compiled) -> {out_dir}")
    return BuildResult(key, out_dir, False, meta)
