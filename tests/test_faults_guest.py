"""Guest faults produced for real, each through run_cells (as ./run-matrix runs
a cell): the verdict (step status + message + evidence in cell.json and JUnit)
and that no process of the test (QEMU ...) is left behind.

Test-only workloads live in tests/fixtures/workloads-faults/ (their programs,
fault.c and fault.sh, go into the guest image under /opt/orch/test-faults);
test machine shapes are written per test, each with a unique token on the
kernel command line and in the environment (tests/faults_support.py).
Kernel: the pipeline's baseline build (cached).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml

import faults_support as fs
from orchestrator.matrix.spec import load_matrix
from orchestrator.matrix.options import RunOptions
from orchestrator.matrix.scheduler import run_cells

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def programs(tmp_path_factory, baseline_build) -> dict[str, Path]:
    return fs.fault_programs(tmp_path_factory.mktemp("fault-programs"))


@dataclass
class Outcome:
    rc: int
    steps: dict[str, dict]  # step name -> step (cell.json)
    metrics: dict[str, float]
    cell_dir: Path
    junit: Path
    seconds: float

    def step(self, name: str) -> dict:
        return self.steps[name]

    def junit_case(self, name: str):
        xml = JUnitXml.fromfile(str(self.junit))
        for suite in xml:
            for case in suite:
                if case.name == name:
                    return case
        raise AssertionError(f"no testcase {name!r} in {self.junit}")


@pytest.fixture
def cell(tmp_path, monkeypatch, programs):
    """cell(workload, params=None, **shape keys, opts={...}) -> Outcome, run for real."""
    token = fs.new_token()
    monkeypatch.setenv(fs.TOKEN_ENV, token)
    fs.install(tmp_path / "machines", programs, monkeypatch)

    def run(workload: str, params: dict | None = None, opts: dict | None = None, before=None, **shape) -> Outcome:
        fs.write_shape(tmp_path / "machines", "faulty", token, **shape)
        ref = {"name": workload, **({"params": params} if params else {})}
        matrix = tmp_path / "m.yaml"
        matrix.write_text(f"name: faults\nvariants: [baseline]\nmachines: [faulty]\nworkloads: [{json.dumps(ref)}]\n")
        m = load_matrix(matrix)
        out = tmp_path / "results"
        if before is not None:
            before(out, token)
        t0 = time.monotonic()
        rc = run_cells(m, m.cells, RunOptions(results_dir=out, matrix_arg=str(matrix), **(opts or {})))
        seconds = time.monotonic() - t0
        cell_dir = next((out / "cells").iterdir())
        rec = json.loads((cell_dir / "cell.json").read_text())
        return Outcome(rc, {s["name"]: s for s in rec["steps"]}, rec["metrics"], cell_dir, out / "junit.xml", seconds)

    yield run
    left = fs.wait_no_leftovers(token)
    fs.kill_leftovers(token)
    assert left == [], f"processes left behind: {left}"
    assert fs.partial_files(tmp_path) == []


def workload_step(o: Outcome, name: str) -> dict:
    return o.step(f"workload {name}")


# -- boot -----------------------------------------------------------------------

def test_boot_hang_is_a_silence_timeout_with_the_last_lines(cell) -> None:
    o = cell("fault-sleep", cmdline="orch.hang=1", opts={"boot_silence_s": 8})
    boot = o.step("boot")
    assert boot["status"] == "failed"
    assert boot["message"] == "boot failed (hang) at stage init: no console output for 8 s"
    assert "ORCH-INIT" in boot["excerpt"] and "ORCH-READY" not in boot["excerpt"]
    assert o.step("nested-kvm")["status"] == "skipped" and workload_step(o, "fault-sleep")["status"] == "skipped"
    case = o.junit_case("boot")
    assert isinstance(case.result[0], Failure) and "no console output for 8 s" in case.result[0].message
    assert "ORCH-INIT" in case.result[0].text and "--only" in case.result[0].text
    assert o.rc == 1


def test_kernel_panic_at_boot_names_the_panic(cell) -> None:
    o = cell("fault-sleep", cmdline="rdinit=/nonexistent")
    boot = o.step("boot")
    assert boot["status"] == "failed"
    assert boot["message"].startswith("boot failed (panic) at stage banner: ")
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in boot["message"]
    assert "Kernel panic" in boot["excerpt"]


def test_boot_loop_is_stopped_and_named(cell) -> None:
    """The guest reboots before it is ready (init is `reboot -f`): -no-reboot ends what would loop."""
    o = cell("fault-sleep", cmdline="rdinit=/bin/reboot -f")
    boot = o.step("boot")
    assert boot["status"] == "failed"
    assert boot["message"].startswith("boot failed (reboot) at stage banner: the guest rebooted before the ready marker")
    assert "reboot: Restarting system" in boot["excerpt"]


def test_qemu_failing_to_start_shows_its_own_message(cell) -> None:
    o = cell("fault-sleep", cpu="nosuchcpu")
    boot = o.step("boot")
    assert boot["status"] == "failed"
    assert boot["message"] == ("boot failed (qemu-exit) at stage start: QEMU exited with status 1: "
                               "qemu-system-aarch64: unable to find CPU model 'nosuchcpu'")
    argv = (o.cell_dir / "qemu-argv.txt").read_text().split("\n")
    assert argv[argv.index("-cpu") + 1] == "nosuchcpu"  # kept to reproduce it


def test_qemu_not_installed_is_an_error_with_the_install_command(cell, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(fs.path_without(tmp_path / "bin", "qemu-system-")))
    o = cell("fault-sleep")
    boot = o.step("boot")
    assert boot["status"] == "error"
    assert boot["message"] == ("qemu-system-aarch64 not found on PATH (how to fix: apt-get install qemu-system-arm   "
                               "(or run `orchestrator install-deps`))")
    assert o.rc == 2


# -- QEMU and SSH going away ------------------------------------------------------

def _when_workload_runs(out: Path, then) -> threading.Thread:
    """Call then() a moment after the cell's nested-KVM step is on disk (the workload is starting)."""
    def watch() -> None:
        end = time.monotonic() + 300
        while time.monotonic() < end:
            for path in out.glob("cells/*/cell.json"):
                try:
                    if any(s["name"] == "nested-kvm" for s in json.loads(path.read_text())["steps"]):
                        time.sleep(3)
                        then()
                        return
                except (OSError, ValueError):
                    pass
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_qemu_killed_mid_workload(cell) -> None:
    killed: list[int] = []

    def kill_qemu(out: Path, token: str) -> None:
        def then() -> None:
            for pid, argv in fs.processes_with_token(token):
                if argv.startswith("/usr/bin/qemu-system-aarch64") or argv.startswith("qemu-system-aarch64"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        _when_workload_runs(out, then)

    o = cell("fault-sleep", params={"seconds": 60}, before=kill_qemu)
    assert len(killed) == 1
    step = workload_step(o, "fault-sleep")
    assert step["status"] == "failed"
    assert step["message"] == "the guest stopped during workload fault-sleep (qemu-exit): QEMU was killed by SIGKILL"
    assert o.seconds < 60  # noticed at once, not at the workload's end
    assert o.rc == 1


def test_guest_that_stops_answering_hits_the_host_side_limit(cell, monkeypatch) -> None:
    """SIGSTOP to the cell's QEMU during the workload: the guest (its vCPUs and
    its network) stops answering, so only the host-side limit (guest limit +
    margin; a 5 s margin here instead of 120 s) can end the command."""
    import orchestrator.workload.evidence

    monkeypatch.setattr(orchestrator.workload.evidence, "HOST_MARGIN_S", 5)
    stopped: list[int] = []

    def stop_qemu(out: Path, token: str) -> None:
        def then() -> None:
            for pid, argv in fs.processes_with_token(token):
                if argv.split()[0].endswith("qemu-system-aarch64"):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
        _when_workload_runs(out, then)

    o = cell("fault-stuck", before=stop_qemu)
    assert len(stopped) == 1
    step = workload_step(o, "fault-stuck")
    assert step["status"] == "failed"
    assert step["message"].startswith("/opt/orch/test-faults/fault-sh sleep 60: no result from the guest within "
                                      "25 s (limit 20 s + 5 s): "), step["message"]
    assert 25 <= step["seconds"] < 60
    assert o.rc == 2  # the test workloads arm no probes: their verdicts are 'not measured' errors (exit 2)
    # The stopped QEMU was ended (SIGKILL works on a stopped process): the
    # cell fixture checks that no process of this test is left.


def test_ssh_dropped_mid_command_falls_back_to_the_serial_console(cell) -> None:
    o = cell("fault-drop-ssh")
    ssh = o.step("ssh")
    assert ssh["status"] == "error"
    assert ssh["message"].startswith("SSH connection dropped mid-command (")
    assert ssh["message"].endswith("the rest of the cell (evidence included) used the serial console")
    step = workload_step(o, "fault-drop-ssh")
    assert step["status"] == "error"
    assert step["message"] == ("/opt/orch/test-faults/fault-sh drop-ssh: exit status unknown: SSH connection dropped "
                               "mid-command (the connection closed before the exit status arrived)")
    assert "fault-sh: killing dropbear" in step["excerpt"]
    # Evidence still arrived, over the console.
    assert (o.cell_dir / "evidence" / "dmesg").is_file() and (o.cell_dir / "evidence" / "vmstat.after").is_file()
    assert o.rc == 2


def test_sshd_never_started_uses_the_serial_console_without_waiting(cell) -> None:
    o = cell("fault-sleep", cmdline="orch.ssh=0", opts={"ssh_timeout_s": 600})
    ssh = o.step("ssh")
    assert ssh["status"] == "skipped"
    assert ssh["message"].startswith("no SSH: guest init did not start sshd (no ORCH-SSH line")
    assert ssh["message"].endswith("; using the serial console")
    assert workload_step(o, "fault-sleep")["status"] == "passed"
    assert o.seconds < 300  # the 600 s SSH deadline was not waited for


def test_sshd_unreachable_falls_back_after_the_deadline(cell) -> None:
    """dropbear runs but the guest has no network (orch.net=0 wins over orch.net=1)."""
    o = cell("fault-sleep", cmdline="orch.net=0", opts={"ssh_timeout_s": 8})
    ssh = o.step("ssh")
    assert ssh["status"] == "skipped"
    assert ssh["message"].startswith("no SSH: no SSH on 127.0.0.1:") and "before the deadline" in ssh["message"]
    assert workload_step(o, "fault-sleep")["status"] == "passed"
    assert o.step("nested-kvm")["status"] == "passed"


def test_guest_without_el2_fails_nested_kvm_with_dmesg_evidence(cell) -> None:
    o = cell("fault-sleep", virtualization=False)
    kvm = o.step("nested-kvm")
    assert kvm["status"] == "failed"
    assert kvm["message"].startswith("KVM not usable in the guest: CPUs did not all start at EL2 (")
    assert "CPU: All CPU(s) started at EL1" in kvm["message"]
    assert "HYP mode not available" in kvm["message"]
    assert "KVM-PROBE open FAIL" in kvm["excerpt"]
    w = workload_step(o, "fault-sleep")
    assert (w["status"], w["message"]) == ("skipped", "no KVM in the guest")
    assert o.rc == 1


# -- workloads ----------------------------------------------------------------------

def test_workload_segfault(cell) -> None:
    o = cell("fault-segv")
    step = workload_step(o, "fault-segv")
    assert step["status"] == "failed"
    assert step["message"] == "/opt/orch/test-faults/fault segv: killed by SIGSEGV (exit status 139)"
    assert "about to dereference NULL" in step["excerpt"]
    assert isinstance(o.junit_case("workload fault-segv").result[0], Failure)


def test_workload_timeout(cell) -> None:
    o = cell("fault-timeout")
    step = workload_step(o, "fault-timeout")
    assert step["status"] == "failed"
    assert step["message"] == ("/opt/orch/test-faults/fault-sh sleep 60: timed out: the guest-side limit of 3 s "
                               "killed it (SIGKILL)")
    assert "sleeping 60 s" in step["excerpt"]
    assert step["seconds"] < 30


def test_workload_oom_killed_in_its_memory_cgroup(cell) -> None:
    o = cell("fault-memcg-oom")
    step = workload_step(o, "fault-memcg-oom")
    assert step["status"] == "failed"
    assert step["message"].startswith("/opt/orch/test-faults/fault-sh memcg-oom 128: killed by the OOM killer: "
                                      "its memory cgroup hit memory.max (fault, pid ")
    assert "Memory cgroup out of memory: Killed process" in step["excerpt"]
    assert o.metrics["memcg.oom_kill"] == 1.0


def test_guest_kernel_oom_kills_the_workload(cell) -> None:
    o = cell("fault-guest-oom", memory_mb=256)
    step = workload_step(o, "fault-guest-oom")
    assert step["status"] == "failed"
    assert "killed by the guest kernel's OOM killer: the whole guest ran out of memory (fault, pid" in step["message"]
    assert "Out of memory: Killed process" in step["excerpt"] and "CONSTRAINT_NONE" in step["excerpt"]


def test_guest_kernel_oom_panic_mid_workload(cell) -> None:
    """vm.panic_on_oom=1: the L1 kernel panics while SSH runs the workload."""
    o = cell("fault-panic-oom", memory_mb=256)
    step = workload_step(o, "fault-panic-oom")
    assert step["status"] == "failed"
    assert step["message"].startswith("the guest stopped during workload fault-panic-oom (panic): ")
    assert "Kernel panic - not syncing: Out of memory" in step["message"]
    assert "Kernel panic" in step["excerpt"]


def test_console_output_during_an_ssh_command_does_not_stall_the_guest(cell) -> None:
    """300 KB of random bytes on the serial console while SSH runs the workload:
    nobody read the pty before, its buffer filled and the guest froze."""
    o = cell("fault-spew", params={"bytes": 300000})
    step = workload_step(o, "fault-spew")
    assert step["status"] == "passed", step["message"]
    assert step["seconds"] < 90
    assert (o.cell_dir / "console.log").stat().st_size > 300000
