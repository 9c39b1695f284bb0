"""A cell's inputs key: everything that can change its result.  `--resume`
keeps a finished cell only while its key is the same."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.kernel.variant_build import VariantBuild
from orchestrator.matrix.spec import Cell
from orchestrator.paths import PATCHES_DIR, PROJECT_ROOT
from orchestrator.target.base import DEFAULT_TARGET, load_target
from orchestrator.vm.image import packages_id
from orchestrator.vm.machine import shape_by_name
from orchestrator.workload.definitions import load_workload

_ORCH = PROJECT_ROOT / "orchestrator"
# The code that turns guest text into verdicts: a change here can change a
# finished cell's verdicts (tests/test_cell_key.py checks these exist).
VERDICT_CODE = (_ORCH / "workload" / "evidence.py", _ORCH / "judge" / "verdicts.py",
                _ORCH / "workload" / "definitions.py", _ORCH / "vm" / "nested_kvm.py")


def _file_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.name).encode())
        h.update(p.read_bytes() if p.is_file() else b"-")
    return h.hexdigest()


def _packages_id() -> str:
    """The guest image's Debian packages; if they cannot be fetched the boot step says why."""
    try:
        return packages_id()
    except UserError as exc:
        return f"unavailable: {exc.message}"


def cell_inputs_key(cell: Cell, vb: VariantBuild | None, target: str = DEFAULT_TARGET) -> str:
    """Everything that can change a cell's result: --resume reruns a cell when any of it changed
    (the target's identity included: another QEMU, another lab or device type)."""
    workload = load_workload(cell.workload.name)
    machine = shape_by_name(cell.machine)
    parts = [json.dumps(cell.to_json(), sort_keys=True), vb.kernel.key if vb else "no-kernel",
             vb.selftests.key if vb and vb.selftests else "-", repr(machine),
             # guest program paths are content-keyed cache dirs: edits change them
             ",".join(sorted(str(p) for p in vb.guest_programs.values())) if vb else "-",
             json.dumps(load_target(target).identity(), sort_keys=True), _packages_id() if vb else "-",
             _file_digest(workload.path, PATCHES_DIR / "expectations.yaml", *sorted((PROJECT_ROOT / "tracepoints").glob("*.yaml")),
                          PROJECT_ROOT / "guest" / "init", *sorted((PROJECT_ROOT / "guest" / "race").glob("*")),
                          PROJECT_ROOT / "guest" / "kvm_probe.c",
                          # the crash patterns and the code that turns guest text into verdicts
                          *sorted((_ORCH / "parsers").glob("*.py")), *sorted((_ORCH / "parsers").glob("*.yaml")),
                          *VERDICT_CODE)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
