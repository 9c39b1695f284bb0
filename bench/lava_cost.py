"""What LAVA costs per cell: the same cell (smoke's baseline page-idle) through
the local target, through lava-run and through the local LAVA server, in one
run; prints each cell's wall time (started -> ended in its record, the cached
build excluded) and the ratios.  Root only.  docs/lava.md records a run.

    .venv/bin/python bench/lava_cost.py OUTDIR
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from orchestrator.target.lava.instance import LOCAL_PORT, start_local_lab
from orchestrator.vm.machine import shape_by_name

ROOT = Path(__file__).resolve().parents[1]
CELL = "baseline.evidence.default.page-idle~40333e.r1"


def run(target: str, out: Path, env: dict[str, str] | None = None) -> float:
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run-matrix", "--matrix", "smoke", "--only",
                          CELL, "--target", target, "--results", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        raise SystemExit(f"{target}: run-matrix failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    rec = json.loads(next(out.glob("cells/*/cell.json")).read_text())
    build = sum(s["seconds"] for s in rec["steps"] if s["name"] in ("build", "config verification")
                or s["name"].startswith("apply "))
    return rec["ended"] - rec["started"] - build


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    times = {"local": run("local", out / "local"), "lava-run": run("lava-local", out / "lava-run")}
    with start_local_lab(out / "lab", shape_by_name("default"), port=LOCAL_PORT) as lab:
        times["lava-server"] = run("lava-server-local", out / "lava-server", {**os.environ, "ORCH_LAVA_TOKEN": lab.token})
    for name, secs in times.items():
        print(f"{name:12s} {secs:7.1f} s  x{secs / times['local']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
