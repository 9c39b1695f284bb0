"""Shared fixtures: the real Debian kernel source, prepared once per session."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from orchestrator.kernel.source import DEFAULT_TARBALL, PreparedSource, SourceSpec, prepare

# The test tiers (README "Test tiers"): `unit` is every test not marked
# `integration` or `slow`; it needs no kernel tree, no network and no QEMU.
# A unit test that asks for the tree (or a build made from it) fails at once
# with the fix, so the tier stays fast instead of quietly unpacking 86 K files.
TREE_FIXTURES = ("kernel_source", "baseline_build", "v4_fixed_build")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if not any(item.get_closest_marker(m) for m in ("integration", "slow")):
            item.add_marker(pytest.mark.unit)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    """Before any fixture is set up (the session's kernel_source would unpack the tree first)."""
    if item.get_closest_marker("unit") is None:
        return
    used = [f for f in TREE_FIXTURES if f in item.fixturenames]
    if used:
        pytest.fail(f"{item.nodeid} is in the unit tier but uses {', '.join(used)} (the kernel tree): "
                    "mark it @pytest.mark.integration", pytrace=False)


def missing_prerequisite(why: str) -> None:
    """Skip on a developer's machine; fail under CI (CI=true), where every prerequisite must be there."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"missing prerequisite under CI: {why}", pytrace=False)
    pytest.skip(why)


def need_command(binary: str, package: str) -> None:
    """A host command a test needs (orchestrator/hostdeps.py installs it on a fresh machine)."""
    if shutil.which(binary) is None:
        missing_prerequisite(f"{binary} not on PATH: apt-get install {package} (or ./scripts/bootstrap as root)")


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
