"""Atomic file writes: a temporary file in the same directory, then os.replace.

A reader (another run, --resume, a cache lookup) sees the old file or the new
one, never half of one: os.replace is atomic within a file system, which is
why the temporary file sits next to the target and not in /tmp.

Temporary names: NAME.tmp by default, which the run's cleanup of interrupted
writes looks for (matrix runner: results/**/*.tmp); NAME.tmp<pid> with
per_process=True, for cache files that concurrent processes may write at the
same moment.  A write that fails removes its temporary file.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def temp_path(path: Path, *, per_process: bool = False) -> Path:
    """Where the new content of `path` is written before it replaces `path`."""
    return path.with_name(f"{path.name}.tmp{os.getpid() if per_process else ''}")


@contextmanager
def atomic_path(path: Path, *, per_process: bool = False) -> Iterator[Path]:
    """Yield a temporary path for any writer (a compiler, shutil); on success it
    replaces `path`, on an exception it is removed."""
    tmp = temp_path(path, per_process=per_process)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        # Only on failure: after a successful replace the name may already be
        # another writer's temporary file.
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_writer(path: Path, mode: str = "w", *, fsync: bool = False, per_process: bool = False) -> Iterator[IO[Any]]:
    """An open file whose content replaces `path` when the block ends without
    an exception.  fsync: on disk before the rename (survives a power loss)."""
    with atomic_path(path, per_process=per_process) as tmp:
        with open(tmp, mode) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def write_text_atomic(path: Path, text: str, *, fsync: bool = False, per_process: bool = False) -> None:
    with atomic_writer(path, "w", fsync=fsync, per_process=per_process) as f:
        f.write(text)


def write_bytes_atomic(path: Path, data: bytes, *, fsync: bool = False, per_process: bool = False) -> None:
    with atomic_writer(path, "wb", fsync=fsync, per_process=per_process) as f:
        f.write(data)


def write_json_atomic(path: Path, data: Any, *, indent: int = 1, sort_keys: bool = True, fsync: bool = False) -> None:
    """json.dumps(data) to `path`; the defaults are those of the results files."""
    write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys), fsync=fsync)


def copy_file_atomic(src: Path, dst: Path) -> None:
    """shutil.copyfile(src, dst), published in one step (large build artifacts)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
