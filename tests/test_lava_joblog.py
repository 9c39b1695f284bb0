"""Reading real LAVA job logs (tests/fixtures/lava/README.md) back into the
cell's outcome: results and status lines, gzip+base64 blocks decoded and
checked, and each way a job can end as a fault kind."""
from __future__ import annotations

import gzip
from pathlib import Path

from orchestrator.parsers.lockstat import parse_lock_stat, summary as lock_summary
from orchestrator.target.job import GuestJob, GuestScript
from orchestrator.target.lava.joblog import parse_job_log
from orchestrator.target.lava.outcome import LabEnd, build_outcome, lab_end_from_log
from orchestrator.vm.machine import shape_by_name

FIX = Path(__file__).parent / "fixtures" / "lava"


def log_text(name: str) -> str:
    return gzip.decompress((FIX / f"{name}.job-log.yaml.gz").read_bytes()).decode()


def dev_job(*scripts: GuestScript) -> GuestJob:
    return GuestJob("dev.cell", shape_by_name("default"), Path("/I"), {}, tuple(scripts), 300)


PFS = dev_job(
    GuestScript("hello", "...", 60, ("/tmp/ev.txt", "/tmp/dmesg.txt", "/tmp/nothere")),
    GuestScript("fails", "echo failing; exit 3", 30),
    GuestScript("needs fails", "echo never", 30, needs="fails"),
    GuestScript("slow", "sleep 1; echo slept", 30))


def outcome(job: GuestJob, text: str, tmp_path: Path, end: LabEnd | None = None):
    log = parse_job_log(text)
    end = end or lab_end_from_log(log, "lava-run job 1", 0)
    return build_outcome(job, log, end, tmp_path, seconds=1.0, console_log=None)


def test_page_idle_cell_log_gives_every_script_and_the_lock_evidence() -> None:
    log = parse_job_log(log_text("page-idle-baseline"))
    assert log.job_result() is not None and log.job_result().result == "pass"
    cases = log.cases("orch")
    assert list(cases) == ["nested-kvm", "workload_setup", "workload_page-idle", "workload_teardown"]
    assert all(c.result == "pass" and c.units == "seconds" for c in cases.values())
    assert [s.status for s in log.statuses.values()] == ["pass"] * 4
    assert not [b for b in log.blocks if b.data is None]
    lock_stat = next(b for b in log.blocks if b.what.endswith("/lock_stat"))
    m = lock_summary(parse_lock_stat(lock_stat.data.decode()), {"&(kvm)->mmu_lock": "mmu"})
    assert m["mmu.present"] == 1 and m["mmu.write.acquisitions"] > 1000  # baseline: aging takes it for write


def test_pass_fail_skip_become_script_results_with_evidence(tmp_path: Path) -> None:
    o = outcome(PFS, log_text("pass-fail-skip"), tmp_path)
    assert o.fault is None and o.boot.ok and o.channel == "lava" and o.boot.seconds > 0
    assert [(r.name, r.status, r.exit_status) for r in o.scripts] == [
        ("hello", "pass", 0), ("fails", "fail", 3), ("needs fails", "not-run", None), ("slow", "pass", 0)]
    hello = o.scripts[0]
    assert hello.output.startswith("hello from 6.1.0-57-arm64\nquote\"d")  # LAVA's \" escaping undone
    assert (tmp_path / "evidence" / "ev.txt").read_text() == "".join(f"{i}\n" for i in range(1, 2001))
    assert set(hello.evidence) == {"/tmp/ev.txt", "/tmp/dmesg.txt"}
    assert hello.missing == {"/tmp/nothere": "the script did not leave it"}
    assert o.scripts[2].detail == "fails did not pass"
    assert o.scripts[1].output == "failing\n"


def test_a_panic_is_guest_crashed_in_the_script_that_caused_it(tmp_path: Path) -> None:
    job = dev_job(GuestScript("before", "echo ok", 30), GuestScript("crash", "echo c > /proc/sysrq-trigger", 60),
                  GuestScript("after", "echo after", 30))
    o = outcome(job, log_text("sysrq-crash"), tmp_path)
    assert [r.name for r in o.scripts] == ["before"]
    assert o.fault is not None and o.fault.kind == "guest-crashed" and o.fault.script == "crash"
    assert "sysrq triggered crash" in o.fault.detail


