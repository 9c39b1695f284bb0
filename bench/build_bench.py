#!/usr/bin/env python3
"""Build benchmark: the orchestrator vs tuxmake (+ ccache) on the same config and variants.

Measured in one run on one machine, so the ratios compare like with like:
  ours  cold       baseline in an empty cache (fresh objdir, empty ccache)
  ours  hit        the same request again
  ours  variant    v4 right after baseline (shared objdir: only touched files rebuild)
  tux   cold       tuxmake baseline, fresh build dir, empty ccache
  tux   variant    tuxmake v4 (checked out in the same tree) in a fresh build dir,
                   with the ccache warm from its baseline
Both use the final baseline .config our pipeline produced (tuxmake --kconfig PATH).
Usage: bench/build_bench.py   (two cold builds: ~20 min on 2 cores; run on an idle machine)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str], env: dict, cwd: Path | None = None) -> float:
    t0 = time.monotonic()
    res = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{res.stderr[-3000:]}")
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "build_results.json")
    args = ap.parse_args()
    if shutil.which("tuxmake") is None:
        sys.exit("tuxmake not installed: pip install tuxmake")
    scratch = Path(tempfile.mkdtemp(prefix="build-bench-"))
    env = dict(os.environ, XDG_CACHE_HOME=str(scratch / "cache"))
    orch = [sys.executable, "-m", "orchestrator.cli", "build", "--series", str(ROOT / "patches"), "--no-selftests"]
    results: dict[str, float] = {}
    sys.path.insert(0, str(ROOT))
    os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]
    from orchestrator.kernel.source import SourceSpec, git, prepare
    # Unpacking the tarball into the cache happens once per machine: not timed.
    src = prepare(SourceSpec.parse(None))
    results["ours_cold_baseline_s"] = timed(orch + ["--variant", "baseline"], env)
    results["ours_hit_baseline_s"] = timed(orch + ["--variant", "baseline"], env)
    results["ours_variant_v4_after_baseline_s"] = timed(orch + ["--variant", "v4"], env)

    v4_head = git(src.repo, "rev-parse", "HEAD").strip()  # the last build above was v4
    # tuxmake builds one source tree in fresh build dirs; the variant is checked
    # out in place (only the touched files change), as a developer would.
    tree = scratch / "tree"
    subprocess.run(["git", "clone", "-q", "--shared", str(src.repo), str(tree)], check=True)
    subprocess.run(["git", "-C", str(tree), "checkout", "-q", src.base_commit], check=True)
    base_meta = next(m for m in (scratch / "cache").glob("arm64-orchestrator/builds/out/*/metadata.json")
                     if json.loads(m.read_text()).get("variant") == "baseline")
    config = base_meta.with_name(".config")
    tux_env = dict(env, CCACHE_DIR=str(scratch / "tux-ccache"))
    tux = ["tuxmake", "--runtime", "null", "--wrapper", "ccache", "--target-arch", "arm64",
           "--toolchain", "gcc", "--kconfig", str(config), "-C", str(tree), "kernel"]
    results["tux_cold_baseline_s"] = timed(tux + ["-b", str(scratch / "tb1"), "-o", str(scratch / "to1")], tux_env)
    subprocess.run(["git", "-C", str(tree), "checkout", "-q", v4_head], check=True)
    results["tux_variant_v4_warm_ccache_s"] = timed(tux + ["-b", str(scratch / "tb2"), "-o", str(scratch / "to2")], tux_env)
    r = results
    if "tux_cold_baseline_s" in r:
        r["ratio_cold"] = r["ours_cold_baseline_s"] / r["tux_cold_baseline_s"]
    r["ratio_hit_vs_tux_variant"] = r["ours_hit_baseline_s"] / r["tux_variant_v4_warm_ccache_s"]
    r["ratio_variant"] = r["ours_variant_v4_after_baseline_s"] / r["tux_variant_v4_warm_ccache_s"]
    args.out.write_text(json.dumps(r, indent=2))
    print(json.dumps(r, indent=2))
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
