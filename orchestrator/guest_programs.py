"""The project's own guest programs (guest/*.c), compiled for arm64 against
the tree's KVM selftest library and cached with the selftests build.

Returns guest path -> host file, for the guest image.
"""
from __future__ import annotations

from pathlib import Path

from .selftests import SelftestsBuild
from .source import PreparedSource
from .toolchain import Toolchain

GUEST_PROGRAMS_DIR = "/opt/orch/bin"


def build_guest_programs(source: PreparedSource, selftests: SelftestsBuild, tc: Toolchain) -> dict[str, Path]:
    """Placeholder until the workload programs land: no programs yet."""
    return {}
