"""The execution-target seam (orchestrator/target/): the registry of
targets/*.yaml, GuestJob's rules, the nested-KVM check as one script with a
pure parse, the workload split into planning scripts and collecting a
WorkloadRun from their results, and what each TargetFault kind becomes.
Evidence and console text are captured from real guests (tests/fixtures/)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.guest_paths import GUEST_EVIDENCE_DIR
from orchestrator.matrix.guest_faults import fault_step
from orchestrator.reports.results import ERROR, FAILED
from orchestrator.target import base
from orchestrator.target.job import FAULT_KINDS, GuestJob, GuestScript, ScriptResult, TargetFault
from orchestrator.vm.machine import shape_by_name
from orchestrator.vm.nested_kvm import SECTION, nested_kvm_script, parse_nested_kvm_output
from orchestrator.workload import tracing
from orchestrator.workload.definitions import load_workload
from orchestrator.workload.evidence import (EVIDENCE_FILES, PROBE_FILES, SETUP_SCRIPT, TEARDOWN_SCRIPT,
                                            collect_workload, evidence_metrics, plan_workload)

FIX = Path(__file__).parent / "fixtures"
CONSOLE = FIX / "console"
RACE_CELL = FIX / "race" / "run" / "cells" / "v4.evidence.smp4.race~47d6a7.r1"


# -- the registry ---------------------------------------------------------------------

def test_every_shipped_target_loads_and_says_what_it_is() -> None:
    names = base.available_targets()
    assert base.DEFAULT_TARGET in names
    for name in names:
        target = base.load_target(name)
        assert isinstance(target, base.Target) and target.name == name
        ident = target.identity()
        assert ident["kind"] and all(isinstance(v, str) for v in ident.values())
    assert base.load_target("local").identity()["kind"] == "qemu"


def test_unknown_target_names_the_closest() -> None:
    with pytest.raises(UserError) as err:
        base.load_target("locall")
    assert "unknown target 'locall' (did you mean 'local'?)" in str(err.value)


@pytest.mark.parametrize("text, line, words", [
    ("kind: qmeu\n", 1, ["kind", "'qmeu'", "closest: 'qemu'"]),
    ("description: x\n", 1, ["kind"]),
    ("# a comment\nkind: qemu\nlab: http://x\n", 3, ["lab"]),
    ("- kind: qemu\n", 1, ["a mapping"]),
])
def test_a_bad_target_file_names_file_line_and_key(tmp_path: Path, text: str, line: int, words: list[str]) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        base.load_target_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: "), message
    for w in words:
        assert w in message, message


# -- the job ----------------------------------------------------------------------------

def test_a_job_refuses_needs_on_a_later_or_unknown_script_and_duplicate_names() -> None:
    shape = shape_by_name("default")
    a, b = GuestScript("a", "true", 5), GuestScript("b", "true", 5, needs="a")
    GuestJob("k", shape, Path("Image"), {}, (a, b), 60)
    with pytest.raises(ValueError, match="needs 'a', which is not an earlier script"):
        GuestJob("k", shape, Path("Image"), {}, (b, a), 60)
    with pytest.raises(ValueError, match="two scripts named 'a'"):
        GuestJob("k", shape, Path("Image"), {}, (a, a), 60)


# -- the nested-KVM check as a script ---------------------------------------------------

def _check_output(dmesg: str, dev_kvm: bool, probe: str) -> str:
    return (f"{SECTION} dmesg\n{dmesg}\n{SECTION} dev-kvm\n{'present' if dev_kvm else 'missing'}\n"
            f"{SECTION} probe\n{probe}")


@pytest.mark.parametrize("kind", ["vhe", "nvhe"])
def test_nested_kvm_output_of_real_guests_parses(kind: str) -> None:
    out = _check_output((CONSOLE / f"dmesg-{kind}.txt").read_text(), True, (CONSOLE / f"probe-{kind}.txt").read_text())
    check = parse_nested_kvm_output(out.replace("\n", "\r\n"))  # a serial console's line ends
    assert check.ok and check.mode == kind and check.reason == ""


def test_nested_kvm_output_without_dev_kvm_says_why() -> None:
    out = _check_output((CONSOLE / "dmesg-vhe.txt").read_text(), False, "KVM-PROBE open FAIL errno=2\n")
    check = parse_nested_kvm_output(out)
    assert not check.ok and "/dev/kvm is missing" in check.reason and "kvm_probe failed" in check.reason


def _run_check_on_host(tmp_path: Path, dmesg: str, probe: str, dev: str) -> tuple[int, str]:
    """The real script under the host's sh, with dmesg, the probe and /dev/kvm stood in
    for by the captured text (what differs in the guest is only where they come from)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(parents=True)
    (tmp_path / "dmesg.txt").write_text(dmesg)
    (bindir / "dmesg").write_text(f"#!/bin/sh\ncat {tmp_path / 'dmesg.txt'}\n")
    (tmp_path / "probe.txt").write_text(probe)
    (bindir / "probe").write_text(f"#!/bin/sh\ncat {tmp_path / 'probe.txt'}\n")
    for p in bindir.iterdir():
        p.chmod(0o755)
    script = nested_kvm_script(str(bindir / "probe")).replace("/dev/kvm", dev)
    res = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                         env={"PATH": f"{bindir}:/usr/bin:/bin"})
    return res.returncode, res.stdout


