"""A real local LAVA instance (its own PostgreSQL cluster, lava-server web,
scheduler, publisher with events, one worker, one QEMU device on
127.0.0.1:8000, orchestrator/target/lava/instance.py) and the lava-server
target against it (targets/lava-server-local.yaml):

- a small matrix (page-idle on baseline and v4-fixed) end to end: the cell
  records carry the local target's testcases and metric keys
  (tests/test_target_local_integration.py pins them), junit.xml and
  kcidb.json the same testcases, KCIDB's environment names the lab;
- a failing lava-test-case is a failed script, not a passed job;
- each lab fault produced for real, each a cell ERROR naming the lab's
  reason and the job URL, with what was measured before it kept: a running
  job cancelled, the device in maintenance or retired (no device takes the
  job within the queue timeout; retired: the server refuses the job), LAVA's
  job timeout, the web server stopped while the target waits.

The instance is brought up once for the module (~45 s) and every service is
stopped by its PID on every path (the fixture's finally, and
orchestrator.proc's handlers on Ctrl-C/SIGTERM).  Root only (lava-run).
The fault cases use tiny jobs and short timeouts; the module took 250 s
(7 passed) on 2 cores at load 6-10, most of it the two page-idle cells.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from junitparser import JUnitXml

from conftest import missing_prerequisite
from orchestrator.errors import UserError
from orchestrator.matrix.guest_faults import fault_step
from orchestrator import proc
from orchestrator.target import base
from orchestrator.target.job import GuestJob, GuestOutcome, GuestScript
from orchestrator.target.lava import server as lava_server
from orchestrator.target.lava.instance import LOCAL_PORT, LocalLab, check_tools, start_local_lab
from orchestrator.target.lava.server import LavaServer
from orchestrator.target.lava.targets import LavaServerTarget
from orchestrator.vm.machine import shape_by_name
from test_target_local_integration import CASES as LOCAL_CASES
from test_target_local_integration import METRIC_KEYS as LOCAL_METRIC_KEYS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
TARGET_FILE = ROOT / "targets" / "lava-server-local.yaml"
TOKEN_ENV, URL_ENV = "ORCH_LAVA_TOKEN", "ORCH_LAVA_URL"  # the target file's token_env / url_env


@pytest.fixture(scope="module")
def lab():
    try:
        check_tools()
    except UserError as exc:
        missing_prerequisite(str(exc))
    # Not under pytest's tmp_path: its 0700 parents keep the lavaserver user
    # (the scheduler) from reading the device dictionary.
    workdir = Path(tempfile.mkdtemp(prefix="orch-lava-test-", dir="/var/tmp"))
    saved = {k: os.environ.get(k) for k in (TOKEN_ENV, URL_ENV)}
    lab = None
    try:
        lab = start_local_lab(workdir, shape_by_name("default"), port=LOCAL_PORT)
        os.environ[TOKEN_ENV], os.environ[URL_ENV] = lab.token, lab.url
        yield lab
    finally:
        if lab is not None:
            sessions = list(lab.pids.values())  # every service leads its own session
            lab.close()
            assert lab.pids == {}
            # lava-worker runs each lava-run in a process group of its own: a job
            # still running at close must be ended with the worker's session.
            left = [p for sid in sessions for p in proc.session_members(sid)]
            assert left == [], f"processes of the instance outlived close(): {left}"
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture()
def target(lab) -> LavaServerTarget:
    t = base.load_target_file(TARGET_FILE)
    assert isinstance(t, LavaServerTarget) and t.cfg.url == lab.url
    t.preflight()
    return t


def with_cfg(target: LavaServerTarget, **kw) -> LavaServerTarget:
    return LavaServerTarget(target.name, replace(target.cfg, **kw))


def small_job(kernel: Path, *scripts: GuestScript) -> GuestJob:
    return GuestJob("lava-server.test", shape_by_name("default"), kernel, {}, tuple(scripts), 300)


def in_thread(fn):
    box: dict = {}

    def go() -> None:
        try:
            box["v"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            box["exc"] = exc
    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th, box


def result_of(th: threading.Thread, box: dict, limit: float) -> GuestOutcome:
    th.join(limit)
    assert not th.is_alive(), f"the target still waits after {limit} s (a hang)"
    if "exc" in box:
        raise box["exc"]
    return box["v"]


def wait_for_log(server: LavaServer, pattern: str, limit: float = 180) -> int:
    """The newest job's id once its log matches pattern (e.g. a script's result)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        jobs = server._json("GET", "jobs/?ordering=-id&limit=1")["results"]
        if jobs and jobs[0]["state"] == "Running" and re.search(pattern, server.logs(int(jobs[0]["id"]))):
            return int(jobs[0]["id"])
        time.sleep(1)
    raise AssertionError(f"no running job's log matched {pattern!r} within {limit} s")


