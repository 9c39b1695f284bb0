"""The build stage as one call: source -> series -> config -> kernel (+ selftests).

This is the Python API; the CLI (`orchestrator build`) is a thin shim over it.
"""
from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.kernel import toolchain as toolchain_mod
from orchestrator.kernel.apply import ApplyResult, apply_series
from orchestrator.kernel.build import BuildResult, build_kernel, locked
from orchestrator.errors import BuildFailed, UserError
from orchestrator.kernel.guest_programs import all_guest_programs, unavailable_programs
from orchestrator.kernel.kconfig import load_config_set
from orchestrator.progress import Progress
from orchestrator.kernel.selftests import SUITE_FILES, SelftestsBuild, build_selftests
from orchestrator.kernel.series import Series
from orchestrator.kernel.source import PreparedSource, SourceSpec, git, prepare, worktree_identity
from orchestrator.kernel.variants import resolve
from orchestrator.guest_paths import GUEST_SELFTESTS_DIR


class SeriesDidNotApply(Exception):
    """The series failed to apply; `result` holds the per-patch report."""

    def __init__(self, result: ApplyResult) -> None:
        super().__init__("patch series did not apply")
        self.result = result


@dataclass
class BuildRequest:
    source: str | None = None  # SourceSpec.parse syntax
    series: Path | None = None
    variant: str | None = None
    config_set: str | None = None
    jobs: int | None = None
    per_patch: bool = False
    selftests: bool = True
    prefix: int | None = None  # build only the series' first `prefix` patches (bisection)

    def reproducer(self) -> str:
        argv = ["orchestrator", "build"]
        if self.source:
            argv += ["--source", self.source]
        if self.series:
            argv += ["--series", str(self.series)]
        if self.variant:
            argv += ["--variant", self.variant]
        if self.config_set:
            argv += ["--config-set", self.config_set]
        if self.prefix is not None:
            argv += ["--prefix", str(self.prefix)]
        return shlex.join(argv)


@dataclass
class PatchBuild:
    """--per-patch: whether the series up to this patch builds, and new warnings."""

    index: int
    subject: str
    ok: bool
    new_warnings: list[dict] = field(default_factory=list)
    error: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class VariantBuild:
    variant: str
    source: PreparedSource
    apply: ApplyResult | None
    kernel: BuildResult
    selftests: SelftestsBuild | None
    per_patch: list[PatchBuild] = field(default_factory=list)
    guest_programs: dict[str, Path] = field(default_factory=dict)  # guest path -> host file
    unavailable: dict[str, str] = field(default_factory=dict)  # guest path -> why it did not build

    def guest_files(self, suite: bool = False) -> dict[str, Path]:
        """Everything the guest image carries from this build: guest path -> host file.
        suite: also the tree's whole KVM selftests suite and the files its runner
        reads (guest/workloads/kselftest-kvm.sh); only the cells that run it carry them."""
        files: dict[str, Path] = {}
        if self.selftests is not None:
            names = self.selftests.suite_available() if suite else []
            for name in dict.fromkeys([*self.selftests.available(), *names]):
                files[f"{GUEST_SELFTESTS_DIR}/{name}"] = self.selftests.binary(name)
            if suite:
                for extra in SUITE_FILES:
                    files[f"{GUEST_SELFTESTS_DIR}/{extra}"] = self.selftests.out_dir / extra
        files.update(self.guest_programs)
        return files


def _checkout(source: PreparedSource, series: Series | None, progress: Progress) -> tuple[str, ApplyResult | None]:
    """Put the work tree at base + series; returns (tree id, apply result)."""
    if source.in_place:
        if series is not None:
            raise UserError(
                "a series cannot be applied to your own work tree (it is built as it is)",
                hint="apply the patches yourself, or give --source PATH@REF so the orchestrator works on a cached clone",
            )
        head, dirty = worktree_identity(source.repo)
        return f"{head}+{dirty[:16]}", None
    if series is None:
        git(source.repo, "checkout", "-q", "-f", "--detach", source.base_commit or "HEAD")
        return source.base_commit or "", None
    progress.set_phase(f"apply {len(series.patches)} patch(es)")
    result = apply_series(source.repo, source.base_commit or "HEAD", series)
    if not result.ok:
        raise SeriesDidNotApply(result)
    return result.head, result


