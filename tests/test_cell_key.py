"""The --resume key covers the code that turns guest text into verdicts: every
file it names must exist, or an edit to it would silently keep stale cells."""
from orchestrator.matrix.cell_key import VERDICT_CODE


def test_verdict_code_files_exist():
    missing = [str(p) for p in VERDICT_CODE if not p.is_file()]
    assert not missing, f"cell_key.VERDICT_CODE names files that do not exist: {missing}"
