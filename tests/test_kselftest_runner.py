"""guest/workloads/kselftest-kvm.sh, the guest's kselftest runner, run on the
host's /bin/sh over stand-in test programs: kselftest's conventions (exit 4
SKIP, a timeout is "not ok ... # TIMEOUT N seconds", settings x factor,
--override-timeout), the known-broken and unavailable lists, the copy of
every line to the console, and parsers/ktap.py reading what it printed.
(In the guest it runs under busybox sh, booted by the integration tests.)"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.parsers.ktap import parse_ktap
from orchestrator.paths import GUEST_DIR

RUNNER = GUEST_DIR / "workloads" / "kselftest-kvm.sh"

PROGRAMS = {
    "passes": "echo hello\nexit 0\n",
    "skips": "echo 'TAP version 13'\necho '1..2'\necho 'ok 1 first'\necho 'ok 2 second # SKIP no second'\nexit 4\n",
    "fails": "echo 'bad thing' >&2\nprintf 'no newline at the end'\nexit 1\n",
    "hangs": "sleep 30\n",
}


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "workloads").mkdir()
    shutil.copy(RUNNER, tmp_path / "workloads" / RUNNER.name)
    tests = tmp_path / "selftests"
    tests.mkdir()
    for name, body in PROGRAMS.items():
        (tests / name).write_text("#!/bin/sh\n" + body)
        (tests / name).chmod(0o755)
    (tests / "kselftest-list.txt").write_text("".join(f"kvm:{n}\n" for n in PROGRAMS))
    (tests / "unavailable.txt").write_text("nobuild\tdid not build on this tree (make exit 2): nobuild.c:3: error: x\n")
    (tests / "settings").write_text("timeout=1\n")
    return tmp_path


def run(root: Path, *args: str) -> tuple[int, str, str]:
    console = root / "console.txt"
    res = subprocess.run(["sh", str(root / "workloads" / RUNNER.name), *args], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "ORCH_CONSOLE": str(console)})
    return res.returncode, res.stdout, console.read_text() if console.is_file() else ""


def test_the_whole_list_as_kselftest_reports_it(root):
    rc, out, console = run(root, "-f", "2", "all")
    assert rc == 1  # a test failed
    assert out == console  # every line is on the console too: a crash cannot take them
    lines = out.splitlines()
    assert lines[:4] == ["TAP version 13", "1..5", "# orch-plan: passes skips fails hangs nobuild",
                         "# timeout set to 2 (settings x 2)"]
    assert "ok 1 selftests: kvm: passes" in lines
    assert "ok 2 selftests: kvm: skips # SKIP" in lines
    assert "not ok 3 selftests: kvm: fails # exit=1" in lines
    assert "# no newline at the end" in lines  # a last line without newline is kept
    assert "not ok 4 selftests: kvm: hangs # TIMEOUT 2 seconds" in lines
    assert ("ok 5 selftests: kvm: nobuild # SKIP unavailable: did not build on this tree (make exit 2): "
            "nobuild.c:3: error: x") in lines
    doc = parse_ktap(out)
    assert doc.complete and doc.plan == 5
    got = {t.name: (t.status, t.reason) for t in doc.tests}
    assert got == {"passes": ("pass", ""), "skips": ("skip", ""), "fails": ("fail", "exit=1"),
                   "hangs": ("fail", "TIMEOUT 2 s"),
                   "nobuild": ("skip", "unavailable: did not build on this tree (make exit 2): nobuild.c:3: error: x")}
    skips = next(t for t in doc.tests if t.name == "skips")
    assert [(s.name, s.status, s.reason) for s in skips.subtests] == [("first", "pass", ""), ("second", "skip", "no second")]
    hangs = next(t for t in doc.tests if t.name == "hangs")
    assert 1.9 <= hangs.seconds < 10


def test_known_broken_skipped_with_reason_args_and_override(root):
    (root / "selftests" / "passes").write_text('#!/bin/sh\necho "args: $*"\n')
    rc, out, _ = run(root, "-o", "1", "-s", "hangs=needs hardware PMU", "-a", "passes=-m 6", "passes", "hangs", "nosuch")
    assert rc == 0
    assert "# timeout set to 1 (override)" in out
    assert "# args: -m 6" in out
    assert "ok 2 selftests: kvm: hangs # SKIP needs hardware PMU" in out
    assert "ok 3 selftests: kvm: nosuch # SKIP unavailable: not in this tree's KVM selftests" in out