def test_nested_kvm_script_exit_status_agrees_with_the_parse(tmp_path: Path) -> None:
    dmesg, probe = (CONSOLE / "dmesg-nvhe.txt").read_text(), (CONSOLE / "probe-nvhe.txt").read_text()
    status, out = _run_check_on_host(tmp_path / "ok", dmesg, probe, "/dev/null")  # a character device
    assert status == 0 and parse_nested_kvm_output(out).ok
    no_el2 = "\n".join(ln for ln in dmesg.splitlines() if "EL2" not in ln)
    status, out = _run_check_on_host(tmp_path / "el1", no_el2, probe, "/dev/null")
    assert status == 1 and "did not all start at EL2" in parse_nested_kvm_output(out).reason
    status, out = _run_check_on_host(tmp_path / "nodev", dmesg, probe, "/nonexistent")
    assert status == 1 and "/dev/kvm is missing" in parse_nested_kvm_output(out).reason


# -- the workload: plan, then collect -----------------------------------------------------

def test_plan_orders_setup_run_teardown_and_gates_them() -> None:
    wl = load_workload("page-idle")
    plan = plan_workload(wl, {"vcpus": 1, "bytes": "16M"}, tracing.load_tracepoint_set(wl.tracepoints),
                         needs="nested-kvm")
    setup, run, teardown = plan.scripts
    assert [s.name for s in plan.scripts] == [SETUP_SCRIPT, "workload page-idle", TEARDOWN_SCRIPT]
    assert (setup.needs, run.needs, teardown.needs) == ("nested-kvm", SETUP_SCRIPT, SETUP_SCRIPT)
    assert run.timeout_s == plan.host_wait_s > plan.limit_s == wl.timeout_s
    assert plan.command in run.script and "exit $rc" in run.script
    assert teardown.evidence == tuple(f"{GUEST_EVIDENCE_DIR}/{n}" for n in EVIDENCE_FILES)
    timed = plan_workload(wl, {"vcpus": 1, "bytes": "16M"}, tracing.load_tracepoint_set(wl.tracepoints), timed=True)
    assert timed.tpset is None
    assert not {Path(p).name for p in timed.scripts[2].evidence} & PROBE_FILES
    assert "lock_stat" not in timed.scripts[0].script


def _race_plan():
    wl = load_workload("race")
    return plan_workload(wl, {"seconds": 120, "agers": 4, "vcpus": 2, "bytes": "256K"},
                         tracing.load_tracepoint_set("race"))


def _results(run: ScriptResult, files: list[str], missing: dict[str, str] | None = None) -> list[ScriptResult]:
    e = GUEST_EVIDENCE_DIR
    return [ScriptResult(SETUP_SCRIPT, "pass", 0, 0.5, "setup said this"), run,
            ScriptResult(TEARDOWN_SCRIPT, "pass", 0, 1.0, "", evidence={f"{e}/{n}": Path(n) for n in files},
                         missing=missing or {})]


def test_collect_a_real_run_gives_the_metrics_of_its_evidence(tmp_path: Path) -> None:
    plan = _race_plan()
    out = tmp_path / "evidence"
    shutil.copytree(RACE_CELL / "evidence", out)
    files = [p.name for p in out.iterdir()]
    run = collect_workload(plan, _results(ScriptResult("workload race", "pass", 0, 121.5, ""), files), out)
    assert (run.exit_status, run.ended_by, run.seconds, run.timed_out) == (0, "", 121.5, False)
    assert run.output == (out / "workload.out").read_text()
    expected = evidence_metrics(out, plan.workload, plan.tpset)
    assert run.metrics == {**expected, "workload.seconds": 121.5, "memcg.oom_kill": 0.0}
    assert run.metrics["race.aging_passes"] > 0 and run.metrics["kprobe.age_gfn.hits"] > 0
    assert (out / "setup.log").read_text() == "setup said this"


