"""`orchestrator` command line: a thin shim over the Python API.

Exit status: 0 success, 1 the thing under test failed (patch did not apply,
build error, failed verdict), 2 usage or infrastructure error.  run-matrix,
merge and report judge a set of cells by one rule (results.exit_status): 1 if
any cell failed, else 2 if any cell had an error or did not run, else 0.
"""
from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from orchestrator.errors import BuildFailed, UserError

EXIT_OK, EXIT_FAIL, EXIT_INFRA = 0, 1, 2


def _add_build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="kernel source: a tarball (default: Debian's linux-source-6.12), "
                   "PATH@REF for a git tree at a ref, or PATH for your work tree as it is")
    p.add_argument("--series", type=Path, help="patch series: a directory (quilt `series` file or *.patch), an mbox, or one mail")
    p.add_argument("--variant", help="named variant from SERIES/variants.yaml (e.g. baseline, v4, v4-fixed)")
    p.add_argument("--config-set", help="config set from kernel_configs/sets.yaml or a comma list of fragments (default: evidence)")
    p.add_argument("-j", "--jobs", type=int, help="make -j (default: number of CPUs)")


def cmd_doctor(args: argparse.Namespace) -> int:
    from orchestrator import hostdeps
    checks = hostdeps.doctor()
    cmds = hostdeps.install_commands(checks)
    if cmds:
        print("\nto install what is missing (as root):")
        for c in cmds:
            print("  " + " ".join(c))
        return EXIT_INFRA
    return EXIT_OK


def cmd_install_deps(args: argparse.Namespace) -> int:
    from orchestrator import hostdeps
    return hostdeps.install()


def _build(req):
    """build_variant, or the exit status after reporting why the variant did not build."""
    from orchestrator.kernel.variant_build import SeriesDidNotApply, build_variant
    try:
        return build_variant(req)
    except SeriesDidNotApply as exc:
        print(exc.result.report())
        return EXIT_FAIL
    except BuildFailed as exc:
        print(f"BUILD FAILED: {exc}", file=sys.stderr)
        return EXIT_FAIL


def cmd_build(args: argparse.Namespace) -> int:
    from orchestrator.kernel.variant_build import BuildRequest
    req = BuildRequest(source=args.source, series=args.series, variant=args.variant, config_set=args.config_set,
                       jobs=args.jobs, per_patch=args.per_patch, selftests=not args.no_selftests, prefix=args.prefix)
    vb = _build(req)
    if isinstance(vb, int):
        return vb
    if vb.apply is not None:
        print(vb.apply.report())
    for pb in vb.per_patch:
        status = "builds" if pb.ok else "BREAKS THE BUILD"
        print(f"  patch {pb.index}: {status}: {pb.subject}")
        for w in pb.new_warnings:
            print(f"      new warning {w['file']}:{w['line']}: {w['message']}")
        for line in pb.error:
            print(f"      {line}")
    k = vb.kernel
    print(f"variant {vb.variant}: kernel {'cache hit' if k.cache_hit else 'built'} key {k.key}")
    print(f"  Image      {k.image}")
    print(f"  vmlinux    {k.vmlinux}")
    print(f"  .config    {k.config}")
    print(f"  log        {k.log}")
    print(f"  metadata   {k.out_dir / 'metadata.json'}")
    if vb.selftests is not None:
        print(f"  selftests  {vb.selftests.out_dir}")
    if args.json:
        print(json.dumps({"variant": vb.variant, "kernel": str(k.out_dir), "key": k.key,
                          "selftests": str(vb.selftests.out_dir) if vb.selftests else None}))
    return EXIT_FAIL if any(not pb.ok for pb in vb.per_patch) else EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    """Apply a series to a scratch commit of the source and print the per-patch report."""
    from orchestrator.kernel.apply import check_series_applies
    result = check_series_applies(args.series, args.source)
    print(result.report())
    return EXIT_OK if result.ok else EXIT_FAIL


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected i/N, e.g. 1/3") from None
    return i, n


