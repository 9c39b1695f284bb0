"""Do two runs of the same matrix give the same results shape?  For every cell
key present in both results directories: the steps (names and statuses), the
per-test results of a suite workload, and the metric keys (vmstat.* counters
that moved and trace rates, which need two surviving trace markers, are
reported apart: they vary from run to run on one target too).  Used for
docs/lava-run/ (a local run against a run through LAVA).

    .venv/bin/python bench/compare_shapes.py RESULTS_A RESULTS_B
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

VARIABLE = ("vmstat.",)


def rate(key: str) -> bool:
    return key.startswith("trace.") and key.endswith(".rate_per_s")


def load(results: Path) -> dict[str, dict]:
    return {d.name: json.loads((d / "cell.json").read_text())
            for d in sorted((results / "cells").iterdir()) if (d / "cell.json").is_file()}


def main(a_dir: str, b_dir: str) -> int:
    a, b = load(Path(a_dir)), load(Path(b_dir))
    common = sorted(set(a) & set(b))
    if not common:
        print("no cell key in both runs")
        return 1
    same = True
    print(f"{len(common)} cell(s) in both runs\n")
    print("| cell | steps (name, status) | suite tests | metric keys | differing keys (run noise) |")
    print("|---|---|---|---|---|")
    for key in common:
        ra, rb = a[key], b[key]
        steps = [(s["name"], s["status"]) for s in ra["steps"]] == [(s["name"], s["status"]) for s in rb["steps"]]
        tests_a = [(t.get("name"), t.get("status")) for t in ra.get("testcases", [])]
        tests_b = [(t.get("name"), t.get("status")) for t in rb.get("testcases", [])]
        ka = {k for k in ra["metrics"] if not k.startswith(VARIABLE)}
        kb = {k for k in rb["metrics"] if not k.startswith(VARIABLE)}
        core = {k for k in ka ^ kb if not rate(k)}
        noise = sorted(k for k in ka ^ kb if rate(k))
        same &= steps and tests_a == tests_b and not core
        tests = f"{len(tests_a)} same" if tests_a == tests_b else f"DIFFER {tests_a} / {tests_b}"
        keys = f"{len(ka & kb)} same" if not core else f"DIFFER: {sorted(core)}"
        print(f"| {key} | {'same' if steps else 'DIFFER'} ({len(ra['steps'])}) | {tests} | {keys} | "
              f"{', '.join(noise) or '-'} |")
    print(f"\n{'same shape' if same else 'shapes DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
