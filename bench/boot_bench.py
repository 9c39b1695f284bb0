#!/usr/bin/env python3
"""Boot and command latency: what the orchestrator costs on top of QEMU.

    python bench/boot_bench.py [--kernel IMAGE] [--runs 5] [--ssh-runs 20]   (default: the pipeline's baseline build)
    python bench/boot_bench.py --kernel ... --cpu max,pauth-impdef=on --cpu max,sve=off,pauth=off
    python bench/boot_bench.py --step-runs 6          (only the run-matrix boot step, see below)

Measures, with the same QEMU argument list:
  orchestrated  QEMU start -> ready marker seen by GuestConsole (pty, log file, stages)
  raw           QEMU start -> ready marker seen by a plain pipe reader
(runs interleaved so that background load hits both alike; median and ratio),
then one SSH guest: median round trip of `true` over SSH and over the serial
console.  With --cpu options it instead compares TCG CPU models: boot-to-ready
per model (interleaved) and whether nested KVM still works with it.
With --step-runs N it times what run-matrix reports as the `boot` step, the
same way matrix.cell.run_cell does (start_guest with the build's guest files and
SSH: guest image, QEMU, ready marker, SSH login), against that boot's own QEMU
start -> ready stage (the cell's boot.ready_s); the first run is reported
apart (it may build the base image), the ratio is over the rest.
The host's load average is printed: these numbers are only comparable on a
quiet machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator import proc# noqa: E402
from orchestrator.vm.console import GuestConsole  # noqa: E402
from orchestrator.vm.session import start_guest  # noqa: E402
from orchestrator.vm.image import build_image  # noqa: E402
from orchestrator.vm.machine import MachineShape, render_qemu_argv, shape_by_name  # noqa: E402
from orchestrator.vm.nested_kvm import PROBE_GUEST_PATH, build_kvm_probe, check_nested_kvm  # noqa: E402

READY = b"ORCH-READY uptime="


def orchestrated_boot(argv: list[str], log: Path) -> float:
    start = time.monotonic()
    with GuestConsole(argv, log) as con:
        con.wait_ready()
        ready = time.monotonic() - start
        con.poweroff(20)
    return ready


def raw_boot(argv: list[str]) -> float:
    """QEMU with stdout on a pipe; read until the marker; no pty, no log, no parsing."""
    start = time.monotonic()
    with proc.managed(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT) as qemu:
        seen = b""
        while READY not in seen:
            chunk = os.read(qemu.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("QEMU exited before the ready marker")
            seen = seen[-64:] + chunk
        return time.monotonic() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def bench_overhead(shape: MachineShape, kernel: Path, initrd: Path, runs: int, tmp: Path) -> dict:
    argv = render_qemu_argv(shape, kernel, initrd)
    orch, raw = [], []
    for i in range(runs):
        # Alternate which goes first, so warm-up and drift hit both alike.
        if i % 2:
            raw.append(raw_boot(argv))
            orch.append(orchestrated_boot(argv, tmp / f"orch-{i}.log"))
        else:
            orch.append(orchestrated_boot(argv, tmp / f"orch-{i}.log"))
            raw.append(raw_boot(argv))
        print(f"  run {i + 1}: orchestrated {orch[-1]:.2f} s, raw {raw[-1]:.2f} s", flush=True)
    return {"orchestrated_s": orch, "raw_s": raw, "orchestrated_median_s": median(orch),
            "raw_median_s": median(raw), "ratio": median(orch) / median(raw)}


def bench_commands(shape: MachineShape, kernel: Path, runs: int, tmp: Path) -> dict:
    with start_guest(shape, kernel, workdir=tmp / "ssh") as g:
        assert g.ssh is not None
        ssh_t, serial_t = [], []
        for _ in range(runs):
            ssh_t.append(g.ssh.run("true").duration)
            serial_t.append(g.console.run("true").duration)
    return {"ssh_true_s": ssh_t, "ssh_true_median_s": median(ssh_t),
            "serial_true_s": serial_t, "serial_true_median_s": median(serial_t)}


def bench_cpus(shape: MachineShape, kernel: Path, initrd: Path, cpus: list[str], runs: int,
               tmp: Path) -> dict:
    times: dict[str, list[float]] = {cpu: [] for cpu in cpus}
    nested: dict[str, dict] = {}
    for i in range(runs):
        # Rotate the order each round: the first boot of a round tends to be slower.
        for cpu in cpus[i % len(cpus):] + cpus[:i % len(cpus)]:
            argv = render_qemu_argv(dataclasses.replace(shape, cpu=cpu), kernel, initrd)
            start = time.monotonic()
            with GuestConsole(argv, tmp / f"cpu-{i}.log") as con:
                con.wait_ready()
                times[cpu].append(time.monotonic() - start)
                if cpu not in nested:
                    check = check_nested_kvm(lambda c: (lambda r: (r.exit_status, r.output))(
                        con.run(c, timeout=120)))
                    nested[cpu] = {"ok": check.ok, "mode": check.mode, "reason": check.reason}
                con.poweroff(20)
            print(f"  run {i + 1} {cpu}: {times[cpu][-1]:.2f} s", flush=True)
    return {cpu: {"boot_s": t, "median_s": median(t), "nested_kvm": nested[cpu]}
            for cpu, t in times.items()}


def bench_boot_step(shape: MachineShape, runs: int, tmp: Path) -> dict:
    from orchestrator.paths import PATCHES_DIR
    from orchestrator.kernel.variant_build import BuildRequest, build_variant
    vb = build_variant(BuildRequest(series=PATCHES_DIR, variant="baseline"))
    extra = vb.guest_files()
    step, ready, rebuilt = [], [], []
    for i in range(runs):
        t0 = time.monotonic()
        with start_guest(shape, vb.kernel.image, workdir=tmp / f"step-{i}", extra=extra) as g:
            step.append(time.monotonic() - t0)  # where matrix.cell.run_cell ends the boot step
            ready.append(g.boot.stages["ready"])
            rebuilt.append(g.image.rebuilt)
            ssh = g.ssh is not None
        print(f"  run {i + 1}: boot step {step[-1]:.2f} s, QEMU start->ready {ready[-1]:.2f} s, "
              f"ssh {'up' if ssh else 'DOWN'}, base image {'rebuilt' if rebuilt[-1] else 'cached'}", flush=True)
    rest = slice(1, None) if runs > 1 else slice(None)
    return {"step_s": step, "ready_s": ready, "base_rebuilt": rebuilt,
            "step_median_s": median(step[rest]), "ready_median_s": median(ready[rest]),
            "ratio": median(step[rest]) / median(ready[rest]),
            "guest_files": len(extra), "image_bytes": g.image.base.stat().st_size if g.image.base else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", type=Path, default=None, help="kernel Image (default: build/cache baseline)")
    ap.add_argument("--shape", default="default")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ssh-runs", type=int, default=20)
    ap.add_argument("--cpu", action="append", default=[],
                    help="compare these TCG CPU models instead (repeatable)")
    ap.add_argument("--step-runs", type=int, default=0,
                    help="only time run-matrix's boot step (with SSH and the build's guest files) N times")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.step_runs:
        results = {"loadavg_before": os.getloadavg()}
        with tempfile.TemporaryDirectory(prefix="boot-bench-") as tmpdir:
            print(f"run-matrix boot step, {args.step_runs} runs:")
            results["boot_step"] = b = bench_boot_step(shape_by_name(args.shape), args.step_runs, Path(tmpdir))
        results["loadavg_after"] = os.getloadavg()
        print(f"first run: boot step {b['step_s'][0]:.2f} s (base image "
              f"{'rebuilt' if b['base_rebuilt'][0] else 'cached'}); then median boot step "
              f"{b['step_median_s']:.2f} s vs QEMU start->ready {b['ready_median_s']:.2f} s: ratio {b['ratio']:.3f}")
        print(f"load average before/after: {results['loadavg_before']} / {results['loadavg_after']}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")
        return 0
    if args.kernel is None:
        from orchestrator.paths import PATCHES_DIR
        from orchestrator.kernel.variant_build import BuildRequest, build_variant
        args.kernel = build_variant(BuildRequest(series=PATCHES_DIR, variant="baseline", selftests=False)).kernel.image

    # No network for boot timing: that is what the overhead and CPU numbers are about.
    shape = dataclasses.replace(shape_by_name(args.shape), network=False)
    initrd = build_image(extra={PROBE_GUEST_PATH: build_kvm_probe()}).path
    results: dict = {"kernel": str(args.kernel), "shape": args.shape,
                     "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="boot-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if args.cpu:
            print(f"CPU models, {args.runs} boots each (interleaved):")
            results["cpu"] = bench_cpus(shape, args.kernel, initrd, args.cpu, args.runs, tmp)
        else:
            print(f"boot to ready, {args.runs} runs each:")
            results["boot"] = bench_overhead(shape, args.kernel, initrd, args.runs, tmp)
            print(f"command round trip, {args.ssh_runs} runs:")
            results["commands"] = bench_commands(shape_by_name(args.shape), args.kernel,
                                                 args.ssh_runs, tmp)
    results["loadavg_after"] = os.getloadavg()

    if "boot" in results:
        b, c = results["boot"], results["commands"]
        print(f"boot-to-ready median: orchestrated {b['orchestrated_median_s']:.2f} s, "
              f"raw {b['raw_median_s']:.2f} s, ratio {b['ratio']:.3f}")
        print(f"`true` median: ssh {c['ssh_true_median_s'] * 1000:.0f} ms, "
              f"serial {c['serial_true_median_s'] * 1000:.0f} ms")
    for cpu, r in results.get("cpu", {}).items():
        nk = r["nested_kvm"]
        print(f"{cpu:32s} median {r['median_s']:.2f} s  nested KVM: "
              f"{'ok ' + str(nk['mode']) if nk['ok'] else 'FAILED: ' + nk['reason']}")
    print(f"load average before/after: {results['loadavg_before']} / {results['loadavg_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
