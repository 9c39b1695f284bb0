"""A verdict on one step of a cell (build, boot, nested-kvm, a workload, a
verdict or expectation): the unit every stage hands on and JUnit shows as a
testcase."""
from __future__ import annotations

from dataclasses import dataclass

PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"


@dataclass
class Step:
    name: str  # e.g. "build", "boot", "nested-kvm", "workload page-idle", "verdict path-exercised"
    status: str  # passed | failed | error | skipped
    seconds: float = 0.0
    message: str = ""
    excerpt: str = ""  # first compiler error, crash excerpt, last console lines ...
    output: str = ""  # short system-out (workload output etc.)
