"""What LAVA costs per cell: the same cell (smoke's baseline page-idle, build
cached) through the local target, through lava-run and (--server) through the
local LAVA server, in one run, REPEATS rounds with the targets alternating
(so the host's load drifts over all of them alike).

Per run it records the cell's time (started -> ended in its record, the
build steps taken out: what the target costs) and the whole run-matrix
process's wall time, with /proc/loadavg before and after.  It prints the
medians and each target's ratio to the local one, and writes every run to
OUTDIR/lava_cost.json.  Root only (lava-run).  bench/README.md records a run.

    .venv/bin/python bench/lava_cost.py OUTDIR [--repeats 3] [--server [--port 8030]]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CELL = "baseline.evidence.default.page-idle~40333e.r1"
BUILD_STEPS = ("build", "config verification")


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def run(target: str, out: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    load0, t0 = loadavg(), time.monotonic()
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run-matrix", "--matrix", "smoke", "--only",
                          CELL, "--target", target, "--results", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise SystemExit(f"{target}: run-matrix failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    rec = json.loads(next(out.glob("cells/*/cell.json")).read_text())
    build = sum(s["seconds"] for s in rec["steps"] if s["name"] in BUILD_STEPS or s["name"].startswith("apply "))
    steps = {s["name"]: s["seconds"] for s in rec["steps"]}
    return {"cell_s": rec["ended"] - rec["started"] - build, "process_s": wall, "load_before": load0,
            "load_after": loadavg(), "boot_s": steps.get("boot", 0.0),
            "workload_s": steps.get("workload page-idle", 0.0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--server", action="store_true",
                    help="also through a local LAVA server (its own instance, started and stopped here: instance.py)")
    ap.add_argument("--port", type=int, default=8030, help="that instance's port (not 8000: the tests' one)")
    ap.add_argument("--lab-dir", type=Path, default=Path("/var/tmp/orch-lava-bench"),
                    help="that instance's directory (the lavaserver user must reach it: not under a 0700 one)")
    args = ap.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    targets: dict[str, tuple[str, dict[str, str] | None]] = {"local": ("local", None),
                                                             "lava-run": ("lava-local", None)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    with ExitStack() as stack:
        if args.server:
            from orchestrator.target.lava.instance import start_local_lab
            from orchestrator.vm.machine import shape_by_name
            lab = stack.enter_context(start_local_lab(args.lab_dir, shape_by_name("default"), port=args.port))
            # targets/lava-server-local.yaml: url from ORCH_LAVA_URL, token from ORCH_LAVA_TOKEN
            targets["lava-server"] = ("lava-server-local",
                                      {**os.environ, "ORCH_LAVA_URL": lab.url, "ORCH_LAVA_TOKEN": lab.token})
            runs["lava-server"] = []
        for i in range(args.repeats):
            for name, (target, env) in targets.items():
                r = run(target, args.outdir / f"{name}-{i + 1}", env)
                runs[name].append(r)
                print(f"round {i + 1} {name:12s} cell {r['cell_s']:6.1f} s  process {r['process_s']:6.1f} s  "
                      f"load {r['load_before']:.1f}->{r['load_after']:.1f}", flush=True)
    (args.outdir / "lava_cost.json").write_text(json.dumps(runs, indent=1) + "\n")
    base = statistics.median(r["cell_s"] for r in runs["local"])
    base_p = statistics.median(r["process_s"] for r in runs["local"])
    loads = [x for rs in runs.values() for r in rs for x in (r["load_before"], r["load_after"])]
    print(f"\nmedians of {args.repeats} runs each; host load (1-min) {min(loads):.1f}-{max(loads):.1f}")
    for name, rs in runs.items():
        cell = statistics.median(r["cell_s"] for r in rs)
        proc = statistics.median(r["process_s"] for r in rs)
        print(f"{name:12s} cell {cell:6.1f} s (x{cell / base:.2f})  process {proc:6.1f} s (x{proc / base_p:.2f})  "
              f"+{cell - base:.1f} s per cell")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
