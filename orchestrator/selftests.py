"""KVM selftests for arm64 from the same tree, statically linked, keyed and cached.

They are the inner-guest workloads.  The library objects they leave behind
(lib/*.o) also link the project's own C workloads in guest/.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import proc
from .build import first_errors, make_env, sha256_text
from .errors import BuildFailed
from .paths import cache_dir
from .progress import Progress
from .source import PreparedSource, sha256_file
from .toolchain import Toolchain

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
    steps = [
        # `headers` (not headers_install) needs no rsync.
        (["make", f"O={hdrs}", "ARCH=arm64", *cross, "headers"], source.repo),
        # abs_objdir keeps generated headers out of the source tree.
        (["make", "ARCH=arm64", *cross, f"OUTPUT={out_dir}", f"abs_objdir={obj}",
          f"KHDR_INCLUDES=-isystem {hdrs}/usr/include", "EXTRA_CFLAGS=-static", "-j2",
          *[str(out_dir / n) for n in WANTED]], source.repo / "tools/testing/selftests/kvm"),
    ]
    lines: list[str] = []
    with log_path.open("w", buffering=1) as log:
        for argv, cwd in steps:
            progress.set_phase(argv[-1] if len(argv) < 6 else "kvm selftests")
            log.write("$ " + " ".join(argv) + "\n")

            def on_line(line: str) -> None:
                lines.append(line)
                log.write(line + "\n")

            rc = proc.stream(argv, on_line=on_line, cwd=cwd, env=env, timeout=3600)
            if rc != 0:
                raise BuildFailed(f"KVM selftests build failed (exit {rc})", first_errors(lines), str(log_path))
    digests = {n: sha256_file(out_dir / n) for n in WANTED}
    meta = {"key": key, "source": source.identity, "content_id": content_id, "toolchain": tc.describe(),
            "headers": str(hdrs / "usr/include"), "binaries_sha256": digests,
            "duration_s": round(time.monotonic() - t0, 2)}
    (out_dir / "metadata.json").write_text(json.dumps(meta, indent=2))
    progress.done(f"built in {meta['duration_s']} s -> {out_dir}")
    return SelftestsBuild(key, out_dir, False, meta)
