"""`orchestrator bisect`: its arguments (light to import: argparse only) and
the call into the stage; cli.py stays a shim."""
from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="?", type=Path,
                   help="a finished run-matrix results directory: bisect each failing cell on the check it failed first")
    p.add_argument("--series", type=Path, help="patch series (directory, mbox, mail) to bisect")
    p.add_argument("--variant", help="named variant of SERIES/variants.yaml (default: every patch of SERIES)")
    p.add_argument("--source", help="kernel source (default: Debian's linux-source-6.12)")
    p.add_argument("--config-set", default="evidence")
    p.add_argument("--machine", default="default")
    p.add_argument("--workload", default="page-idle")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="workload parameter (repeatable)")
    p.add_argument("--check", help="build | boot | nested-kvm | workload | testcase:NAME | crash:TITLE | "
                                   "expect:NAME | metric:EXPR (fails when it holds)")
    p.add_argument("--repeats", type=int, default=1, help="runs per prefix for a flaky check (default 1)")
    p.add_argument("--mode", default="majority", choices=("majority", "any"),
                   help="fold repeats: majority, or any (one failing run makes the prefix bad)")
    p.add_argument("--good", type=int, default=0, help="a prefix known to pass (default 0: the bare source)")
    p.add_argument("--bad", type=int, help="a prefix known to fail (default: the whole series)")
    p.add_argument("--no-verify", action="store_true", help="do not rerun the prefixes before and at the answer")
    p.add_argument("--exhaustive", action="store_true",
                   help="afterwards also build and run every other prefix: the cost of not bisecting, measured")
    p.add_argument("--out", type=Path, help="bisection directory (default results/bisect/SERIES); the same "
                                            "command again resumes there")


def run(args: argparse.Namespace) -> int:
    from orchestrator.bisect.checks import parse_check
    from orchestrator.bisect.run import BisectRequest, Bisection
    from orchestrator.bisect.runner import Target
    if args.results is not None:
        from orchestrator.bisect.failures import bisect_failures
        dirs = bisect_failures(args.results, repeats=args.repeats, mode=args.mode, verify=not args.no_verify)
        for d in dirs:
            print(d / "bisect.md")
        return 0
    if args.series is None or not args.check:
        raise UserError("orchestrator bisect needs --series and --check (or a results directory)",
                        hint="e.g. orchestrator bisect --series my-series/ --check 'crash:WARNING in kvm_age_gfn'")
    params = []
    for item in args.param:
        k, sep, v = item.partition("=")
        if not sep:
            raise UserError(f"--param {item!r}: expected K=V", hint="e.g. --param bytes=4M")
        params.append((k, v))
    target = Target(args.source, args.series, args.variant, args.config_set, args.machine, args.workload,
                    tuple(sorted(params)))
    out = args.out or Path("results") / "bisect" / (args.series.resolve().name + (f"-{args.variant}" if args.variant else ""))
    req = BisectRequest(target, parse_check(args.check), out, repeats=args.repeats, mode=args.mode, good=args.good,
                        bad=args.bad, verify=not args.no_verify, exhaustive=args.exhaustive)
    b = Bisection(req)
    r = b.run()
    print((b.dir / "bisect.md").read_text())
    print(f"reports: {b.dir}/bisect.md, {b.dir}/junit.xml, {b.dir}/kcidb.json")
    return 0 if r.state == "found" else 1 if r.state == "ambiguous" else 2
