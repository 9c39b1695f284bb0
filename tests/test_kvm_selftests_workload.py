"""workloads/kvm-selftests.yaml as data: the suite's runner options come from
the file (timeout factor, known-broken tests with their reasons, per-test
arguments), a subset is a parameter, a subset's time limit follows from it,
and a mistake in the `suite:` block names file, line and key."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.workload import definitions
from orchestrator.workload.definitions import load_workload


def test_the_shipped_suite_runs_every_test_with_its_declared_options():
    w = load_workload("kvm-selftests")
    assert w.results == "ktap" and w.suite is not None and w.suite.collection == "kvm"
    argv = w.argv({})
    assert argv[0] == "/opt/orch/workloads/kselftest-kvm.sh"
    assert argv[1:3] == ["-f", str(w.suite.timeout_factor)] and argv[-1] == "all"
    for name, why in w.suite.known.items():  # every known-broken test is passed on with its reason
        assert f"{name}={why}" in argv
    assert w.limit_s({}) == w.timeout_s


def test_a_subset_and_its_time_limit():
    w = load_workload("kvm-selftests")
    argv = w.argv({"tests": "hypercalls,psci_test", "override_timeout": 30})
    assert argv[-2:] == ["hypercalls", "psci_test"] and argv[argv.index("-o") + 1] == "30"
    assert w.limit_s({"tests": "hypercalls,psci_test", "override_timeout": 30}) == 2 * (30 + 15) + 60
    per_test = w.suite.settings_timeout_s * w.suite.timeout_factor + 15
    assert w.limit_s({"tests": "hypercalls"}) == min(w.timeout_s, per_test + 60)
    with pytest.raises(UserError, match="tests=.*does not match"):
        w.argv({"tests": "hypercalls; reboot"})


def test_a_mistake_in_the_suite_block_names_file_line_and_key(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(definitions, "WORKLOADS_DIR", tmp_path)
    (tmp_path / "s.yaml").write_text("program: workloads/kselftest-kvm.sh\nargs: []\ntimeout_s: 60\nresults: ktap\n"
                                     "suite:\n  collection: kvm\n  timout_factor: 3\n")
    with pytest.raises(UserError) as err:
        load_workload("s")
    text = str(err.value)
    assert "s.yaml" in text and ":7" in text and "timout_factor" in text and "timeout_factor" in text
    (tmp_path / "s.yaml").write_text("program: x\nargs: []\ntimeout_s: 60\nresults: junit\n")
    with pytest.raises(UserError, match="junit"):
        load_workload("s")
