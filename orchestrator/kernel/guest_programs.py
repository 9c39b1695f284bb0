"""The project's own guest programs (guest/*.c) and workload scripts
(guest/workloads/*), ready for the guest image.

The C programs are inner-VM workloads: they link the tree's KVM selftest
library (memstress, kvm_util; perf_test_util before 6.2, see orch_vm.h)
left behind by the selftests build, with the compiler flags the selftests
Makefile uses, statically for arm64.  A program that does not compile on a
tree is skipped with its first error (all_guest_programs, unavailable_programs):
the workload that runs it is skipped, the kernel build stays good.  Output is
cached by the sha256 of the program sources, the selftests build key (which
covers the library and its headers) and the toolchain.

Returns guest path -> host file.  Programs go to GUEST_BIN_DIR/<name>, scripts
to GUEST_WORKLOADS_DIR/<name> (guest_paths); both run by absolute path (the selftest
library re-opens argv[0] to load the inner guest's code).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc
from orchestrator.kernel.build import first_errors
from orchestrator.errors import BuildFailed, UserError
from orchestrator.paths import GUEST_DIR, cache_dir
from orchestrator.kernel.selftests import SelftestsBuild
from orchestrator.kernel.source import PreparedSource
from orchestrator.kernel.toolchain import Toolchain
from orchestrator.guest_paths import GUEST_BIN_DIR, GUEST_SELFTESTS_DIR, GUEST_WORKLOADS_DIR

GUEST_PROGRAMS_DIR = GUEST_BIN_DIR  # the name tests/test_guest_programs.py reads
RECIPE_VERSION = "1"
# Built by nested_kvm.build_kvm_probe on its own (plain libc, no selftest library).
STANDALONE = frozenset({"kvm_probe.c"})
KVM_SELFTESTS = Path("tools/testing/selftests/kvm")

# As CFLAGS/LDFLAGS/LDLIBS in tools/testing/selftests/kvm/Makefile (6.12) for
# ARCH=arm64; -MD -MP (dependency files) left out: nothing reads them.
CFLAGS = ("-D_GNU_SOURCE=", "-Wall", "-Wstrict-prototypes", "-Wuninitialized", "-O2", "-g", "-std=gnu99",
          "-Wno-gnu-variable-sized-type-not-at-end", "-DCONFIG_64BIT", "-U_FORTIFY_SOURCE", "-fno-builtin-memcmp", "-fno-builtin-memcpy",
          "-fno-builtin-memset", "-fno-builtin-strnlen", "-fno-stack-protector", "-fno-PIE",
          "-fno-strict-aliasing", "-static")
LDFLAGS = ("-pthread", "-no-pie")
LDLIBS = ("-ldl",)


@dataclass(frozen=True)
class GuestSources:
    root: Path  # the guest/ directory
    programs: tuple[Path, ...]  # guest/*.c built here
    headers: tuple[Path, ...]  # guest/*.h, shared by the programs
    scripts: tuple[Path, ...]  # guest/workloads/*, copied as they are

    def digest(self) -> str:
        h = hashlib.sha256()
        for p in (*self.programs, *self.headers, *self.scripts):
            h.update(str(p.relative_to(self.root)).encode() + b"\0")
            h.update(p.read_bytes())
            h.update(b"\0")
        return h.hexdigest()


def find_sources(guest_dir: Path = GUEST_DIR) -> GuestSources:
    programs = tuple(p for p in sorted(guest_dir.glob("*.c")) if p.name not in STANDALONE)
    headers = tuple(sorted(guest_dir.glob("*.h")))
    wl = guest_dir / "workloads"
    scripts = tuple(p for p in sorted(wl.iterdir()) if p.is_file() and not p.name.startswith(".")) if wl.is_dir() else ()
    return GuestSources(guest_dir, programs, headers, scripts)


def selftest_objects(selftests: SelftestsBuild) -> list[Path]:
    """The library objects (LIBKVM + arch + string_override), in a stable order."""
    lib = selftests.out_dir / "lib"
    # lib/aarch64 until 6.13, lib/arm64 after the rename.
    objs = sorted(lib.glob("*.o")) + sorted((lib / "aarch64").glob("*.o")) + sorted((lib / "arm64").glob("*.o"))
    names = {o.name for o in objs}
    if not names & {"memstress.o", "perf_test_util.o"} or "processor.o" not in names:
        raise UserError(f"KVM selftest library objects missing under {lib}",
                        hint=f"delete {selftests.out_dir} so the selftests are built again")
    return objs


def compile_flags(source: PreparedSource, selftests: SelftestsBuild, program_dir: Path) -> list[str]:
    """Include paths in the Makefile's order; generated sysreg headers from the selftests work dir."""
    kvm = source.repo / KVM_SELFTESTS
    headers = Path(selftests.metadata.get("headers") or "")
    generated = cache_dir("selftests", "work", selftests.key) / "obj/tools/arch/arm64/include/generated"
    # Generated sysreg headers exist from 6.3 (tools/arch/arm64 sysreg generation); 6.1 has none.
    needed = [(headers, "installed kernel headers")]
    if (source.repo / "arch/arm64/tools/gen-sysreg.awk").is_file() and (source.repo / "tools/arch/arm64/tools").is_dir():
        needed.append((generated, "generated arm64 sysreg headers"))
    for need, what in needed:
        if not need.is_dir():
            raise UserError(f"{what} of the selftests build missing: {need}",
                            hint=f"delete {selftests.out_dir} so the selftests are built again")
    return [*CFLAGS,
            f"-I{source.repo / 'tools/include'}", f"-I{source.repo / 'tools/arch/arm64/include'}",
            f"-I{kvm / 'include'}", f"-I{program_dir}",
            f"-I{kvm / ('include/arm64' if (kvm / 'include/arm64').is_dir() else 'include/aarch64')}",
            f"-I{kvm.parent / 'rseq'}", f"-I{kvm.parent}",
            "-isystem", str(headers), *([f"-I{generated}/"] if generated.is_dir() else [])]


