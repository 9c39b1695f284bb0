"""Guest files of the race workload (workloads/race.yaml), from guest/race/:

- *.c: small static arm64 programs with plain libc (no KVM selftest library),
  compiled here and cached by the sha256 of the source and the compiler
  version; they go to GUEST_BIN_DIR/<stem> (guest_paths);
- *.sh: busybox shell scripts, copied as they are to GUEST_WORKLOADS_DIR/<stem>.

Hook (pipeline.build_variant, next to build_guest_programs):
    programs.update(race_programs(tc))
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import UserError
from orchestrator.paths import GUEST_DIR, cache_dir
from orchestrator.kernel.toolchain import Toolchain
from orchestrator.vm.guest_paths import GUEST_BIN_DIR, GUEST_WORKLOADS_DIR

RACE_DIR = GUEST_DIR / "race"
CFLAGS = ("-static", "-O2", "-Wall", "-Wextra", "-pthread")


def compile_program(src: Path, tc: Toolchain) -> Path:
    """Static arm64 binary of one C file, cached by content; compile errors are a UserError."""
    key = hashlib.sha256(src.read_bytes() + b"\0" + tc.describe().encode() + b"\0" + " ".join(CFLAGS).encode())
    out = cache_dir("race-programs") / f"{src.stem}-{key.hexdigest()[:16]}"
    if out.exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    res = proc.run([tc.gcc, *CFLAGS, "-o", str(tmp), str(src)], timeout=300)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise UserError(f"compiling {src} failed:\n{(res.stdout + res.stderr).strip()[-3000:]}",
                        hint="needs gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (static libc for arm64)")
    tmp.rename(out)
    return out


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
