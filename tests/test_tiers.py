"""The test tiers and prerequisites (README "Test tiers"): every test outside
integration/slow is unit, and a missing prerequisite skips on a developer's
machine but fails under CI (CI=true), so a skip never hides a broken CI."""
from __future__ import annotations

import pytest

from conftest import missing_prerequisite, need_command
from orchestrator.hostdeps import REQUIREMENTS


def test_an_unmarked_test_is_unit(request) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("integration") is None


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_missing_prerequisite_fails_under_ci(monkeypatch, ci) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="missing prerequisite under CI: the tarball"):
        missing_prerequisite("the tarball")
    with pytest.raises(pytest.fail.Exception, match="no-such-command-i25 not on PATH: apt-get install pkg"):
        need_command("no-such-command-i25", "pkg")


def test_missing_prerequisite_skips_elsewhere(monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        missing_prerequisite("the tarball")


def test_the_commands_tests_need_are_installed_by_the_bootstrap() -> None:
    """need_command() names a package; the bootstrap (hostdeps) installs it on a fresh machine."""
    packages = {r.package for r in REQUIREMENTS}
    assert {"cpio", "qemu-system-arm", "gcc-aarch64-linux-gnu"} <= packages
