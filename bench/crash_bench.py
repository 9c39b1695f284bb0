#!/usr/bin/env python3
"""Crash classifier benchmark: throughput and memory on a large console, and
titles on the captured corpus.  Not a test: results go to bench/README.md.

    .venv/bin/python bench/crash_bench.py [--mb 100] [--reports 50]

1. Corpus: every log of tests/fixtures/crashes/ and tests/fixtures/evidence/
   console-*.log is classified; titles are compared with expected.yaml.
2. Synthetic console: `--mb` MB of real boot noise (console-boot-clean.log with
   fresh timestamps, repeated) with `--reports` real reports (from the corpus
   logs) sprinkled in at random places, written to a temporary file.  Each of
   two sizes (a quarter and the whole) is classified in a child process that
   reports wall time and peak RSS: same peak RSS for both sizes = constant memory.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.parsers import crashlog  # noqa: E402

CRASHES = ROOT / "tests" / "fixtures" / "crashes"
EVIDENCE = ROOT / "tests" / "fixtures" / "evidence"


def corpus() -> dict:
    import yaml
    expected = yaml.safe_load((CRASHES / "expected.yaml").read_text()) if (CRASHES / "expected.yaml").exists() else {}
    right = total = 0
    rows = []
    for path in sorted(CRASHES.glob("*.log")):
        got = crashlog.scan_file(path)
        want = [w["title"] for w in (expected.get(path.name) or {}).get("reports", [])]
        titles = [c.title for c in got]
        total += len(want)
        right += sum(1 for a, b in zip(titles, want) if a == b) if len(titles) == len(want) else 0
        rows.append((path.name, titles))
    return {"logs": len(rows), "expected_reports": total, "titles_equal": right, "rows": rows}


def report_blocks() -> list[bytes]:
    """Real reports: the excerpt of every report in the captured logs."""
    blocks = []
    for path in [*sorted(CRASHES.glob("*.log")), *sorted(EVIDENCE.glob("console-*.log"))]:
        for c in crashlog.scan_file(path):
            blocks.append((c.excerpt + "\n").encode())
    return blocks


def write_console(path: Path, mb: int, n_reports: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    noise = [ln.split("]", 1)[-1] for ln in (EVIDENCE / "console-boot-clean.log").read_text().splitlines()]
    blocks = report_blocks()
    target = mb << 20
    at = sorted(rng.randrange(target) for _ in range(n_reports))
    written, t, k = 0, 0.0, 0
    with open(path, "wb") as f:
        while written < target:
            buf = []
            for ln in noise:
                t += 0.000137
                buf.append(f"[{t:12.6f}]{ln}\n")
            data = "".join(buf).encode()
            while k < len(at) and at[k] < written + len(data):
                data += blocks[k % len(blocks)]
                k += 1
            f.write(data)
            written += len(data)
    return k


def scan_child(path: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    got = crashlog.scan_file(path)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"wall_s": wall, "reports": len(got), "rss_before_kb": before, "rss_peak_kb": peak,
                      "titles": sorted({c.title for c in got})}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--reports", type=int, default=50)
    ap.add_argument("--scan", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scan:
        scan_child(args.scan)
        return
    c = corpus()
    print(f"corpus: {c['logs']} logs, {c['titles_equal']}/{c['expected_reports']} titles equal to expected.yaml")
    for name, titles in c["rows"]:
        print(f"  {name}: {titles}")
    with tempfile.TemporaryDirectory() as tmp:
        for mb, n in ((args.mb // 4, args.reports // 4), (args.mb, args.reports)):
            path = Path(tmp) / f"console-{mb}.log"
            sprinkled = write_console(path, mb, n)
            size = path.stat().st_size
            out = subprocess.run([sys.executable, __file__, "--scan", str(path)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout)
            print(f"synthetic {size / 2**20:.0f} MiB, {sprinkled} reports sprinkled: {r['reports']} found, "
                  f"{size / 2**20 / r['wall_s']:.0f} MiB/s ({r['wall_s']:.2f} s), "
                  f"peak RSS {r['rss_peak_kb'] / 1024:.0f} MiB (at start {r['rss_before_kb'] / 1024:.0f} MiB)")
            path.unlink()


if __name__ == "__main__":
    main()