def as_cell_error(o: GuestOutcome, lab: LocalLab) -> str:
    """The cell step the fault becomes (matrix/guest_faults.py): an ERROR
    naming the lab's reason and the job URL."""
    assert o.fault is not None
    step = fault_step(o.fault, o.fault.script or "boot", 1.0)
    assert step.status == "error", step
    assert re.search(re.escape(lab.url) + r"/scheduler/job/\d+", step.message), step.message
    return step.message


def test_a_job_runs_and_a_failing_case_is_a_failed_script(target, lab, baseline_build, tmp_path) -> None:
    job = small_job(baseline_build.kernel.image, GuestScript("ok", "echo fine", 60),
                    GuestScript("bad", "echo broken; exit 4", 60), GuestScript("later", "uname -r", 60, needs="ok"))
    t0 = time.monotonic()
    o = target.run(job, tmp_path)
    assert o.fault is None, o.fault
    assert [(r.name, r.status, r.exit_status) for r in o.scripts] == [("ok", "pass", 0), ("bad", "fail", 4),
                                                                    ("later", "pass", 0)]
    assert "fine" in o.scripts[0].output and "broken" in o.scripts[1].output
    assert re.search(r"/scheduler/job/\d+", o.boot.description) and time.monotonic() - t0 < 120
    written = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()
                      and p.suffix in (".yaml", ".txt", ".log"))
    assert lab.token not in written and "lvl: results" in written.replace('"', "")


def test_a_cancelled_job_is_a_cell_error_and_keeps_the_earlier_script(target, lab, baseline_build,
                                                                      tmp_path) -> None:
    job = small_job(baseline_build.kernel.image, GuestScript("first", "echo measured", 30),
                    GuestScript("sleeper", "sleep 300", 400))
    th, box = in_thread(lambda: target.run(job, tmp_path))
    server = LavaServer(lab.url, lab.token)
    job_id = wait_for_log(server, r"case.{0,6}first")
    server.cancel(job_id)
    o = result_of(th, box, 120)
    assert o.fault is not None and o.fault.kind == "lab-cancelled", o.fault
    assert o.fault.where == f"{lab.url}/scheduler/job/{job_id}"
    assert [(r.name, r.status) for r in o.scripts][:1] == [("first", "pass")]
    assert "lab-cancelled" in as_cell_error(o, lab)


def test_the_device_in_maintenance_is_a_cell_error_not_a_hang(target, lab, baseline_build, tmp_path) -> None:
    """The job is accepted and waits: no device takes it within the queue timeout."""
    t = with_cfg(target, queue_timeout_s=8)
    lab.set_device_health("MAINTENANCE")
    try:
        t0 = time.monotonic()
        o = t.run(small_job(baseline_build.kernel.image, GuestScript("ok", "true", 30)), tmp_path)
        took = time.monotonic() - t0
    finally:
        lab.set_device_health("GOOD")
    assert o.fault is not None and o.fault.kind == "lab-timeout", o.fault
    assert "no device took the job" in o.fault.reason and "Submitted" in o.fault.reason, o.fault.reason
    assert took < 8 + 30, took
    assert "lab-timeout" in as_cell_error(o, lab)
    # cancelled, not left in the queue for the device's return
    job_id = int(o.fault.where.rsplit("/", 1)[1])
    end = time.monotonic() + 30
    while LavaServer(lab.url, lab.token).state(job_id).state != "Finished" and time.monotonic() < end:
        time.sleep(1)
    assert LavaServer(lab.url, lab.token).state(job_id).health == "Canceled"


def test_the_device_retired_is_a_cell_error_with_the_labs_words(target, lab, baseline_build, tmp_path) -> None:
    """LAVA refuses the job at submission (no device of the type left): no job id."""
    lab.set_device_health("RETIRED")
    try:
        o = target.run(small_job(baseline_build.kernel.image, GuestScript("ok", "true", 30)), tmp_path)
    finally:
        lab.set_device_health("GOOD")
    assert o.fault is not None and o.fault.kind == "lab-error", o.fault
    assert "No devices of type qemu are available" in o.fault.reason and o.fault.where == lab.url, o.fault
    step = fault_step(o.fault, o.fault.script or "boot", 1.0)
    assert step.status == "error" and "No devices of type qemu" in step.message and lab.url in step.message


def test_a_job_past_its_timeout_is_a_cell_error_and_keeps_the_earlier_script(target, lab, baseline_build,
                                                                             tmp_path) -> None:
    t = with_cfg(target, max_job_timeout_s=60)  # LAVA's job timeout cuts the sleeper
    job = small_job(baseline_build.kernel.image, GuestScript("first", "echo measured", 30),
                    GuestScript("sleeper", "sleep 300", 400))
    t0 = time.monotonic()
    o = t.run(job, tmp_path)
    assert time.monotonic() - t0 < 60 + 60
    assert o.fault is not None and o.fault.kind == "lab-timeout" and o.fault.script == "sleeper", o.fault
    assert re.search(r"timed out|timeout", o.fault.reason, re.I), o.fault.reason
    assert [(r.name, r.status) for r in o.scripts][:1] == [("first", "pass")]
    assert "lab-timeout" in as_cell_error(o, lab)


