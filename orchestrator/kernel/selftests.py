"""KVM selftests for arm64 from the same tree, statically linked, keyed and cached.

They are the inner-guest workloads, and the whole list the tree's Makefile
gives for arm64 is the kvm-selftests suite (workloads/kvm-selftests.yaml):
each tree (6.12, Debian's 6.1, a git ref) brings its own list.  The library objects they leave behind
(lib/*.o) also link the project's own C workloads in guest/.

Built the way the tree's own Makefile builds them, whatever its library is
called (memstress from 6.2, perf_test_util before): the tests of WANTED that
the tree's Makefile lists for arm64 (asked from make itself) are make targets;
one that exists as a source file but is not listed for arm64 there (6.1's
access_tracking_perf_test is x86-only in its Makefile) is compiled against the
library objects with the Makefile's flags.  A test that does not build is
recorded as unavailable with its first error, never a failed kernel build:
the workload needing it is skipped with that reason.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc
from orchestrator.kernel.build import first_errors, make_env, sha256_text
from orchestrator.errors import BuildFailed, UserError
from orchestrator.paths import cache_dir
from orchestrator.progress import Progress
from orchestrator.kernel.source import PreparedSource, sha256_file
from orchestrator.kernel.toolchain import Toolchain

RECIPE_VERSION = "2"  # 2: the tree's whole arm64 list, not only WANTED
# What the workloads run; more can be added when a workload needs them.
WANTED = ("access_tracking_perf_test", "demand_paging_test", "dirty_log_perf_test", "kvm_create_max_vcpus")


@dataclass
class SelftestsBuild:
    key: str
    out_dir: Path  # contains the binaries and lib/ objects
    cache_hit: bool
    metadata: dict

    def binary(self, name: str) -> Path:
        """A test by its name (aarch64/ tests live in a subdirectory of the build)."""
        return self.out_dir / self.metadata.get("paths", {}).get(name, name)

    def suite(self) -> list[str]:
        """Every arm64 test of the tree's Makefile, in its order (built or not)."""
        return list(self.metadata.get("suite", []))

    def suite_available(self) -> list[str]:
        """The suite's tests that were built, in the Makefile's order."""
        built = self.metadata.get("binaries_sha256", {})
        return [n for n in self.suite() if n in built]

    def settings_timeout(self) -> int | None:
        """`timeout=` of the directory's kselftest `settings` file (None: none there)."""
        return self.metadata.get("settings_timeout")

    def available(self) -> list[str]:
        """The WANTED tests that were built (in WANTED order)."""
        built = self.metadata.get("binaries_sha256", {})
        return [n for n in WANTED if n in built]

    def unavailable(self) -> dict[str, str]:
        """Test name -> why it is not there (first build error, or not in the tree)."""
        return dict(self.metadata.get("unavailable", {}))


# Appended to the tree's Makefile (make -f Makefile -f this): prints the tests
# the Makefile itself builds for ARCH, after lib.mk prefixed them with OUTPUT.
_PRINT_TESTS_MK = "orch-print-tests:\n\t@echo $(TEST_GEN_PROGS)\n"


def tree_test_paths(kvm_dir: Path, make_vars: list[str], env: dict[str, str], out_dir: Path) -> dict[str, str]:
    """Test name -> path under OUTPUT (aarch64/hypercalls) of every test the
    tree's selftests Makefile builds for arm64, in the Makefile's order."""
    mk = out_dir.parent / f".print-tests-{out_dir.name}.mk"
    mk.write_text(_PRINT_TESTS_MK)
    try:
        res = proc.run(["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", str(mk), *make_vars,
                        "orch-print-tests"], cwd=kvm_dir, env=env, timeout=300)
    finally:
        mk.unlink(missing_ok=True)
    if res.returncode != 0:
        raise BuildFailed("cannot list the KVM selftests of this tree (make orch-print-tests failed)",
                          (res.stdout + res.stderr).splitlines()[-12:], "")
    out: dict[str, str] = {}
    for word in res.stdout.split():
        rel = Path(word).relative_to(out_dir) if Path(word).is_relative_to(out_dir) else Path(Path(word).name)
        out.setdefault(rel.name, str(rel))
    return out