def build_variant(req: BuildRequest) -> VariantBuild:
    tc = toolchain_mod.detect()
    config_set = load_config_set(req.config_set)
    # The series first: a giant patch or a YAML bomb is refused in seconds,
    # before the kernel source is unpacked (minutes on a cold cache).
    label, series = resolve(req.series, req.variant)
    if req.prefix is not None:
        label, series = prefix_of(label, series, req.prefix)
    source = prepare(SourceSpec.parse(req.source))
    progress = Progress(f"build {label}")
    provenance = {
        "variant": label,
        "series": None if series is None else {
            "origin": series.origin,
            "patches": [{"name": p.name, "subject": p.subject, "sha256": p.sha256} for p in series.patches],
        },
        "reproducer": req.reproducer(),
    }
    programs: dict[str, Path] = {}
    unavailable: dict[str, str] = {}
    with locked(f"tree-{source.key}"):
        per_patch: list[PatchBuild] = []
        if req.per_patch and series is not None and len(series.patches) > 1:
            per_patch = _build_prefixes(source, series, config_set, tc, req, progress)
        tree_id, applied = _checkout(source, series, progress)
        if applied is not None:
            provenance["apply"] = [dataclasses.asdict(r) | {"patch": r.patch.name} for r in applied.results]
        kernel = build_kernel(source, tree_id, config_set, tc, label=label, provenance=provenance,
                              jobs=req.jobs, progress=progress)
        tests = None
        if req.selftests:
            tests = build_selftests(source, selftests_content_id(source, tree_id), tc, progress=Progress(f"selftests {label}"))
            programs = all_guest_programs(source, tests, tc)
            unavailable = unavailable_programs(tests, tc)
    return VariantBuild(label, source, applied, kernel, tests, per_patch, programs, unavailable)


def prefix_of(label: str, series: Series | None, k: int) -> tuple[str, Series | None]:
    """The series' first k patches, labelled LABEL@k (prefix 0: the bare source)."""
    total = len(series.patches) if series is not None else 0
    if not 0 <= k <= total:
        raise UserError(f"prefix {k} of {label}: the series has {total} patch(es)", hint=f"give 0..{total}")
    if series is None or k == 0:
        return f"{label}@0", None
    return f"{label}@{k}", dataclasses.replace(series, patches=series.patches[:k])


# What the KVM selftests are built from: a kernel-only series leaves these
# trees alone, so its variants share one selftests build.
SELFTEST_INPUTS = ("tools", "include/uapi", "arch/arm64/include/uapi", "scripts", "Makefile")


def selftests_content_id(source: PreparedSource, tree_id: str) -> str:
    if source.in_place:
        return tree_id
    ids = git(source.repo, "rev-parse", *[f"{tree_id}:{p}" for p in SELFTEST_INPUTS]).split()
    return "trees:" + ",".join(ids)


def _build_prefixes(source, series: Series, config_set, tc, req: BuildRequest, progress: Progress) -> list[PatchBuild]:
    """Build every prefix of the series incrementally (ktest's patchcheck)."""
    out: list[PatchBuild] = []
    seen: set[tuple[str, str]] = set()
    for k in range(1, len(series.patches) + 1):
        prefix = dataclasses.replace(series, patches=series.patches[:k])
        patch = series.patches[k - 1]
        tree_id, _ = _checkout(source, prefix, progress)
        try:
            res = build_kernel(source, tree_id, config_set, tc, label=f"{prefix.origin}@{k}",
                               provenance={"per_patch_prefix": k}, jobs=req.jobs, progress=progress)
        except BuildFailed as exc:
            out.append(PatchBuild(k, patch.subject, False, error=exc.first_errors))
            break
        warnings = res.metadata.get("warnings") or []
        new = [w for w in warnings if (w["file"], w["message"]) not in seen]
        seen.update((w["file"], w["message"]) for w in warnings)
        # An incremental build prints warnings only for the files it recompiled;
        # "new" = not printed by any earlier prefix of this series.
        out.append(PatchBuild(k, patch.subject, True, new,
                              seconds=res.metadata.get("durations_s", {}).get("total", 0.0)))
    return out