def test_a_small_matrix_through_the_server_gives_the_local_targets_records_junit_and_kcidb(
        lab, baseline_build, v4_fixed_build, tmp_path) -> None:
    from kcidb_io.schema import V5_3
    matrix = tmp_path / "lava-server.yaml"
    matrix.write_text("name: lava-server\nvariants: [baseline, v4-fixed]\nconfig_sets: [evidence]\n"
                      "machines: [default]\nworkloads: [{name: page-idle, params: {vcpus: 1, bytes: 16M}}]\n"
                      "target: lava-server-local\n")
    out = tmp_path / "run"
    # As a user runs it, in its own process: run_cells ends every child process
    # registered in its process when it finishes, which would include this lab.
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run-matrix", "--matrix", str(matrix),
                          "--results", str(out), "--jobs", "2"], cwd=ROOT, capture_output=True, text=True,
                         timeout=1800)
    recs = {r["cell"]["variant"]: r for r in (json.loads(p.read_text()) for p in sorted(out.glob("cells/*/cell.json")))}
    steps = {v: "\n".join(f"{s['name']}: {s['status']} {s['message']}" for s in r["steps"]) for v, r in recs.items()}
    assert res.returncode == 0, (steps, res.stdout[-3000:], res.stderr[-3000:])
    assert lab.token not in res.stdout + res.stderr
    assert set(recs) == {"baseline", "v4-fixed"}
    for variant, rec in recs.items():
        assert rec["target"]["runner"] == "lava-server" and rec["target"]["lab"] == lab.url
        boot = next(s for s in rec["steps"] if s["name"] == "boot")
        assert re.search(re.escape(lab.url) + r"/scheduler/job/\d+", boot["output"]), boot
        missing = {k for k in LOCAL_METRIC_KEYS if not k.startswith("vmstat.")} - set(rec["metrics"])
        assert missing <= {"trace.tracing_mark_write.rate_per_s"}, (variant, sorted(missing))
    # The local target's testcases (baseline pinned by test_target_local_integration), all passed.
    cases = {s.name: [(c.name, type(c.result[0]).__name__ if c.result else "pass") for c in s]
             for s in JUnitXml.fromfile(str(out / "junit.xml"))}
    base_suite = next(v for k, v in cases.items() if k.startswith("baseline."))
    fixed_suite = next(v for k, v in cases.items() if k.startswith("v4-fixed."))
    assert [n for n, _ in base_suite] == LOCAL_CASES
    fixed_names = [n for n, _ in fixed_suite if not n.startswith("apply ")]  # v4-fixed: 4 patches
    assert [n for n in fixed_names if not n.startswith("expect ")] == [
        n for n in LOCAL_CASES if not n.startswith(("apply ", "expect "))]
    assert [n for n in fixed_names if n.startswith("expect ")] == [
        "expect page-idle: aging takes mmu_lock for read", "expect page-idle: aging takes no write lock"]
    assert {r for _, r in base_suite + fixed_suite} == {"pass"}, cases
    # Lock evidence came back through the job log: baseline's aging takes mmu_lock for write.
    b = recs["baseline"]["metrics"]
    assert b["kprobe.age_gfn.hits"] > 100_000
    assert abs(b["lock.mmu_lock.write.acquisitions"] - b["kprobe.age_gfn.hits"]) < 1000
    # KCIDB: valid, the same tests, the environment names the lab and device type.
    text = (out / "kcidb.json").read_text()
    data = json.loads(text)
    V5_3.validate(data)
    assert {"boot", "nested-kvm"} <= {t["path"] for t in data["tests"]}
    envs = {t["environment"]["comment"] for t in data["tests"] if "environment" in t}
    assert envs and all(lab.url in e and "qemu" in e for e in envs), envs
    assert lab.token not in text + (out / "junit.xml").read_text()
    assert not [p for p in out.rglob("*") if p.is_file() and lab.token in p.read_text(errors="replace")]


def test_the_server_stopped_mid_wait_is_a_cell_error_not_a_hang(target, lab, baseline_build, tmp_path,
                                                                 monkeypatch) -> None:
    """Last in the module: the web server stays down (the fixture stops the rest)."""
    monkeypatch.setattr(lava_server, "UNREACHABLE_AFTER_S", 10.0)
    job = small_job(baseline_build.kernel.image, GuestScript("first", "echo measured", 30),
                    GuestScript("sleeper", "sleep 120", 200))
    th, box = in_thread(lambda: target.run(job, tmp_path))
    wait_for_log(LavaServer(lab.url, lab.token), r"case.{0,6}first")
    lab.stop_service("web")
    t0 = time.monotonic()
    o = result_of(th, box, 90)
    assert time.monotonic() - t0 < 10 + 2 * lava_server.HTTP_TIMEOUT_S + 10
    assert o.fault is not None and o.fault.kind == "lab-unreachable", o.fault
    assert "while waiting" in o.fault.reason and "/scheduler/job/" in o.fault.where
    assert "lab-unreachable" in as_cell_error(o, lab)