def cmd_run_matrix(args: argparse.Namespace) -> int:
    from orchestrator.matrix.spec import load_matrix, shard
    from orchestrator.matrix.options import RunOptions, default_jobs
    from orchestrator.matrix.scheduler import run_cells
    from orchestrator.target.base import load_target
    matrix = load_matrix(args.matrix)
    target = args.target or matrix.target  # --target wins over the matrix's `target:`
    load_target(target)  # an unknown name is an error with the closest one, before anything is built
    cells = matrix.cells
    if sh := _parse_shard(args.shard):
        cells = shard(cells, *sh)
    if args.only:
        known = {c.key for c in cells}
        unknown = [k for k in args.only if k not in known]
        if unknown:
            raise UserError(f"--only: no cell {unknown[0]!r} in {matrix.path}", hint="list cells with --list")
        cells = [c for c in cells if c.key in set(args.only)]
    if args.list:
        if args.format == "json":
            print(json.dumps({"matrix": matrix.name, "shard": args.shard, "cells": [c.to_json() for c in cells]}, indent=1))
        else:
            for c in cells:
                print(c.key)
        return EXIT_OK
    if args.results is None:
        from orchestrator.paths import safe_name
        # The name comes from the matrix file and becomes a directory: no "../x", no "/x".
        safe_name(matrix.name, what=f"matrix name in {matrix.path} (it names the results directory results/NAME)")
    results = args.results or Path("results") / matrix.name
    from orchestrator.reports.kcidb import KcidbOptions
    KcidbOptions.parse(args.kcidb_origin)  # a bad origin is an error before anything is built
    opts = RunOptions(results_dir=results.resolve(), matrix_arg=args.matrix or "default", resume=args.resume,
                      jobs=args.jobs or default_jobs(), kcidb_origin=args.kcidb_origin, target=target)
    return run_cells(matrix, cells, opts)


def cmd_merge(args: argparse.Namespace) -> int:
    from orchestrator.reports.offline import merge_runs
    r = merge_runs(args.dirs, args.out)
    print(r.headline)
    print(f"merged {r.cells} cell(s) from {len(args.dirs)} dir(s) into {args.out}", file=sys.stderr)
    return r.status


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.reports.offline import rerender_run
    out = args.out or args.results
    r = rerender_run(args.results, out)
    print(r.headline)
    print(f"wrote {out}/junit.xml, {out}/summary.md, {out}/report.html from {r.cells} cell record(s)", file=sys.stderr)
    return r.status


def cmd_compare(args: argparse.Namespace) -> int:
    from orchestrator.reports.offline import compare_runs
    c = compare_runs(args.a, args.b, args.by)
    print(c.full if args.full else c.headline)
    if args.markdown:
        args.markdown.write_text(c.full)
    return EXIT_OK


