"""Faults of the run itself, produced for real: SIGTERM of ./run-matrix (partial
JUnit, nothing left behind, --resume runs only what is missing), a full
results disk and a full cache (small tmpfs mounts; needs root), and a corrupt
cache entry that must be detected by its checksum and rebuilt.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

import faults_support as fs
from orchestrator.cli import main as cli_main

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def programs(tmp_path_factory, baseline_build) -> Path:
    d = tmp_path_factory.mktemp("fault-programs")
    fs.fault_programs(d)
    return d


@contextmanager
def tmpfs(path: Path, size: str):
    """A small tmpfs at path (root only); always unmounted again."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _matrix(tmp: Path, workloads: list[dict], repeats: int = 1) -> Path:
    m = tmp / "m.yaml"
    m.write_text(f"name: faults\nvariants: [baseline]\nmachines: [faulty]\nrepeats: {repeats}\n"
                 f"workloads: {json.dumps(workloads)}\n")
    return m


def _suites(junit: Path) -> dict[str, dict[str, object]]:
    """suite name -> {testcase name -> result (None when passed)}."""
    out: dict[str, dict[str, object]] = {}
    for suite in JUnitXml.fromfile(str(junit)):
        out[suite.name] = {case.name: (case.result[0] if case.result else None) for case in suite}
    return out


# -- Ctrl-C / SIGTERM and --resume ---------------------------------------------------

