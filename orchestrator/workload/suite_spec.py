"""A workload that is a test suite (workloads/kvm-selftests.yaml `suite:`):
which tests, how long each may take, and which are known not to work here.

Pure data: the guest runner (guest/workloads/kselftest-kvm.sh) gets the
decisions as options, one test per result line comes back as KTAP
(parsers/ktap.py).  A new suite (kvm-unit-tests, LTP mm) is a YAML file, a
guest runner that prints KTAP, and a `results:` parser entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator import datafiles

# How a suite's output becomes per-test results (workloads/*.yaml `results:`).
RESULT_PARSERS = ("none", "ktap")
# Each test's own host-side allowance beyond its guest-side limit (runner
# start, the result line), and the run's (boot of the runner, teardown).
PER_TEST_MARGIN_S, RUN_MARGIN_S = 15, 60


@dataclass(frozen=True)
class SuiteSpec:
    collection: str  # kselftest collection: results are kselftest.<collection>.<test> in KCIDB
    source: str  # where the list of tests comes from ("makefile": the tree's own, kernel/selftests.py)
    timeout_factor: int  # the `settings` timeout is multiplied by this (nested TCG)
    settings_timeout_s: int  # kselftest's `settings` timeout when planning the host-side limit
    known: dict[str, str] = field(default_factory=dict)  # test -> why it is skipped here (never hidden)
    test_args: dict[str, str] = field(default_factory=dict)  # test -> arguments (KSELFTEST_<TEST>_ARGS)

    def tests(self, value: str) -> list[str]:
        """The `tests` parameter: "all" (every test of the tree) or a comma list."""
        return [] if value.strip() == "all" else [t for t in value.replace(" ", ",").split(",") if t]

    def runner_options(self) -> list[str]:
        """Options of guest/workloads/kselftest-kvm.sh for this declaration."""
        out = ["-f", str(self.timeout_factor)]
        for name, why in self.known.items():
            out += ["-s", f"{name}={why}"]
        for name, args in self.test_args.items():
            out += ["-a", f"{name}={args}"]
        return out

    def host_limit_s(self, tests: list[str], cap: int, override_s: int = 0) -> int:
        """The whole run's limit: every planned test at its own limit (override_s:
        the `override_timeout` parameter), at most `cap` (the workload's timeout_s,
        which also bounds "all")."""
        if not tests:
            return cap
        per_test = (override_s or self.settings_timeout_s * self.timeout_factor) + PER_TEST_MARGIN_S
        return min(cap, len(tests) * per_test + RUN_MARGIN_S)

    def kcidb_path(self, test: str) -> str:
        return f"kselftest.{self.collection}.{test}"


_NAME = r"[A-Za-z0-9_.+-]+"


def suite_schema() -> datafiles.Mapping:
    F, Str = datafiles.Field, datafiles.Str
    return datafiles.Mapping({
        "collection": F(Str(pattern=_NAME), required=True, help="kselftest collection (kvm)"),
        "list": F(Str(choices=("makefile",)), default="makefile",
                  help="makefile: the tests the tree's own Makefile lists for arm64"),
        "timeout_factor": F(datafiles.Int(1, 100), default=1, help="the settings timeout is multiplied by this"),
        "settings_timeout_s": F(datafiles.Int(1, 86400), default=45,
                                help="the tree's settings timeout, for the host-side limit of a subset"),
        "known": F(datafiles.MapOf(Str(numbers_as_text=True), keys=Str(pattern=_NAME, expected="a test name"),
                                   expected="a mapping of test: reason"), default={},
                   help="tests skipped here, each with its reason"),
        "test_args": F(datafiles.MapOf(Str(numbers_as_text=True), keys=Str(pattern=_NAME, expected="a test name"),
                                       expected="a mapping of test: arguments"), default={},
                       help="arguments per test (kselftest's KSELFTEST_<TEST>_ARGS)"),
    }, expected="a mapping with collection, list, timeout_factor, settings_timeout_s, known, test_args")


def suite_from(data: dict | None) -> SuiteSpec | None:
    if not data:
        return None
    return SuiteSpec(data["collection"], data["list"], data["timeout_factor"], data["settings_timeout_s"],
                     dict(data["known"]), dict(data["test_args"]))
