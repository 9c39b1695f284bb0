"""No code or test pins the patch level of a Debian package that moves under it.

Debian replaces linux-source-6.12 with every 6.12.y security update and drops the
old package from the archive (6.12.117 became 6.12.118 between two CI runs), and
qemu-system-arm and gcc move the same way.  Code and tests compare with what is
installed; a literal like "6.12.117" may stand only in fixtures' provenance
notes (tests/fixtures/**/README.md, docs/) that record what they were captured
from.
"""
from __future__ import annotations

import re
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
# A full kernel release of Debian's two source packages (6.12.N, 6.1.N).
PATCH_LEVEL = re.compile(r"\b6\.(?:12|1)\.\d{2,3}\b")
# Synthetic strings stand in for installed tools in unit tests; a check on
# what is installed never names its version.  These are the places allowed to
# say a version, and why.
ALLOWED = {
    "tests/test_no_pinned_patch_level.py": "this file",
    "tests/test_kcidb.py": "describes a recorded fixture (kcidb/linux-6.1-run)",
    "orchestrator/kernel/source.py": "a docstring's example of a package version",
}


def code_files() -> list[Path]:
    files: list[Path] = []
    for sub in ("orchestrator", "tests", "bench", "scripts"):
        files += [p for p in (TOP / sub).rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".sh", "")
                  and "fixtures" not in p.parts and "golden" not in p.parts and "__pycache__" not in p.parts]
    return files + [TOP / "run-matrix", TOP / "run-tests", TOP / ".ci" / "run"]


def test_no_code_or_test_names_a_debian_patch_level():
    found = []
    for path in code_files():
        rel = path.relative_to(TOP).as_posix()
        if rel in ALLOWED:
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if PATCH_LEVEL.search(line):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "patch-level literals (compare with what is installed instead):\n" + "\n".join(found)


def test_the_check_sees_a_pinned_literal():
    assert PATCH_LEVEL.search('assert v == "6.12.117"') and PATCH_LEVEL.search("6.1.192")
    assert not PATCH_LEVEL.search("6.12") and not PATCH_LEVEL.search("linux-source-6.12.tar.xz")