def test_sigterm_keeps_results_writes_partial_junit_and_resume_runs_the_rest(tmp_path, programs) -> None:
    token = fs.new_token()
    fs.write_shape(tmp_path / "machines", "faulty", token)
    # The first cell must finish "failed" (not "error"): --resume keeps only those.
    matrix = _matrix(tmp_path, [{"name": "fault-sleep-probed", "params": {"seconds": 1}},
                                {"name": "fault-sleep", "params": {"seconds": 8}}])
    out = tmp_path / "results"
    env = {**os.environ, fs.TOKEN_ENV: token, "ORCH_FAULT_PROGRAMS": str(programs)}
    argv = [sys.executable, str(ROOT / "tests" / "faults_support.py"), str(tmp_path / "machines"), "--",
            "--matrix", str(matrix), "--results", str(out)]

    def start(*extra: str) -> subprocess.Popen:
        return subprocess.Popen([*argv, *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    run = start()
    try:
        # SIGTERM while the second cell's workload runs.
        end = time.monotonic() + 600
        second = None
        while second is None:
            assert run.poll() is None, run.communicate()[1][-3000:]
            assert time.monotonic() < end, "the second cell never reached its workload"
            for path in sorted(out.glob("cells/*/cell.json")):
                try:
                    data = json.loads(path.read_text())
                except ValueError:
                    continue
                if data["cell"]["params"]["seconds"] == 8 and any(s["name"] == "nested-kvm" for s in data["steps"]):
                    second = path.parent
            time.sleep(0.2)
        time.sleep(3)
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        left = fs.wait_no_leftovers(token)
        fs.kill_leftovers(token)
    assert left == [], f"left behind after SIGTERM: {left}"
    assert run.returncode == 128 + signal.SIGTERM
    assert "interrupted: ending child processes, writing partial results" in err and "Traceback" not in err
    assert fs.partial_files(out) == []

    suites = _suites(out / "junit.xml")
    first = next(k for k in suites if k != second.name)
    assert suites[first]["workload fault-sleep-probed"] is None  # finished before the signal: kept
    path = suites[first]["verdict fault-sleep-probed: path exercised"]
    assert isinstance(path, Failure) and path.message.startswith("the run never aged KVM memory")
    assert (out / "cells" / first / "evidence" / "dmesg").is_file() and (out / "cells" / first / "console.log").is_file()
    interrupted = suites[second.name]["interrupted"]
    assert isinstance(interrupted, Error)
    assert interrupted.message == "run interrupted (Ctrl-C / SIGTERM) during workload fault-sleep"
    assert json.loads((second / "cell.json").read_text())["complete"] is False

    key_before = json.loads((out / "cells" / first / "cell.json").read_text())["inputs_key"]
    t0 = time.monotonic()
    again = start("--resume")
    try:
        _, err = again.communicate(timeout=600)
    finally:
        if again.poll() is None:
            os.killpg(again.pid, signal.SIGKILL)
        fs.kill_leftovers(token)
    assert again.returncode == 1, err[-3000:]  # the kept first cell failed its verdict
    # The inputs did not change between the runs, so the key must not either (a
    # key that changes by itself would make --resume rerun everything).
    assert json.loads((out / "cells" / first / "cell.json").read_text())["inputs_key"] == key_before
    assert err.count(": resumed (") == 1 and f"{first}: resumed" in err, err[-3000:]
    assert f"{second.name}: boot + fault-sleep" in err
    suites = _suites(out / "junit.xml")
    assert set(suites) == {first, second.name}
    assert "interrupted" not in suites[second.name] and suites[second.name]["workload fault-sleep"] is None
    assert time.monotonic() - t0 < 300


def test_resume_reruns_a_cell_that_ended_in_an_error(tmp_path, programs, monkeypatch) -> None:
    """QEMU not installed -> `boot` error; once it is back, --resume runs the cell
    again instead of keeping the error forever."""
    from orchestrator.matrix.spec import load_matrix
    from orchestrator.matrix.options import RunOptions
    from orchestrator.matrix.scheduler import run_cells

    token = fs.new_token()
    monkeypatch.setenv(fs.TOKEN_ENV, token)
    fs.install(tmp_path / "machines", fs.fault_programs(programs), monkeypatch)
    fs.write_shape(tmp_path / "machines", "faulty", token)
    matrix = _matrix(tmp_path, [{"name": "fault-sleep", "params": {"seconds": 1}}])
    out = tmp_path / "results"
    m = load_matrix(matrix)
    real_path = os.environ["PATH"]
    try:
        monkeypatch.setenv("PATH", str(fs.path_without(tmp_path / "bin", "qemu-system-")))
        assert run_cells(m, m.cells, RunOptions(results_dir=out, matrix_arg=str(matrix))) == 2
        boot = _suites(out / "junit.xml")[m.cells[0].key]["boot"]
        assert isinstance(boot, Error) and boot.message.startswith("qemu-system-aarch64 not found on PATH")
        monkeypatch.setenv("PATH", real_path)  # the user installed QEMU
        rc = run_cells(m, m.cells, RunOptions(results_dir=out, matrix_arg=str(matrix), resume=True))
        left = fs.wait_no_leftovers(token)
    finally:
        fs.kill_leftovers(token)
    assert left == [] and fs.partial_files(out) == []
    suite = _suites(out / "junit.xml")[m.cells[0].key]
    assert suite["boot"] is None and suite["workload fault-sleep"] is None  # it ran this time
    assert rc == 2  # the test workloads arm no probes: their verdicts are 'not measured' errors (exit 2)


def test_ctrl_c_mid_workload(tmp_path, programs) -> None:
    """SIGINT (Ctrl-C) in the first of two cells: exit 130; in the JUnit the first
    cell's steps so far plus an "interrupted" error, the second "not run"; QEMU ended."""
    token = fs.new_token()
    fs.write_shape(tmp_path / "machines", "faulty", token)
    matrix = _matrix(tmp_path, [{"name": "fault-sleep", "params": {"seconds": 60}},
                                {"name": "fault-sleep", "params": {"seconds": 1}}])
    out = tmp_path / "results"
    env = {**os.environ, fs.TOKEN_ENV: token, "ORCH_FAULT_PROGRAMS": str(programs)}
    run = subprocess.Popen([sys.executable, str(ROOT / "tests" / "faults_support.py"), str(tmp_path / "machines"), "--",
                            "--matrix", str(matrix), "--results", str(out)], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        end = time.monotonic() + 600
        while not any(s["name"] == "nested-kvm" for p in out.glob("cells/*/cell.json")
                      for s in _steps_of(p)):
            assert run.poll() is None, run.communicate()[1][-3000:]
            assert time.monotonic() < end
            time.sleep(0.2)
        time.sleep(3)
        t0 = time.monotonic()
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=120)
        stopped = time.monotonic() - t0
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        left = fs.wait_no_leftovers(token)
        fs.kill_leftovers(token)
    assert left == [] and run.returncode == 130 and "Traceback" not in err
    assert stopped < 30  # not after the 60 s workload
    cell, later = _suites(out / "junit.xml").values()
    assert cell["boot"] is None and cell["nested-kvm"] is None
    assert isinstance(cell["interrupted"], Error)
    assert list(later) == ["not run"] and isinstance(later["not run"], Skipped)
    assert later["not run"].message == "the run was interrupted before this cell"
    assert fs.partial_files(out) == []


def _steps_of(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text())["steps"]
    except (OSError, ValueError):
        return []


# -- full disks -------------------------------------------------------------------

def test_results_disk_full_is_one_message_and_leaves_nothing_behind(tmp_path, programs, monkeypatch, capsys) -> None:
    token = fs.new_token()
    monkeypatch.setenv(fs.TOKEN_ENV, token)
    fs.install(tmp_path / "machines", fs.fault_programs(programs), monkeypatch)
    fs.write_shape(tmp_path / "machines", "faulty", token)
    matrix = _matrix(tmp_path, [{"name": "fault-sleep"}])
    with tmpfs(tmp_path / "full", "16k") as out:
        try:
            rc = cli_main(["run-matrix", "--matrix", str(matrix), "--results", str(out)])
            err = capsys.readouterr().err
            leftovers = fs.wait_no_leftovers(token)
            partial = fs.partial_files(out)
        finally:
            fs.kill_leftovers(token)
    assert rc == 2
    assert "error: no space left on device writing " in err and f"results {out} (" in err
    assert "how to fix: free space or pass --results" in err and "Traceback" not in err
    assert leftovers == [] and partial == []


def test_cache_full_while_building_the_guest_image(tmp_path, programs, monkeypatch) -> None:
    from orchestrator.matrix.spec import load_matrix
    from orchestrator.matrix.options import RunOptions
    from orchestrator.matrix.scheduler import run_cells

    token = fs.new_token()
    monkeypatch.setenv(fs.TOKEN_ENV, token)
    fs.install(tmp_path / "machines", fs.fault_programs(programs), monkeypatch)
    fs.write_shape(tmp_path / "machines", "faulty", token)
    matrix = _matrix(tmp_path, [{"name": "fault-sleep"}])
    with tmpfs(tmp_path / "xdg", "2m") as xdg:
        fs.temp_cache(xdg, fresh=("images",))  # the guest image (~6 MB) must be written anew
        monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
        try:
            m = load_matrix(matrix)
            rc = run_cells(m, m.cells, RunOptions(results_dir=tmp_path / "results", matrix_arg=str(matrix)))
            partial = fs.partial_files(xdg)
        finally:
            monkeypatch.delenv("XDG_CACHE_HOME")
            fs.kill_leftovers(token)
    assert rc == 2 and partial == []
    boot = _suites(tmp_path / "results" / "junit.xml")["baseline.evidence.faulty.fault-sleep.r1"]["boot"]
    assert isinstance(boot, Error)
    assert boot.message.startswith(f"no space left on device for the guest image in the cache {xdg}/")
    assert "how to fix: free space under $XDG_CACHE_HOME" in boot.message


# -- corrupt cache entry ------------------------------------------------------------

def test_corrupt_selftests_entry_is_detected_and_rebuilt(baseline_build, tmp_path, monkeypatch) -> None:
    """A flipped byte in a cached selftest binary: the entry is invalid by its
    checksum, and the next build rebuilds it (in a private copy of the cache)."""
    from orchestrator.kernel import selftests, toolchain
    from orchestrator.kernel.build import locked
    from orchestrator.paths import cache_dir
    from orchestrator.kernel.variant_build import selftests_content_id
    from orchestrator.kernel.source import git, sha256_file

    real = baseline_build.selftests
    monkeypatch.setenv("XDG_CACHE_HOME", str(fs.temp_cache(tmp_path / "xdg", fresh=("selftests",))))
    copy = cache_dir("selftests", real.key)
    shutil.copytree(real.out_dir, copy, dirs_exist_ok=True)  # mtimes kept: make sees a finished build
    work = real.out_dir.parent / "work" / real.key
    if work.is_dir():
        shutil.copytree(work, cache_dir("selftests", "work", real.key), dirs_exist_ok=True, symlinks=True)
    name = "access_tracking_perf_test"
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(data)
    corrupt = sha256_file(copy / name)
    assert selftests._valid(copy) is None

    source = baseline_build.source
    with locked(f"tree-{source.key}"):
        # Another build may have left the shared tree at other inputs: put it back at
        # the baseline's (as the pipeline does under this lock before every build).
        head = baseline_build.apply.head if baseline_build.apply is not None else source.base_commit
        git(source.repo, "checkout", "-q", "-f", "--detach", head)
        assert selftests_content_id(source, head) == real.metadata["content_id"]
        rebuilt = selftests.build_selftests(source, real.metadata["content_id"], toolchain.detect())
    assert rebuilt.key == real.key and rebuilt.out_dir == copy and not rebuilt.cache_hit
    digest = sha256_file(rebuilt.binary(name))
    assert digest != corrupt, "the corrupt binary was kept (and is now recorded as valid)"
    assert digest == rebuilt.metadata["binaries_sha256"][name]
    assert selftests._valid(copy) is not None