def tree_test_list(kvm_dir: Path, make_vars: list[str], env: dict[str, str], out_dir: Path) -> set[str]:
    """The test names the tree's selftests Makefile builds for arm64."""
    return set(tree_test_paths(kvm_dir, make_vars, env, out_dir))


def settings_timeout(kvm_dir: Path) -> int | None:
    """`timeout=N` from the directory's kselftest `settings` file, as runner.sh reads it."""
    try:
        text = (kvm_dir / "settings").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.strip().partition("=")
        if key == "timeout" and value.strip().isdigit():
            return int(value.strip())
    return None


def first_error_of(name: str, lines: list[str]) -> str:
    """The first compiler/linker error that names the test's own source or binary."""
    for line in lines:
        if (f"{name}.c:" in line or f"/{name}" in line) and ("error" in line or "undefined reference" in line):
            return line.strip()
    return ""


def _valid(out_dir: Path) -> dict | None:
    try:
        meta = json.loads((out_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        return None
    for name, digest in meta.get("binaries_sha256", {}).items():
        p = out_dir / meta.get("paths", {}).get(name, name)
        if not p.is_file() or sha256_file(p) != digest:
            return None
    if not all((out_dir / f).is_file() for f in SUITE_FILES):
        return None
    return meta


def build_selftests(source: PreparedSource, content_id: str, tc: Toolchain, *, progress: Progress | None = None) -> SelftestsBuild:
    """Build with the source lock held and the tree checked out; content_id
    identifies what the selftests are built from (see pipeline.selftests_content_id)."""
    progress = progress or Progress("selftests")
    key = sha256_text(RECIPE_VERSION, source.key, content_id, tc.describe())[:32]
    out_dir = cache_dir("selftests", key)
    if meta := _valid(out_dir):
        progress.done(f"cache hit -> {out_dir}")
        return SelftestsBuild(key, out_dir, True, meta)
    t0 = time.monotonic()
    # An invalid entry (e.g. a corrupt binary) must really be rebuilt: make would
    # call a damaged but newer file up to date.
    (out_dir / "metadata.json").unlink(missing_ok=True)
    for name in WANTED:
        (out_dir / name).unlink(missing_ok=True)
    work = cache_dir("selftests", "work", key)
    hdrs, obj = work / "hdrs", work / "obj"
    (obj / "tools").mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "build.log"
    env = make_env(tc)
    cross = [f"CROSS_COMPILE={tc.cross_compile}"] if tc.cross_compile else []
    kvm_dir = source.repo / "tools/testing/selftests/kvm"
    # abs_objdir keeps generated headers out of the source tree.
    kvm_vars = ["ARCH=arm64", *cross, f"OUTPUT={out_dir}", f"abs_objdir={obj}",
                f"KHDR_INCLUDES=-isystem {hdrs}/usr/include", "EXTRA_CFLAGS=-static"]
    paths = tree_test_paths(kvm_dir, kvm_vars, env, out_dir)
    listed = set(paths)
    for rel in paths.values():  # a stale binary must not pass for a built one
        (out_dir / rel).unlink(missing_ok=True)
    in_tree = list(paths)  # the whole arm64 suite, WANTED among it
    extra = [n for n in WANTED if n not in listed and (kvm_dir / f"{n}.c").is_file()]
    unavailable = {n: "not in this tree's KVM selftests (no tools/testing/selftests/kvm/{n}.c)".format(n=n)
                   for n in WANTED if n not in listed and n not in extra}
    # `headers` (not headers_install) needs no rsync.  -k: one test that does
    # not build leaves the others (and the library) built.
    steps = [(["make", f"O={hdrs}", "ARCH=arm64", *cross, "headers"], source.repo, "headers"),
             (["make", "-k", *kvm_vars, "-j2", *[str(out_dir / paths[n]) for n in in_tree]], kvm_dir, "kvm selftests")]
    lines: list[str] = []
    with log_path.open("w", buffering=1) as log:
        for argv, cwd, phase in steps:
            progress.set_phase(phase)
            log.write("$ " + " ".join(argv) + "\n")
            start = len(lines)

            def on_line(line: str) -> None:
                lines.append(line)
                log.write(line + "\n")

            rc = proc.stream(argv, on_line=on_line, cwd=cwd, env=env, timeout=3600)
            if rc != 0 and phase == "headers":
                raise BuildFailed(f"KVM selftests: make headers failed (exit {rc})", first_errors(lines), str(log_path))
            if rc != 0:
                errors = first_errors(lines[start:])
                for n in in_tree:
                    if not (out_dir / paths[n]).is_file():
                        unavailable[n] = f"did not build on this tree (make exit {rc}): " + (first_error_of(n, lines[start:]) or next(
                            (e.strip() for e in errors if "error" in e), errors[0].strip() if errors else "see " + str(log_path)))
        partial = SelftestsBuild(key, out_dir, False, {"headers": str(hdrs / "usr/include")})
        for n in extra:
            reason = _build_unlisted(source, partial, tc, n, log)
            if reason:
                unavailable[n] = reason
    paths.update({n: n for n in extra})
    built = [n for n in dict.fromkeys([*in_tree, *extra]) if n not in unavailable and (out_dir / paths[n]).is_file()]
    digests = {n: sha256_file(out_dir / paths[n]) for n in built}
    meta = {"key": key, "source": source.identity, "content_id": content_id, "toolchain": tc.describe(),
            "headers": str(hdrs / "usr/include"), "binaries_sha256": digests,
            "listed_for_arm64": in_tree, "suite": in_tree, "paths": paths,
            "settings_timeout": settings_timeout(kvm_dir), "compiled_outside_the_makefile": [n for n in extra if n in digests],
            "unavailable": unavailable, "duration_s": round(time.monotonic() - t0, 2)}
    write_suite_files(out_dir, kvm_dir, in_tree, built, unavailable)
    (out_dir / "metadata.json").write_text(json.dumps(meta, indent=2))
    progress.done(f"built {len(built)}/{len(in_tree) + len(extra)} in {meta['duration_s']} s -> {out_dir}"
                  + (f"; unavailable: {', '.join(unavailable)}" if unavailable else ""))
    return SelftestsBuild(key, out_dir, False, meta)


# What guest/workloads/kselftest-kvm.sh reads next to the tests, named as an
# installed kselftest directory names them.
SUITE_FILES = ("kselftest-list.txt", "unavailable.txt", "settings")


def write_suite_files(out_dir: Path, kvm_dir: Path, suite: list[str], built: list[str], unavailable: dict[str, str]) -> None:
    """kselftest-list.txt ("kvm:NAME" per built test, Makefile order), unavailable.txt
    ("NAME<TAB>why", one line each) and the tree's settings file."""
    (out_dir / "kselftest-list.txt").write_text("".join(f"kvm:{n}\n" for n in suite if n in built))
    (out_dir / "unavailable.txt").write_text(
        "".join(f"{n}\t{' '.join(unavailable[n].split())}\n" for n in suite if n in unavailable))
    settings = kvm_dir / "settings"
    (out_dir / "settings").write_text(settings.read_text() if settings.is_file() else "")


def _build_unlisted(source: PreparedSource, partial: SelftestsBuild, tc: Toolchain, name: str, log) -> str | None:
    """Compile a test the tree's Makefile does not list for arm64 against the
    library it built; None on success, else the reason it is unavailable."""
    from orchestrator.kernel.guest_programs import compile_against_library, first_reason  # guest_programs imports this module
    kvm_dir = source.repo / "tools/testing/selftests/kvm"
    try:
        compile_against_library(source, partial, tc, kvm_dir / f"{name}.c", partial.out_dir / name, log)
    except BuildFailed as exc:
        first = first_reason(exc.first_errors)
        return f"not built for arm64 by this tree's Makefile, and does not compile against its library: {first or exc}"
    except UserError as exc:  # the library objects themselves are missing
        return f"not built for arm64 by this tree's Makefile; {exc.message}"
    return None