def test_collect_a_run_the_host_gave_up_on(tmp_path: Path) -> None:
    plan = _race_plan()
    run = ScriptResult("workload race", "timeout", None, plan.host_wait_s, "CommandTimeout: the full text",
                       detail="CommandTimeout: command did not finish in 1020 s: sh -c ...")
    res = _results(run, [])
    res[2] = ScriptResult(TEARDOWN_SCRIPT, "not-run", None, 0.0, "", detail="workload race did not finish")
    wr = collect_workload(plan, res, tmp_path)
    assert wr.exit_status is None and wr.timed_out and wr.missing == []
    assert wr.ended_by == (f"no result from the guest within {plan.host_wait_s} s (limit {plan.limit_s} s + "
                           f"{plan.host_wait_s - plan.limit_s} s): CommandTimeout: command did not finish in 1020 s: sh -c ...")
    assert (tmp_path / "workload.error").read_text() == "CommandTimeout: the full text\n"


def test_collect_a_run_whose_channel_broke_and_missing_evidence(tmp_path: Path) -> None:
    plan = _race_plan()
    lost = "SSH connection dropped mid-command (EOFError: )"
    run = ScriptResult("workload race", "error", None, 3.0, "", detail=lost + "; the serial console is used from here on")
    wr = collect_workload(plan, _results(run, [], {f"{GUEST_EVIDENCE_DIR}/dmesg": "FileNotFoundError: no"}), tmp_path,
                          via="serial", ssh_lost=lost)
    assert wr.exit_status is None and wr.ended_by == f"exit status unknown: {lost}" and wr.via == "serial"
    assert wr.missing == ["dmesg"] and (tmp_path / "fetch.errors").read_text() == "dmesg: FileNotFoundError: no\n"


def test_collect_classifies_a_signal_from_the_exit_status(tmp_path: Path) -> None:
    plan = _race_plan()
    (tmp_path / "dmesg").write_text("fault[77]: unhandled level 1 translation fault (11)\n")
    wr = collect_workload(plan, _results(ScriptResult("workload race", "fail", 139, 0.2, ""), ["dmesg"]), tmp_path)
    assert wr.exit_status == 139 and wr.ended_by == "killed by SIGSEGV (exit status 139)"
    assert "unhandled level 1 translation fault" in wr.dmesg_excerpt


# -- faults as verdicts ----------------------------------------------------------------------

def test_each_fault_kind_is_a_verdict() -> None:
    expected = {"boot-failed": FAILED, "guest-crashed": FAILED, "timeout": FAILED, "connection-lost": ERROR,
                "input": ERROR, "lab-error": ERROR, "lab-cancelled": ERROR, "lab-timeout": ERROR,
                "lab-unreachable": ERROR, "truncated-log": ERROR}
    assert set(expected) == set(FAULT_KINDS)
    for kind, status in expected.items():
        step = fault_step(TargetFault(kind, "why", "more", "last lines", where="stage-or-url"), "workload x", 3.0)
        assert step.status == status and step.excerpt == "last lines" and step.seconds == 3.0, kind
        assert step.name == ("boot" if kind == "boot-failed" else "workload x")
    boot = fault_step(TargetFault("boot-failed", "hang", "no console output for 8 s", "", "init"), "boot", 1.0)
    assert boot.message == "boot failed (hang) at stage init: no console output for 8 s"
    crash = fault_step(TargetFault("guest-crashed", "qemu-exit", "QEMU was killed by SIGKILL"), "workload w", 1.0)
    assert crash.message == "the guest stopped during workload w (qemu-exit): QEMU was killed by SIGKILL"
    lab = fault_step(TargetFault("lab-cancelled", "Job cancelled by admin", where="http://lab/scheduler/job/7"),
                     "workload w", 1.0)
    assert "Job cancelled by admin" in lab.message and "http://lab/scheduler/job/7" in lab.message


# -- choosing the target ----------------------------------------------------------------------

def test_a_matrix_names_its_target_and_an_unknown_one_is_refused_at_its_line(tmp_path: Path) -> None:
    from orchestrator.matrix.spec import load_matrix
    good = tmp_path / "good.yaml"
    good.write_text("name: t\nvariants: [baseline]\nworkloads: [page-idle]\ntarget: local\n")
    assert load_matrix(good).target == "local"
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: t\nvariants: [baseline]\nworkloads: [page-idle]\n")
    assert load_matrix(plain).target == base.DEFAULT_TARGET
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nvariants: [baseline]\nworkloads: [page-idle]\ntarget: lcal\n")
    with pytest.raises(UserError) as err:
        load_matrix(bad)
    assert str(err.value).startswith(f"{bad}:4: target: unknown target 'lcal' (did you mean 'local'?)")


def test_run_matrix_target_option_names_the_closest_target(capsys) -> None:
    from orchestrator.cli import main
    assert main(["run-matrix", "--matrix", "smoke", "--target", "locl", "--list"]) == 2
    assert "unknown target 'locl' (did you mean 'local'?)" in capsys.readouterr().err
    assert main(["run-matrix", "--matrix", "smoke", "--target", "local", "--list"]) == 0
