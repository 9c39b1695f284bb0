"""Small static arm64 programs with plain libc (no KVM selftest library):
guest/kvm_probe.c, guest/race/*.c and the fault tests' program.

Each is compiled with the compiler the kernel build uses (the cross gcc on
x86_64, the native gcc on an arm64 host) and cached by what decides the
binary: the source bytes, the flags and the compiler identity.  Rebuilding
takes seconds, so nothing more is kept.  The binary appears in the cache only
complete (atomic publish), so a cache hit is a file that exists.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from orchestrator import proc
from orchestrator.atomic import atomic_path
from orchestrator.errors import UserError
from orchestrator.kernel.build import first_errors
from orchestrator.kernel.toolchain import Toolchain
from orchestrator.paths import cache_dir

CACHE_SUBDIR = "guest-bin"


class CompileFailed(UserError):
    """The compiler rejected a program: a UserError (a missing static libc is the
    usual cause) that also carries the first error lines."""

    def __init__(self, message: str, errors: list[str], *, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.first_errors = errors


def compile_argv(gcc: str, sources: Sequence[Path], flags: Sequence[str], out: Path) -> list[str]:
    return [gcc, "-static", *flags, "-o", str(out), *map(str, sources)]


def cache_key(sources: Sequence[Path], tc: Toolchain, flags: Sequence[str]) -> str:
    h = hashlib.sha256()
    for src in sources:
        h.update(src.read_bytes() + b"\0")
    h.update(" ".join(flags).encode() + b"\0" + tc.describe().encode())
    return h.hexdigest()[:16]


def _packages(tc: Toolchain) -> tuple[str, str]:
    """(compiler package, static C library package) for this host."""
    return ("gcc", "libc6-dev") if not tc.cross_compile else ("gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross")


def compile_static(sources: Sequence[Path], tc: Toolchain, flags: Sequence[str], name: str, *,
                   timeout: float = 300) -> Path:
    """The cached binary `name-<key>` of `gcc -static FLAGS -o OUT SOURCES`.

    A missing compiler or a compile error is a UserError (CompileFailed with
    the first error lines for the latter)."""
    sources = list(sources)
    out = cache_dir(CACHE_SUBDIR) / f"{name}-{cache_key(sources, tc, flags)}"
    if out.exists():
        return out
    gcc_package, libc_package = _packages(tc)
    # Per process: two runs may compile the same program at once.
    with atomic_path(out, per_process=True) as tmp:
        try:
            res = proc.run(compile_argv(tc.gcc, sources, flags, tmp), timeout=timeout)
        except FileNotFoundError:
            raise UserError(f"{tc.gcc} not found", hint=f"apt-get install {gcc_package} {libc_package}") from None
        if res.returncode != 0:
            errors = first_errors((res.stdout + res.stderr).splitlines())
            raise CompileFailed(f"compiling {', '.join(map(str, sources))} failed:\n" + "\n".join(errors), errors,
                                hint=f"install the static C library for arm64 ({libc_package})")
    return out
