"""Time limits of host commands, produced for real: a child that hangs without
printing anything is ended at its deadline (not waited for forever), and a
`make` that hangs inside run-matrix becomes a `build` error naming the command
and its limit while the run goes on to the next cell (before: a
subprocess.TimeoutExpired traceback and no JUnit)."""
from __future__ import annotations

import difflib
import os
import shutil
import time
from pathlib import Path

import pytest
from junitparser import Error, JUnitXml

import faults_support as fs
from orchestrator import proc

ROOT = Path(__file__).resolve().parents[1]


def _env(token: str) -> dict[str, str]:
    return {**os.environ, fs.TOKEN_ENV: token}


def test_silent_hung_child_is_ended_at_its_deadline(tmp_path: Path) -> None:
    """stream() used to check its deadline only when a line arrived."""
    token = fs.new_token()
    lines: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(proc.CommandTimedOut) as exc:
        # One line, then silence; the grandchild (sleep) holds the pipe open too.
        proc.stream(["sh", "-c", "echo started; sleep 120"], on_line=lines.append, timeout=2, env=_env(token))
    took = time.monotonic() - t0
    try:
        assert lines == ["started"]
        assert 2 <= took < 10, took
        assert str(exc.value).startswith("command timed out after its limit of 2 s: sh -c 'echo started; sleep 120'")
        assert "how to fix: " in str(exc.value)
        assert fs.wait_no_leftovers(token, 5) == []
    finally:
        fs.kill_leftovers(token)
    # Without any output at all, and through run() (communicate with a limit).
    with pytest.raises(proc.CommandTimedOut, match=r"limit of 1 s: sleep 60"):
        proc.stream(["sleep", "60"], on_line=lines.append, timeout=1, env=_env(token))
    with pytest.raises(proc.CommandTimedOut, match=r"limit of 1 s: sleep 60"):
        proc.run(["sleep", "60"], timeout=1, env=_env(token))
    assert fs.wait_no_leftovers(token, 5) == []


def test_stream_keeps_every_line_and_the_exit_status() -> None:
    lines: list[str] = []
    rc = proc.stream(["sh", "-c", "printf 'a\\nb\\n'; printf 'no newline'; exit 3"], on_line=lines.append, timeout=30)
    assert rc == 3 and lines == ["a", "b", "no newline"]


def _hang_patch(kernel_source) -> str:
    """A mail appending `$(shell sleep 300)` to the tree's top-level Makefile:
    every make (config targets included) then hangs silently while parsing it."""
    from orchestrator.kernel.source import git
    old = git(kernel_source.repo, "show", f"{kernel_source.base_commit or 'HEAD'}:Makefile")
    new = old + "\n# orchestrator fault test: hang silently\n$(shell sleep 300)\n"
    diff = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "a/Makefile", "b/Makefile"))
    return ("From: A U Thor <a@example.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
            "Subject: [PATCH] kbuild: hang\n\nWhy.\n\nSigned-off-by: A U Thor <a@example.org>\n---\n"
            f"diff --git a/Makefile b/Makefile\n{diff}-- \n2.39.5\n")


@pytest.mark.integration
def test_run_matrix_make_timeout_is_a_build_error_and_the_run_goes_on(kernel_source, baseline_build, tmp_path,
                                                                     monkeypatch) -> None:
    from orchestrator.matrix.spec import load_matrix
    from orchestrator.paths import PATCHES_DIR
    from orchestrator.matrix.options import RunOptions
    from orchestrator.matrix.scheduler import run_cells

    token = fs.new_token()
    monkeypatch.setenv(fs.TOKEN_ENV, token)  # make, sleep and QEMU inherit it
    fs.install(tmp_path / "machines", fs.fault_programs(tmp_path), monkeypatch)
    fs.write_shape(tmp_path / "machines", "faulty", token)
    series = tmp_path / "series"
    shutil.copytree(PATCHES_DIR, series)
    (series / "9999-hang.patch").write_text(_hang_patch(kernel_source))
    if (series / "series").is_file():  # a quilt series file names the patches there are
        (series / "series").write_text((series / "series").read_text() + "9999-hang.patch\n")
    variants = (series / "variants.yaml").read_text()
    (series / "variants.yaml").write_text(variants.rstrip("\n") + "\n  hang: [9999-hang.patch]\n")
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"name: timeouts\nseries: {series}\nvariants: [hang, baseline]\nmachines: [faulty]\n"
                      "workloads: [{name: fault-sleep, params: {seconds: 1}}]\n")
    # A small limit for make (and merge_config.sh, which runs make): the hang is real.
    limit = 8.0
    real_run, real_stream = proc.run, proc.stream

    def capped(kwargs: dict, argv) -> dict:
        if Path(str(argv[0])).name in ("make", "merge_config.sh"):
            kwargs["timeout"] = min(kwargs.get("timeout") or limit, limit)
        return kwargs

    monkeypatch.setattr(proc, "run", lambda argv, **kw: real_run(argv, **capped(kw, argv)))
    monkeypatch.setattr(proc, "stream", lambda argv, **kw: real_stream(argv, **capped(kw, argv)))
    out = tmp_path / "out"
    t0 = time.monotonic()
    try:
        m = load_matrix(matrix)
        rc = run_cells(m, m.cells, RunOptions(results_dir=out, matrix_arg=str(matrix)))
        left = fs.wait_no_leftovers(token)
    finally:
        fs.kill_leftovers(token)
    assert left == [], f"left behind: {left}"
    assert fs.partial_files(out) == []
    suites = {s.name: {c.name: (c.result[0] if c.result else None) for c in s} for s in JUnitXml.fromfile(str(out / "junit.xml"))}
    hang = next(v for k, v in suites.items() if k.startswith("hang."))
    build = hang["build"]
    assert isinstance(build, Error), hang
    assert build.message.startswith(f"command timed out after its limit of {limit:g} s: ")
    assert "make" in build.message or "merge_config.sh" in build.message
    ok = next(v for k, v in suites.items() if k.startswith("baseline."))
    assert ok["boot"] is None and ok["workload fault-sleep"] is None  # the run went on
    assert rc == 2  # build error; the other cell's verdicts are 'not measured' errors (no probes armed)
    assert time.monotonic() - t0 < 600