def cmd_between_runs(args: argparse.Namespace) -> int:
    from orchestrator.reports.replication import between_runs
    text = between_runs(args.results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return EXIT_OK


def cmd_boot(args: argparse.Namespace) -> int:
    import shlex
    from orchestrator.target.local import LocalTarget
    from orchestrator.vm.machine import shape_by_name
    from orchestrator.vm.nested_kvm import check_nested_kvm
    from orchestrator.kernel.variant_build import BuildRequest
    req = BuildRequest(source=args.source, series=args.series, variant=args.variant, config_set=args.config_set, jobs=args.jobs)
    vb = _build(req)
    if isinstance(vb, int):
        return vb
    shape = shape_by_name(args.machine)
    workdir = (args.workdir or Path("results") / "boot" / vb.variant).resolve()
    # The local target's boot, as a cell's guest job uses it (by hand here).
    with LocalTarget().session(shape, vb.kernel.image, workdir=workdir, files=vb.guest_files(),
                               cmdline_extra=args.append or "") as s:
        argv = (workdir / "qemu-argv.txt").read_text().split("\n") if (workdir / "qemu-argv.txt").exists() else []
        print("QEMU: " + shlex.join([a for a in argv if a]), file=sys.stderr)
        print(f"console log: {workdir / 'console.log'}", file=sys.stderr)
        if args.check_kvm:
            kvm = check_nested_kvm(lambda script: s.shell.run(script, timeout=120))
            print(f"nested KVM: {'ok' if kvm.ok else 'FAILED'} mode={kvm.mode} {kvm.reason}", file=sys.stderr)
            if not kvm.ok:
                return EXIT_FAIL
        if args.shell:
            print("attached to the guest console; exit the shell or press Ctrl-] to stop", file=sys.stderr)
            how = s.console.interact()  # exiting the shell ends the session, like Ctrl-]
            print({"shell-exit": "the shell exited: powering the guest off", "escape": "Ctrl-]: powering the guest off",
                   "qemu-exit": "QEMU exited"}[how], file=sys.stderr)
            return EXIT_OK
        if args.exec:
            status, out = s.shell.run(args.exec, timeout=args.timeout)
            sys.stdout.write(out)
            return status
    return EXIT_OK


def cmd_bisect(args: argparse.Namespace) -> int:
    from orchestrator.bisect.command import run
    return run(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="orchestrator", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="list host prerequisites: present, missing, versions")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("install-deps", help="install missing host packages (as root) or print the commands")
    p.set_defaults(func=cmd_install_deps)

    p = sub.add_parser("build", help="build an arm64 kernel (and KVM selftests) for a source + series variant")
    _add_build_args(p)
    p.add_argument("--per-patch", action="store_true", help="also build every prefix of the series; report new warnings per patch")
    p.add_argument("--no-selftests", action="store_true", help="skip the KVM selftests build")
    p.add_argument("--prefix", type=int, metavar="K", help="build only the series' first K patches (a bisection step)")
    p.add_argument("--json", action="store_true", help="also print a JSON line with the artifact paths")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("apply", help="check whether a series applies to a source; per-patch report")
    p.add_argument("series", type=Path)
    p.add_argument("--source")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("boot", help="build if needed, boot under QEMU at EL2, run a command or attach a shell")
    _add_build_args(p)
    p.add_argument("--machine", default="default", help="machine shape (machines/*.yaml)")
    p.add_argument("--exec", help="run this command in the guest and exit with its status")
    p.add_argument("--shell", action="store_true", help="attach your terminal to the guest console")
    p.add_argument("--check-kvm", action="store_true", help="verify nested KVM before running anything")
    p.add_argument("--append", help="extra kernel command line")
    p.add_argument("--timeout", type=float, default=600.0, help="--exec time limit in seconds")
    p.add_argument("--workdir", type=Path, help="where the console log goes (default results/boot/VARIANT)")
    p.set_defaults(func=cmd_boot)

    p = sub.add_parser("run-matrix", help="run a matrix of variants x machines x workloads (./run-matrix)")
    p.add_argument("--matrix", help="matrix name (matrices/NAME.yaml) or path; default: default")
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--shard", help="run shard i of N (i/N), deterministic and balanced")
    p.add_argument("--only", action="append", help="run only this cell key (repeatable)")
    p.add_argument("--resume", action="store_true", help="skip cells whose inputs and results are already present")
    p.add_argument("--results", type=Path, help="results directory (default results/MATRIX)")
    p.add_argument("-j", "--jobs", type=int, help="cells at once (default from cores and memory)")
    p.add_argument("--kcidb-origin", help="KCIDB origin of kcidb.json, optionally ORIGIN:ID_PREFIX (default arm64_orchestrator)")
    p.add_argument("--target", help="where the guests run: targets/NAME.yaml (default: the matrix's target:, else local)")
    p.set_defaults(func=cmd_run_matrix)

    p = sub.add_parser("merge", help="combine shard results into one JUnit + report")
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("report", help="re-render junit.xml, summary.md and report.html of a results directory (runs nothing)")
    p.add_argument("results", type=Path, help="a run-matrix --results directory (matrix.json + cells/)")
    p.add_argument("--out", type=Path, help="write the files here instead of into RESULTS")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="compare two results directories cell by cell (e.g. last week's run and today's)")
    p.add_argument("a", type=Path, metavar="RESULTS_A")
    p.add_argument("b", type=Path, metavar="RESULTS_B")
    p.add_argument("--by", default="kernel", choices=("kernel", "variant", "config_set", "machine"),
                   help="the axis that differs: kernel (default: same cell inputs, a different build or day), "
                        "or variant / config_set / machine (cells matched on every other axis)")
    p.add_argument("--full", action="store_true", help="print the full comparison tables and cells, not just the headline")
    p.add_argument("--markdown", type=Path, help="also write the full comparison as markdown to this file")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("between-runs", help="pool the same comparisons over independent runs: per-run intervals, "
                                            "between-run variance, what survives it (docs/statistics.md)")
    p.add_argument("results", type=Path, nargs="+", metavar="RESULTS", help="two or more run-matrix --results directories")
    p.add_argument("--markdown", type=Path, help="also write the report to this file")
    p.set_defaults(func=cmd_between_runs)

    p = sub.add_parser("bisect", help="find the first patch of a series whose prefix fails a check (or bisect a run's failures)")
    from orchestrator.bisect.command import add_arguments
    add_arguments(p)
    p.set_defaults(func=cmd_bisect)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INFRA
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"error: no space left on device{where}\n  how to fix: free space (the cache is under "
              "$XDG_CACHE_HOME/arm64-orchestrator)", file=sys.stderr)
        return EXIT_INFRA


if __name__ == "__main__":
    sys.exit(main())