def test_lavas_job_timeout_is_lab_timeout_with_the_labs_words(tmp_path: Path) -> None:
    job = dev_job(GuestScript("before", "echo ok", 30), GuestScript("sleeper", "sleep 600", 900))
    o = outcome(job, log_text("test-timeout"), tmp_path)
    assert o.fault is not None and o.fault.kind == "lab-timeout" and o.fault.script == "sleeper"
    assert "lava-test-shell timed out after 55 seconds" in o.fault.reason
    assert o.fault.where == "lava-run job 1"


def _cut_in_block(text: str, what: str) -> str:
    lines = text.splitlines()
    begin = next(i for i, ln in enumerate(lines) if f"ORCH-LAVA-BEGIN 0 {what}" in ln)
    return "\n".join(lines[:begin + 5]) + "\n"


def test_a_log_cut_inside_a_block_is_truncated_log(tmp_path: Path) -> None:
    cut = _cut_in_block(log_text("pass-fail-skip"), "/tmp/ev.txt")
    log = parse_job_log(cut)
    assert log.block(0, "/tmp/ev.txt").problem.startswith("cut off")
    # The server said Complete, but the log it handed back ends inside a block.
    o = outcome(PFS, cut, tmp_path, LabEnd("Complete", "", "http://lab/scheduler/job/7"))
    assert o.fault is not None and o.fault.kind == "truncated-log"
    assert "/tmp/ev.txt of hello: cut off" in o.fault.reason and o.fault.where.endswith("/job/7")
    assert "/tmp/ev.txt" not in o.scripts[0].evidence


def test_a_kernel_message_inside_a_block_is_dropped_and_a_damaged_line_is_caught(tmp_path: Path) -> None:
    text = log_text("pass-fail-skip")
    lines = text.splitlines()
    begin = next(i for i, ln in enumerate(lines) if "ORCH-LAVA-BEGIN 0 /tmp/ev.txt" in ln)
    b64 = lines[begin + 2]
    kmsg = b64.replace('"}', '[   12.345678] kvm: a message in the middle"}')
    good = "\n".join(lines[:begin + 2] + [kmsg] + lines[begin + 3:])
    assert parse_job_log(good).block(0, "/tmp/ev.txt").data is not None
    damaged = "\n".join(lines[:begin + 2] + [b64.replace('"}', 'AAAA"}')] + lines[begin + 3:])
    block = parse_job_log(damaged).block(0, "/tmp/ev.txt")
    assert block.data is None and block.problem
    o = outcome(PFS, damaged, tmp_path)
    assert o.fault is not None and o.fault.kind == "truncated-log"


def test_lab_health_maps_to_fault_kinds(tmp_path: Path) -> None:
    text = log_text("pass-fail-skip")
    for health, kind in (("Canceled", "lab-cancelled"), ("Unreachable", "lab-unreachable"),
                         ("Timeout", "lab-timeout")):
        o = outcome(PFS, text, tmp_path, LabEnd(health, "why", "http://lab/scheduler/job/3"))
        assert o.fault is not None and o.fault.kind == kind and o.fault.reason == "why"
    o = outcome(PFS, text, tmp_path, LabEnd("Incomplete", "Infrastructure: device offline", "u"))
    assert o.fault is not None and o.fault.kind == "lab-error" and "device offline" in o.fault.reason
    # A failed lava-test-case is a failed script, never a fault.
    assert outcome(PFS, text, tmp_path).fault is None


def test_boot_seconds_run_from_qemus_start_to_the_shell_prompt(tmp_path: Path) -> None:
    # LAVA's action durations (execute-qemu + login-action) leave out
    # auto-login's wait for "Linux version": the log times of the two results count it.
    log = parse_job_log(log_text("page-idle-baseline"))
    durations = sum(float(log.lava_case(c).extra["duration"]) for c in ("execute-qemu", "login-action"))
    o = outcome(dev_job(GuestScript("x", "true", 30)), log_text("page-idle-baseline"), tmp_path)
    assert o.boot.seconds == 12.018 and o.boot.seconds > durations + 1
