"""Two runs at once on one cache, for real: two `orchestrator build` of
different variants of one source (the `minimal` config set, cheap once built)
both produce their own kernel, the one that waits says what it waits for, and
a build killed mid-way leaves no cache entry a later run takes as valid."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import faults_support as fs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def _build(variant: str, token: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "build", "--series", "patches", "--variant",
                             variant, "--config-set", "minimal", "--no-selftests", "--json"],
                            cwd=ROOT, env={**os.environ, fs.TOKEN_ENV: token}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _result(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_two_builds_of_one_source_at_once(kernel_source, tmp_path) -> None:
    from orchestrator.kernel.build import locked, valid_cached

    token = fs.new_token()
    lock = f"tree-{kernel_source.key}"
    runs: dict[str, subprocess.Popen] = {}
    try:
        # Hold the source's lock ourselves so both builds must wait, then let them go.
        with locked(lock):
            runs = {v: _build(v, token) for v in ("baseline", "v4")}
            time.sleep(5)
            assert all(p.poll() is None for p in runs.values())
        outs = {v: p.communicate(timeout=1800) for v, p in runs.items()}
    finally:
        for p in runs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        left = fs.wait_no_leftovers(token)
        fs.kill_leftovers(token)
    assert left == []
    for v, (out, err) in outs.items():
        assert runs[v].returncode == 0, err[-3000:]
        assert f"(the {lock} lock), held by pid {os.getpid()}" in err  # what it waited for
        assert "Traceback" not in err
    got = {v: _result(out) for v, (out, _) in outs.items()}
    assert got["baseline"]["key"] != got["v4"]["key"]
    for v, r in got.items():
        meta = valid_cached(Path(r["kernel"]))
        assert meta is not None and meta["variant"] == v and meta["config_set"] == "minimal"
        names = [p["name"] for p in (meta["series"] or {}).get("patches", [])]
        assert any(n.startswith("0002-") for n in names) == (v == "v4")  # the right patches in the right kernel
    assert (Path(got["baseline"]["kernel"]) / "Image").read_bytes() != (Path(got["v4"]["kernel"]) / "Image").read_bytes()


def test_build_killed_midway_leaves_no_valid_entry(kernel_source, tmp_path) -> None:
    from orchestrator.kernel.build import locked, valid_cached
    from orchestrator.paths import cache_dir

    token = fs.new_token()
    # v4-fixed after v4 on the same object directory: make recompiles a little, then we kill it.
    warm = _build("v4", token)
    warm.communicate(timeout=1800)
    assert warm.returncode == 0
    out_root = cache_dir("builds", "out")
    # An earlier run of this test left v4-fixed/minimal in the cache: invalidate
    # it (metadata.json is what makes an entry valid), under the source's lock so
    # no build is using it, so that make runs and there is something to kill.
    with locked(f"tree-{kernel_source.key}"):
        for meta in out_root.glob("*/metadata.json"):
            try:
                m = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if m.get("variant") == "v4-fixed" and m.get("config_set") == "minimal":
                meta.unlink()
    t0 = time.time()
    run = _build("v4-fixed", token)
    victim: Path | None = None
    try:
        end = time.monotonic() + 1800
        while victim is None and run.poll() is None and time.monotonic() < end:
            for log in out_root.glob("*/build.log"):
                try:
                    if log.stat().st_mtime >= t0 and "$ make" in log.read_text(errors="replace"):
                        victim = log.parent
                except OSError:
                    pass
            time.sleep(0.1)
        if victim is None:
            out, err = run.communicate(timeout=60)
            raise AssertionError(f"make never started (rc {run.returncode}): {out[-1000:]} {err[-2000:]}")
        os.killpg(run.pid, signal.SIGKILL)  # mid-way, as a power cut or `kill -9` would
        run.wait(timeout=30)
        left = fs.wait_no_leftovers(token)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        fs.kill_leftovers(token)
    assert left == []
    assert valid_cached(victim) is None  # metadata.json is written last
    again = _build("v4-fixed", token)
    out, err = again.communicate(timeout=1800)
    fs.kill_leftovers(token)
    assert again.returncode == 0, err[-3000:]
    assert "cache hit" not in out.split("variant v4-fixed: kernel ")[1].splitlines()[0]
    assert Path(_result(out)["kernel"]) == victim and valid_cached(victim) is not None
