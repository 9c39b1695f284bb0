"""`orchestrator` command line: a thin shim over the Python API.

Exit status: 0 success, 1 the thing under test failed (patch did not apply,
build error, failed verdict), 2 usage or infrastructure error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import BuildFailed, UserError

EXIT_OK, EXIT_FAIL, EXIT_INFRA = 0, 1, 2


def _add_build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="kernel source: a tarball (default: Debian's linux-source-6.12), "
                   "PATH@REF for a git tree at a ref, or PATH for your work tree as it is")
    p.add_argument("--series", type=Path, help="patch series: a directory (quilt `series` file or *.patch), an mbox, or one mail")
    p.add_argument("--variant", help="named variant from SERIES/variants.yaml (e.g. baseline, v4, v4-fixed)")
    p.add_argument("--config-set", help="config set from kernel_configs/sets.yaml or a comma list of fragments (default: evidence)")
    p.add_argument("-j", "--jobs", type=int, help="make -j (default: number of CPUs)")


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import hostdeps
    checks = hostdeps.doctor()
    cmds = hostdeps.install_commands(checks)
    if cmds:
        print("\nto install what is missing (as root):")
        for c in cmds:
            print("  " + " ".join(c))
        return EXIT_INFRA
    return EXIT_OK


def cmd_install_deps(args: argparse.Namespace) -> int:
    from . import hostdeps
    return hostdeps.install()


def cmd_build(args: argparse.Namespace) -> int:
    from .pipeline import BuildRequest, SeriesDidNotApply, build_variant
    req = BuildRequest(source=args.source, series=args.series, variant=args.variant, config_set=args.config_set,
                       jobs=args.jobs, per_patch=args.per_patch, selftests=not args.no_selftests)
    try:
        vb = build_variant(req)
    except SeriesDidNotApply as exc:
        print(exc.result.report())
        return EXIT_FAIL
    except BuildFailed as exc:
        print(f"BUILD FAILED: {exc}", file=sys.stderr)
        return EXIT_FAIL
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
    from .apply import apply_series
    from .build import locked
    from .series import load_series
    from .source import SourceSpec, prepare
    source = prepare(SourceSpec.parse(args.source))
    if source.in_place:
        raise UserError("`apply` works on a tarball or PATH@REF source, not your own work tree")
    series = load_series(args.series)
    with locked(f"tree-{source.key}"):
        result = apply_series(source.repo, source.base_commit or "HEAD", series)
    print(result.report())
    return EXIT_OK if result.ok else EXIT_FAIL


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
    p.add_argument("--json", action="store_true", help="also print a JSON line with the artifact paths")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("apply", help="check whether a series applies to a source; per-patch report")
    p.add_argument("series", type=Path)
    p.add_argument("--source")
    p.set_defaults(func=cmd_apply)
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


if __name__ == "__main__":
    sys.exit(main())