def library_argv(source: PreparedSource, selftests: SelftestsBuild, tc: Toolchain,
                 src: Path, objs: list[Path], dest: Path) -> list[str]:
    """The compiler command for one C file linked with the selftest library objects."""
    return [tc.gcc, *compile_flags(source, selftests, src.parent), *LDFLAGS, str(src),
            *map(str, objs), *LDLIBS, "-o", str(dest)]


def compile_against_library(source: PreparedSource, selftests: SelftestsBuild, tc: Toolchain,
                            src: Path, dest: Path, log=None) -> None:
    """One C file + the selftest library objects -> a static arm64 program.  Raises BuildFailed."""
    argv = library_argv(source, selftests, tc, src, selftest_objects(selftests), dest)
    res = proc.run(argv, cwd=source.repo / KVM_SELFTESTS, timeout=300)
    if log is not None:
        log.write("$ " + " ".join(argv) + "\n" + res.stdout + res.stderr)
    if res.returncode != 0:
        dest.unlink(missing_ok=True)
        raise BuildFailed(f"{src.name} failed to compile (exit {res.returncode})",
                          first_errors((res.stdout + res.stderr).splitlines()), getattr(log, "name", ""))


def first_reason(errors: list[str]) -> str:
    """The line that says why: an undefined reference or a compiler error before the linker's summary."""
    for pick in (lambda e: "undefined reference" in e, lambda e: ": error:" in e and "collect2" not in e,
                 lambda e: "error" in e):
        if line := next((e.strip() for e in errors if pick(e)), ""):
            return line
    return errors[0].strip() if errors else ""


def _key(srcs: GuestSources, selftests: SelftestsBuild, tc: Toolchain) -> str:
    return hashlib.sha256("\0".join([RECIPE_VERSION, srcs.digest(), selftests.key, tc.describe()]).encode()).hexdigest()[:32]


