"""Where things live: the cache root and the project's own data directories.

Caches live under $XDG_CACHE_HOME (default ~/.cache); nothing built is ever
written into the repository.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from orchestrator.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KERNEL_CONFIGS_DIR = PROJECT_ROOT / "kernel_configs"
PATCHES_DIR = PROJECT_ROOT / "patches"
GUEST_DIR = PROJECT_ROOT / "guest"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    root = Path(base) / "arm64-orchestrator"
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(*parts: str) -> Path:
    """A directory under the cache root; each part must be a safe name."""
    path = cache_root()
    for part in parts:
        path = path / safe_name(part, what="cache path component")
    path.mkdir(parents=True, exist_ok=True)
    return path


def safe_name(name: str, *, what: str) -> str:
    """Reject names that could escape a root directory (from YAML, CLI, ...)."""
    if not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise UserError(
            f"invalid {what} {name!r}",
            hint="use 1-128 characters from A-Z a-z 0-9 . _ + - (not starting with . or -)",
        )
    return name
