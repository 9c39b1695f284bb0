"""Shared by tests/test_faults_*.py: test-only workloads and machine shapes,
the guest programs that produce faults for real, and leftover checks.

Every process a fault test starts (run-matrix, QEMU, make ...) inherits
ORCH_FAULT_TOKEN=<uuid> in its environment, so "nothing left behind" means:
no live process carries this test's token, and no process of other helpers
or runs is ever looked at, let alone killed.

Run as a script, it is `orchestrator run-matrix` with the test workloads,
machine shapes and guest programs installed (for tests that signal a real
run-matrix process):  python faults_support.py MACHINES_DIR -- ARGS...
"""
from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = HERE / "fixtures" / "workloads-faults"
GUEST_DIR = "/opt/orch/test-faults"
TOKEN_ENV = "ORCH_FAULT_TOKEN"


def new_token() -> str:
    return uuid.uuid4().hex[:16]


def fault_programs(cache: Path) -> dict[str, Path]:
    """guest path -> host file: the static fault program (compiled like the
    project's own, into the orchestrator's cache) and the fault script (in cache)."""
    from orchestrator.kernel import toolchain
    from orchestrator.kernel.static_program import compile_static

    binary = compile_static([FIXTURES / "fault.c"], toolchain.detect(), ("-O1", "-Wall"), "fault", timeout=120)
    script = cache / "fault-sh"
    script.write_bytes((FIXTURES / "fault.sh").read_bytes())
    script.chmod(0o755)
    return {f"{GUEST_DIR}/fault": binary, f"{GUEST_DIR}/fault-sh": script}


def write_shape(machines: Path, name: str, token: str, **keys) -> str:
    """A machine shape (default keys overridden by `keys`) whose kernel command
    line carries the token, so its QEMU can be found (and only it)."""
    machines.mkdir(parents=True, exist_ok=True)
    cmdline = " ".join(x for x in (keys.pop("cmdline", ""), f"orch.test={token}") if x)
    lines = [f"cmdline: {cmdline!r}"] + [f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in keys.items()]
    (machines / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return name


def install(machines: Path, programs: dict[str, Path], monkeypatch=None) -> None:
    """Point the orchestrator at the test workloads, test shapes and programs (in
    this process; with a pytest monkeypatch, undone after the test)."""
    import orchestrator.vm.machine
    import orchestrator.kernel.variant_build
    import orchestrator.workload.definitions

    def setattr_(obj, name, value):
        if monkeypatch is not None:
            monkeypatch.setattr(obj, name, value)
        else:
            setattr(obj, name, value)

    real = orchestrator.kernel.variant_build.all_guest_programs

    def with_faults(*args, **kwargs):
        return {**real(*args, **kwargs), **programs}

    setattr_(orchestrator.workload.definitions, "WORKLOADS_DIR", FIXTURES)
    setattr_(orchestrator.vm.machine, "MACHINES_DIR", machines)
    setattr_(orchestrator.kernel.variant_build, "all_guest_programs", with_faults)


def path_without(bindir: Path, *prefixes: str) -> Path:
    """A PATH directory with every program of $PATH except those whose name starts
    with one of prefixes: a host where they are not installed."""
    bindir.mkdir(parents=True, exist_ok=True)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not d or not Path(d).is_dir():
            continue
        for prog in Path(d).iterdir():
            if prog.name.startswith(prefixes) or (bindir / prog.name).exists() or (bindir / prog.name).is_symlink():
                continue
            if os.access(prog, os.X_OK) and not prog.is_dir():
                (bindir / prog.name).symlink_to(prog)
    return bindir


def processes_with_token(token: str) -> list[tuple[int, str]]:
    """(pid, command) of live processes whose environment or argv holds token (not this process)."""
    found = []
    needle = token.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            env = (entry / "environ").read_bytes()
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in env or needle in argv:
            found.append((int(entry.name), argv.replace(b"\0", b" ").decode(errors="replace")[:120]))
    return found


def wait_no_leftovers(token: str, seconds: float = 15.0) -> list[tuple[int, str]]:
    end = time.monotonic() + seconds
    while (left := processes_with_token(token)) and time.monotonic() < end:
        time.sleep(0.2)
    return left


def kill_leftovers(token: str) -> None:
    """Last resort in a test's cleanup: only processes carrying this test's token."""
    for pid, _ in processes_with_token(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def partial_files(root: Path) -> list[Path]:
    """Leftovers of interrupted atomic writes (NAME.tmp, NAME.tmpPID)."""
    return [p for p in root.rglob("*") if ".tmp" in p.name]


def temp_cache(root: Path, *, fresh: tuple[str, ...]) -> Path:
    """An XDG_CACHE_HOME whose arm64-orchestrator/ links every entry of the real
    cache except `fresh` (created empty): cached builds stay usable, locks stay
    shared with every other run, and what the test breaks stays its own."""
    from orchestrator.paths import cache_root

    real = cache_root()
    mine = root / "arm64-orchestrator"
    mine.mkdir(parents=True, exist_ok=True)
    for entry in real.iterdir():
        if entry.name not in fresh:
            (mine / entry.name).symlink_to(entry)
    for name in fresh:
        (mine / name).mkdir(exist_ok=True)
    return root


def main(argv: list[str]) -> int:
    machines = Path(argv[0])
    assert argv[1] == "--"
    programs = fault_programs(Path(os.environ["ORCH_FAULT_PROGRAMS"]))
    install(machines, programs)
    from orchestrator.cli import main as cli_main
    return cli_main(["run-matrix", *argv[2:]])


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
