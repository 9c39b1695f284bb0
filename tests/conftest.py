"""Shared fixtures: the real Debian kernel source, prepared once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.kernel.source import DEFAULT_TARBALL, PreparedSource, SourceSpec, prepare

def missing_prerequisite(why: str) -> None:
    """Skip on a developer's machine; fail under CI (CI=true), where every prerequisite must be there."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"missing prerequisite under CI: {why}", pytrace=False)
    pytest.skip(why)


REFERENCE_V4 = Path(__file__).resolve().parents[2] / "shared" / "reference" / "mglru-secondary-mmu-v4"


@pytest.fixture(scope="session")
def kernel_source() -> PreparedSource:
    if not DEFAULT_TARBALL.is_file():
        missing_prerequisite(f"{DEFAULT_TARBALL} missing: run ./scripts/bootstrap as root")
    return prepare(SourceSpec.parse(None))


@pytest.fixture(scope="session")
def v4_dir() -> Path:
    if not REFERENCE_V4.is_dir():
        missing_prerequisite(f"{REFERENCE_V4} missing (shared/ must sit beside the checkout)")
    return REFERENCE_V4


@pytest.fixture(scope="session")
def baseline_build(kernel_source):
    """The project's baseline kernel + selftests, built by the pipeline (cached)."""
    from orchestrator.paths import PATCHES_DIR
    from orchestrator.kernel.variant_build import BuildRequest, build_variant
    return build_variant(BuildRequest(series=PATCHES_DIR, variant="baseline"))


@pytest.fixture(scope="session")
def v4_fixed_build(baseline_build):
    from orchestrator.paths import PATCHES_DIR
    from orchestrator.kernel.variant_build import BuildRequest, build_variant
    return build_variant(BuildRequest(series=PATCHES_DIR, variant="v4-fixed"))
