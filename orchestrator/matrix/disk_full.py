"""A full disk during a run: recognise it, say where space ran out, and clean
up the temporary files of interrupted atomic writes."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

from orchestrator.paths import cache_root

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in DISK_FULL


def _free(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free >> 10} KiB free"
    except OSError:
        return "free space unknown"


def disk_full_message(exc: OSError, results: Path | None = None) -> str:
    where = f" writing {exc.filename}" if exc.filename else ""
    places = ([f"results {results} ({_free(results)})"] if results else []) + [f"cache {cache_root()} ({_free(cache_root())})"]
    return f"no space left on device{where}: {'; '.join(places)}"


def remove_partial_files(out: Path) -> None:
    """Temporary files of atomic writes that an interruption or a full disk left behind."""
    for tmp in out.rglob("*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass
