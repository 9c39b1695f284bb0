"""KVM selftests for arm64 from the same tree, statically linked, keyed and cached.

They are the inner-guest workloads.  The library objects they leave behind
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

RECIPE_VERSION = "1"
# What the workloads run; more can be added when a workload needs them.
WANTED = ("access_tracking_perf_test", "demand_paging_test", "dirty_log_perf_test", "kvm_create_max_vcpus")


@dataclass
class SelftestsBuild:
    key: str
    out_dir: Path  # contains the binaries and lib/ objects
    cache_hit: bool
    metadata: dict

    def binary(self, name: str) -> Path:
        return self.out_dir / name

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


def tree_test_list(kvm_dir: Path, make_vars: list[str], env: dict[str, str], out_dir: Path) -> set[str]:
    """The test names the tree's selftests Makefile builds for arm64."""
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
    return {Path(w).name for w in res.stdout.split()}


def _valid(out_dir: Path) -> dict | None:
    try:
        meta = json.loads((out_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        return None
    for name, digest in meta.get("binaries_sha256", {}).items():
        p = out_dir / name
        if not p.is_file() or sha256_file(p) != digest:
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
    listed = tree_test_list(kvm_dir, kvm_vars, env, out_dir)
    in_tree = [n for n in WANTED if n in listed]
    extra = [n for n in WANTED if n not in listed and (kvm_dir / f"{n}.c").is_file()]
    unavailable = {n: "not in this tree's KVM selftests (no tools/testing/selftests/kvm/{n}.c)".format(n=n)
                   for n in WANTED if n not in listed and n not in extra}
    # `headers` (not headers_install) needs no rsync.  -k: one test that does
    # not build leaves the others (and the library) built.
    steps = [(["make", f"O={hdrs}", "ARCH=arm64", *cross, "headers"], source.repo, "headers"),
             (["make", "-k", *kvm_vars, "-j2", *[str(out_dir / n) for n in in_tree]], kvm_dir, "kvm selftests")]
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
                    if not (out_dir / n).is_file():
                        unavailable[n] = f"did not build on this tree (make exit {rc}): " + next(
                            (e.strip() for e in errors if "error" in e), errors[0].strip() if errors else "see " + str(log_path))
        partial = SelftestsBuild(key, out_dir, False, {"headers": str(hdrs / "usr/include")})
        for n in extra:
            reason = _build_unlisted(source, partial, tc, n, log)
            if reason:
                unavailable[n] = reason
    built = [n for n in WANTED if n not in unavailable and (out_dir / n).is_file()]
    digests = {n: sha256_file(out_dir / n) for n in built}
    meta = {"key": key, "source": source.identity, "content_id": content_id, "toolchain": tc.describe(),
            "headers": str(hdrs / "usr/include"), "binaries_sha256": digests,
            "listed_for_arm64": in_tree, "compiled_outside_the_makefile": [n for n in extra if n in digests],
            "unavailable": unavailable, "duration_s": round(time.monotonic() - t0, 2)}
    (out_dir / "metadata.json").write_text(json.dumps(meta, indent=2))
    progress.done(f"built {len(built)}/{len(WANTED)} in {meta['duration_s']} s -> {out_dir}"
                  + (f"; unavailable: {', '.join(unavailable)}" if unavailable else ""))
    return SelftestsBuild(key, out_dir, False, meta)


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
