"""A second Debian kernel through the whole pipeline (slow tier, `pytest -m slow`):
linux-source-6.1 built (evidence + MODULES), booted at EL2, page-idle run by
./run-matrix with matrices/linux-6.1.yaml; its kcidb.json validated with
kcidb-io.  Cold: ~4.5 min kernel + selftests + boot + workload on 2 cores;
too slow for CI beside the 6.12 suite, so deselected by default (pyproject)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kcidb_io.schema import V5_3

from orchestrator.kernel import toolchain
from orchestrator.kernel.build import make_env
from orchestrator.errors import UserError
from orchestrator.kernel.kconfig import generate_config, load_config_set
from orchestrator.kernel.source import SourceSpec, prepare

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")


@pytest.fixture(scope="module")
def source61():
    if not TARBALL.is_file():
        pytest.fail(f"{TARBALL} missing: apt-get install linux-source-6.1 (the slow tier needs it)")
    return prepare(SourceSpec.parse(str(TARBALL)))


def test_evidence_on_61_names_the_modules_dependency(source61, tmp_path: Path):
    """The shipped `evidence` set on 6.1: KPROBES dropped, and the error says
    why from 6.1's own arch/Kconfig and offers CONFIG_MODULES=y."""
    tc = toolchain.detect()
    with pytest.raises(UserError) as exc:
        generate_config(source61.repo, tmp_path / "obj", load_config_set("evidence"), make_env(tc), tc.make_vars())
    assert "KPROBES depends on MODULES [=n] (arch/Kconfig:" in exc.value.message
    assert "'CONFIG_MODULES=y'" in exc.value.hint


def test_run_matrix_builds_boots_and_runs_page_idle_on_61(tmp_path: Path):
    out = tmp_path / "r61"
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run-matrix", "--matrix", "linux-6.1",
                          "--results", str(out), "--kcidb-origin", "arm64_orchestrator:linux61-"],
                         cwd=ROOT, capture_output=True, text=True, timeout=3600)
    cells = list((out / "cells").iterdir())
    assert len(cells) == 1, res.stderr[-3000:]
    cell = json.loads((cells[0] / "cell.json").read_text())
    steps = {s["name"]: s for s in cell["steps"]}
    assert steps["build"]["status"] == "passed", steps["build"]
    assert steps["boot"]["status"] == "passed" and steps["nested-kvm"]["status"] == "passed"
    assert steps["workload page-idle"]["status"] == "passed", steps["workload page-idle"]
    assert any(k.startswith("phase.") for k in cell["metrics"]), cell["metrics"]
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads((out / "kcidb.json").read_text())
    V5_3.validate(data)
    assert data["checkouts"][0]["git_commit_name"].startswith("6.1.")
    assert data["builds"][0]["status"] == "PASS" and data["builds"][0]["compiler"].startswith("aarch64-linux-gnu-gcc")
    assert {t["path"]: t["status"] for t in data["tests"]}["workload.page-idle"] == "PASS"
