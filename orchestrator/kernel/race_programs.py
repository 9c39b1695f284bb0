"""Guest files of the race workload (workloads/race.yaml), from guest/race/:

- *.c: small static arm64 programs with plain libc (no KVM selftest library),
  compiled and cached by static_program.compile_static; they go to
  GUEST_BIN_DIR/<stem> (guest_paths);
- *.sh: busybox shell scripts, copied as they are to GUEST_WORKLOADS_DIR/<stem>.

Used by programs.all_guest_programs, next to build_guest_programs.
"""
from __future__ import annotations

from pathlib import Path

from orchestrator.paths import GUEST_DIR
from orchestrator.kernel.toolchain import Toolchain
from orchestrator.guest_paths import GUEST_BIN_DIR, GUEST_WORKLOADS_DIR
from orchestrator.kernel.static_program import compile_static

RACE_DIR = GUEST_DIR / "race"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-pthread")  # compile_static adds -static


def compile_program(src: Path, tc: Toolchain) -> Path:
    """Static arm64 binary of one C file, cached by content; compile errors are a UserError."""
    return compile_static([src], tc, CFLAGS, src.stem)


def race_programs(tc: Toolchain, race_dir: Path = RACE_DIR) -> dict[str, Path]:
    """Guest path -> host file for guest/race (the image keeps the executable bit)."""
    if not race_dir.is_dir():
        return {}
    files: dict[str, Path] = {}
    for p in sorted(race_dir.iterdir()):
        if p.suffix == ".c":
            files[f"{GUEST_BIN_DIR}/{p.stem}"] = compile_program(p, tc)
        elif p.suffix == ".sh":
            files[f"{GUEST_WORKLOADS_DIR}/{p.stem}"] = p
    return files
