"""The layering docs/architecture.md describes, checked on the source: imports
run down the pipeline (never up, never in a cycle between stages), and no
module but the two that tie every stage together imports more than a dozen
of the project's modules."""
from __future__ import annotations

import ast
from pathlib import Path

ORCH = Path(__file__).resolve().parent.parent / "orchestrator"
# Pipeline order: a package may import those before it, never those after.
STAGES = ["parsers", "kernel", "vm", "target", "workload", "judge", "reports", "matrix", "bisect"]
# Top-level modules every stage may use; they import no stage.
FOUNDATION = {"errors", "paths", "proc", "progress", "atomic", "datafiles", "guest_paths", "hostdeps"}
MAX_IMPORTS = 12
# cli.py is the shim over every stage; matrix/cell.py runs one cell through all of them.
WIDE = {"cli.py", "matrix/cell.py"}


def _runtime_imports(tree: ast.Module) -> list[str]:
    """orchestrator modules imported at run time (`if TYPE_CHECKING:` blocks left out)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    names = []
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("orchestrator"):
            continue
        parts = node.module.split(".")
        if len(parts) == 1 or (len(parts) == 2 and parts[1] in STAGES):
            names += [f"{node.module}.{a.name}" for a in node.names]
        else:
            names.append(node.module)
    return names


def _layer(module: str) -> str:
    """'orchestrator.vm.session' -> 'vm'; 'orchestrator.errors' -> 'errors'."""
    return module.split(".")[1]


def _modules():
    for path in sorted(ORCH.rglob("*.py")):
        rel = path.relative_to(ORCH).as_posix()
        yield rel, _runtime_imports(ast.parse(path.read_text()))


def test_imports_run_down_the_pipeline():
    wrong = []
    for rel, imports in _modules():
        own = rel.split("/")[0] if "/" in rel else rel[:-3]
        for mod in imports:
            dst = _layer(mod)
            if dst == own:
                continue
            if own in FOUNDATION:
                if dst not in FOUNDATION:
                    wrong.append(f"{rel} (foundation) imports {mod}")
            elif own in STAGES and dst in STAGES and STAGES.index(dst) > STAGES.index(own):
                wrong.append(f"{rel} ({own}) imports {mod} ({dst} comes later in the pipeline)")
    assert not wrong, "imports against the pipeline (docs/architecture.md):\n" + "\n".join(wrong)


def test_no_module_imports_more_than_a_dozen_others():
    wide = {rel: sorted(set(i)) for rel, i in _modules() if rel not in WIDE and len(set(i)) > MAX_IMPORTS}
    assert not wide, f"modules importing more than {MAX_IMPORTS} project modules: {wide}"
