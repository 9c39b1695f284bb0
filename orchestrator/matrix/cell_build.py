"""The kernel stage of a cell: build once per (variant, config set) and turn
the outcome into the cell's first steps (series, apply per patch, config
verification, build).  Bad input is an error; the kernel under test failing
(a patch that does not apply, a dropped option, a compile error) is a failure."""
from __future__ import annotations

import time
from dataclasses import dataclass

from orchestrator.errors import BuildFailed, OptionsDropped, UserError
from orchestrator.kernel.kconfig import load_config_set
from orchestrator.kernel.variant_build import BuildRequest, SeriesDidNotApply, VariantBuild, build_variant
from orchestrator.kernel.variants import resolve as resolve_variant
from orchestrator.matrix.disk_full import disk_full_message, is_disk_full
from orchestrator.matrix.spec import Matrix
from orchestrator.reports.results import ERROR, FAILED, PASSED, SKIPPED, Step


@dataclass
class BuildOutcome:
    steps: list[Step]
    build: VariantBuild | None
    seconds: float = 0.0


def build_cell_kernel(matrix: Matrix, variant: str | None, config_set: str, prefix: int | None = None) -> BuildOutcome:
    """Build once per (variant, config set); the outcome's steps go into every cell using it.
    prefix: only the series' first patches (a bisection step)."""
    t0 = time.monotonic()
    steps: list[Step] = []
    req = BuildRequest(source=matrix.source, series=matrix.series, variant=variant, config_set=config_set, prefix=prefix)
    # Inputs first, each under its own step name: bad input is an error, not a failure.
    for name, check in (("series", lambda: resolve_variant(matrix.series, variant)),
                        ("config verification", lambda: load_config_set(config_set))):
        try:
            check()
        except UserError as exc:
            steps.append(Step(name, ERROR, time.monotonic() - t0, exc.one_line(), excerpt=str(exc)))
            steps.append(Step("build", SKIPPED, 0.0, f"not run: {name} did not pass"))
            return BuildOutcome(steps, None, time.monotonic() - t0)
    try:
        vb = build_variant(req)
    except SeriesDidNotApply as exc:
        for r in exc.result.results:
            status = FAILED if r.status == "failed" else SKIPPED if r.status == "not-attempted" else PASSED
            where = "; ".join(f.describe() for f in r.failures[:3])  # file and hunk
            message = "; ".join(x for x in (r.detail, where) if x) if status != PASSED else ""
            steps.append(Step(f"apply {r.patch.name}", status, 0.0, message,
                              excerpt=exc.result.report() if status == FAILED else ""))
        steps.append(Step("build", SKIPPED, 0.0, "series did not apply"))
        return BuildOutcome(steps, None, time.monotonic() - t0)
    except BuildFailed as exc:
        steps.append(Step("config verification", PASSED))
        first = next((ln.strip() for ln in exc.first_errors if "error:" in ln), "")
        steps.append(Step("build", FAILED, time.monotonic() - t0, str(exc.args[0]) + (f": {first}" if first else ""),
                          excerpt="\n".join(exc.first_errors) + f"\nfull log: {exc.log_path}"))
        return BuildOutcome(steps, None, time.monotonic() - t0)
    except OptionsDropped as exc:  # the config under test failed
        steps.append(Step("config verification", FAILED, time.monotonic() - t0, exc.one_line(), excerpt=str(exc)))
        return BuildOutcome(steps, None, time.monotonic() - t0)
    except UserError as exc:  # missing toolchain, unreadable source ...
        steps.append(Step("build", ERROR, time.monotonic() - t0, exc.one_line(), excerpt=str(exc)))
        return BuildOutcome(steps, None, time.monotonic() - t0)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        steps.append(Step("build", ERROR, time.monotonic() - t0, disk_full_message(exc)))
        return BuildOutcome(steps, None, time.monotonic() - t0)
    if vb.apply is not None:
        for r in vb.apply.results:
            steps.append(Step(f"apply {r.patch.name}", PASSED, 0.0, output=f"{r.status}: {r.detail}".strip()))
    steps.append(Step("config verification", PASSED, 0.0, output=f"every option of {config_set} present in {vb.kernel.config}"))
    k = vb.kernel
    steps.append(Step("build", PASSED, time.monotonic() - t0,
                      output=f"{'cache hit' if k.cache_hit else 'built'} {k.key}\n{k.image}\n{k.metadata.get('reproducer', '')}"))
    return BuildOutcome(steps, vb, time.monotonic() - t0)


def reused(built: BuildOutcome, first: str) -> BuildOutcome:
    """The build steps for a cell whose kernel an earlier cell built: the same
    verdicts, but 0 s, so the time is counted once (JUnit totals, CI dashboards)."""
    steps = [Step(s.name, s.status, 0.0, s.message + (f" (built for cell {first})" if s.message else ""), s.excerpt,
                  (f"0 s, built for cell {first}\n" + s.output) if s.name == "build" else s.output)
             if s.seconds or s.name == "build" else s for s in built.steps]
    return BuildOutcome(steps, built.build, 0.0)