def build_guest_programs(source: PreparedSource, selftests: SelftestsBuild, tc: Toolchain,
                         guest_dir: Path = GUEST_DIR, *, strict: bool = True) -> dict[str, Path]:
    """strict: a program that does not compile raises BuildFailed; otherwise it
    is left out and its reason recorded (unavailable_programs)."""
    srcs = find_sources(guest_dir)
    if not srcs.programs and not srcs.scripts:
        return {}
    key = _key(srcs, selftests, tc)
    out = cache_dir("guest-programs", key)
    meta_path = out / "metadata.json"
    if not meta_path.is_file():
        _build(srcs, source, selftests, tc, out, key, strict=strict)
    meta = json.loads(meta_path.read_text())
    if strict and meta.get("skipped"):
        name, reason = next(iter(meta["skipped"].items()))
        raise BuildFailed(f"guest program {name}.c did not compile on this tree: {reason}", [reason], str(out / "build.log"))
    files = {f"{GUEST_PROGRAMS_DIR}/{name}": out / "bin" / name for name in meta["programs"]}
    files.update({f"{GUEST_WORKLOADS_DIR}/{name}": out / "workloads" / name for name in meta["scripts"]})
    return files


def unavailable_programs(selftests: SelftestsBuild, tc: Toolchain, guest_dir: Path = GUEST_DIR) -> dict[str, str]:
    """Guest path -> why it is missing: programs that did not compile, selftests that did not build."""
    out = {f"{GUEST_SELFTESTS_DIR}/{n}": why for n, why in selftests.unavailable().items()}
    meta_path = cache_dir("guest-programs", _key(find_sources(guest_dir), selftests, tc)) / "metadata.json"
    try:
        skipped = json.loads(meta_path.read_text()).get("skipped", {})
    except (OSError, ValueError):
        skipped = {}
    out.update({f"{GUEST_PROGRAMS_DIR}/{n}": f"{n}.c does not compile on this tree: {why}" for n, why in skipped.items()})
    return out


def _build(srcs: GuestSources, source: PreparedSource, selftests: SelftestsBuild, tc: Toolchain,
           out: Path, key: str, *, strict: bool = True) -> None:
    """Compile into a temporary directory and rename it into place (a half build is never cached)."""
    t0 = time.monotonic()
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "bin").mkdir(parents=True)
    (tmp / "workloads").mkdir()
    log_lines: list[str] = []
    log_path = out.parent / f"{key}.build.log"
    skipped: dict[str, str] = {}
    built: list[str] = []
    try:
        try:
            objs = selftest_objects(selftests)
        except UserError as exc:
            if strict:
                raise
            objs, skipped = [], {p.stem: exc.message for p in srcs.programs}
        for src in (srcs.programs if objs else ()):
            name = src.stem
            argv = library_argv(source, selftests, tc, src, objs, tmp / "bin" / name)
            log_lines.append("$ " + " ".join(argv))
            res = proc.run(argv, cwd=source.repo / KVM_SELFTESTS, timeout=300)
            log_lines += (res.stdout + res.stderr).splitlines()
            if res.returncode != 0:
                errors = first_errors((res.stdout + res.stderr).splitlines())
                if strict:
                    log_path.write_text("\n".join(log_lines) + "\n")
                    raise BuildFailed(f"guest program {src.name} failed to compile (exit {res.returncode})",
                                      errors, str(log_path))
                skipped[name] = first_reason(errors)
                continue
            built.append(name)
        for script in srcs.scripts:
            dest = tmp / "workloads" / script.name
            shutil.copyfile(script, dest)
            dest.chmod(0o755)  # the image keeps the executable bit
        (tmp / "build.log").write_text("\n".join(log_lines) + "\n")
        meta = {"key": key, "programs": built, "skipped": skipped, "scripts": [s.name for s in srcs.scripts],
                "selftests": selftests.key, "toolchain": tc.describe(), "duration_s": round(time.monotonic() - t0, 2),
                "warnings": [line for line in log_lines if ": warning:" in line]}
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        try:
            tmp.rename(out)
        except OSError:  # another process put the same build there meanwhile
            if not (out / "metadata.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def all_guest_programs(source: PreparedSource, selftests: SelftestsBuild, tc: Toolchain) -> dict[str, Path]:
    """Every program the guest image carries: guest/*.c on the selftest library,
    plus the plain static ones of guest/race (race_programs)."""
    from orchestrator.kernel.race_programs import race_programs
    files = build_guest_programs(source, selftests, tc, strict=False)
    files.update(race_programs(tc))
    return files
