"""What every execution target offers, and the registry that makes one from
its data file.

A target is named by a file `targets/NAME.yaml` (`local` is the default: the
local QEMU).  The file's `kind:` picks the class (KINDS below); the class
declares the other keys it reads (FIELDS: datafiles schema fields) and is
made with `from_data(name, data)`.  So a new target is a class and a data
file (and one line in KINDS).
"""
from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from orchestrator import datafiles
from orchestrator.datafiles import Field, Later, Mapping, Str
from orchestrator.errors import UserError
from orchestrator.paths import PROJECT_ROOT
from orchestrator.target.job import GuestJob, GuestOutcome, Progress

TARGETS_DIR = PROJECT_ROOT / "targets"
DEFAULT_TARGET = "local"

# kind -> "module:Class" (imported when a file of that kind is loaded, so a
# LAVA target costs nothing to a user who never names one).
KINDS: dict[str, str] = {
    "qemu": "orchestrator.target.local:LocalTarget",
    "lava-run": "orchestrator.target.lava.targets:LavaRunTarget",
    "lava-server": "orchestrator.target.lava.targets:LavaServerTarget",
}

# Keys every target file has; a class adds its own with FIELDS.
COMMON_FIELDS = {
    "description": Field(Str(), help="one line for humans"),
}


@runtime_checkable
class Target(Protocol):
    name: str

    def identity(self) -> dict[str, str]:
        """What the target is, for the resume key and the KCIDB environment
        ({"kind": "qemu", "qemu": "...", "accel": "tcg"}); never a secret."""
        ...

    def preflight(self) -> None:
        """Check the target can run jobs at all (raise UserError saying how to fix it)."""
        ...

    def run(self, job: GuestJob, cell_dir: Path, progress: Progress | None = None) -> GuestOutcome:
        """Boot the job's kernel, run its scripts, save evidence under cell_dir
        (console log, evidence/).  Guest and lab faults come back as
        GuestOutcome.fault, never raised; progress (if given) sees the outcome
        grow (job.Progress)."""
        ...


def available_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def _kind_class(kind: str) -> Any:
    module, _, cls = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), cls)


def load_target_file(path: Path) -> Target:
    """Read one targets/*.yaml file: `kind` first (file:line and the closest
    kind when it is wrong or missing), then the keys that kind reads."""
    common = {**COMMON_FIELDS, "kind": Field(Str(choices=tuple(KINDS)), required=True,
                                             help="which kind of target: " + ", ".join(KINDS))}
    raw = datafiles.read_data(path, "target")
    if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
        # Checked with the kind's choices only, the rest left for later: the
        # error names the file, the line of `kind` and the closest kind.
        rest = {str(k): Field(Later()) for k in raw if k not in common} if isinstance(raw, dict) else {}
        datafiles.load(path, Mapping({**common, **rest}), what="target")
        raise UserError(f"{path}: `kind:` must be one of {', '.join(KINDS)}")  # not reached: load raised
    cls = _kind_class(raw["kind"])
    doc = datafiles.load(path, Mapping({**common, **getattr(cls, "FIELDS", {})}), what="target")
    return cls.from_data(path.stem, doc)


@functools.lru_cache(maxsize=16)
def load_target(name: str) -> Target:
    """targets/NAME.yaml; an unknown name is an error with the closest known one."""
    path = datafiles.named_file(TARGETS_DIR, name, what="target", plural="targets")
    return load_target_file(path)
