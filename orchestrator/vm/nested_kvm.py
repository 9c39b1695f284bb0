"""Is KVM usable inside the guest?  Evidence from dmesg, /dev/kvm and a probe.

The guest kernel must have started all CPUs at EL2, initialised KVM (VHE or
nVHE), created /dev/kvm, and guest/kvm_probe must create a VM and vCPU and
run four instructions to an MMIO exit.  The check is one guest script
(nested_kvm_script: what any target runs, its exit status 0 only when KVM is
usable, so later scripts can depend on it); its output is parsed by pure
functions (parse_nested_kvm_output, parse_nested_kvm), tested on captured text.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.kernel import toolchain
from orchestrator.paths import GUEST_DIR
from orchestrator.guest_paths import KVM_PROBE_PATH
from orchestrator.kernel.static_program import compile_argv, compile_static

PROBE_SOURCE = GUEST_DIR / "kvm_probe.c"
PROBE_GUEST_PATH = KVM_PROBE_PATH  # the name session.py, tests and bench import

EL2_LINE = "CPU: All CPU(s) started at EL2"
VHE_LINE = "VHE mode initialized successfully"
NVHE_LINE = "Hyp nVHE mode initialized successfully"
PROBE_OK = "KVM-PROBE result ok"


@dataclass(frozen=True)
class NestedKvmCheck:
    ok: bool
    mode: str | None  # "vhe" | "nvhe" | None
    evidence: list[str]
    reason: str  # why not ok ("" when ok)


PROBE_FLAGS = ("-O2", "-Wall")


def probe_compile_argv(tc: toolchain.Toolchain, out: Path) -> list[str]:
    """The probe is built by the compiler the kernel build uses: the cross gcc
    on x86_64, the native gcc on an arm64 host (which has no cross compiler)."""
    return compile_argv(tc.gcc, [PROBE_SOURCE], PROBE_FLAGS, out)


def build_kvm_probe(tc: toolchain.Toolchain | None = None) -> Path:
    """Compile guest/kvm_probe.c statically for arm64 (cached by source, flags and compiler)."""
    tc = tc or toolchain.detect()  # a missing compiler is a UserError with the install command
    return compile_static([PROBE_SOURCE], tc, PROBE_FLAGS, "kvm_probe", timeout=120)


def parse_nested_kvm(dmesg: str, dev_kvm: bool, probe_output: str) -> NestedKvmCheck:
    """Decide from the guest's dmesg, whether /dev/kvm exists, and probe output."""
    evidence: list[str] = []
    problems: list[str] = []

    def find(text: str) -> str | None:
        for line in dmesg.splitlines():
            if text in line:
                return line.strip()
        return None

    el2 = find(EL2_LINE)
    if el2:
        evidence.append(el2)
    else:
        mixed = find("started at EL1") or find("CPU(s) started at")
        problems.append(f"CPUs did not all start at EL2 ({mixed or 'no CPU start line in dmesg'})")

    mode = None
    vhe, nvhe = find(VHE_LINE), find(NVHE_LINE)
    # The nVHE line contains the VHE text too: test it first.
    if nvhe:
        mode = "nvhe"
        evidence.append(nvhe)
    elif vhe:
        mode = "vhe"
        evidence.append(vhe)
    else:
        kvm_lines = [line.strip() for line in dmesg.splitlines() if re.search(r"\bkvm\b", line)]
        problems.append("KVM did not initialise"
                        + (f" (last kvm line: {kvm_lines[-1]})" if kvm_lines else
                           " (no kvm lines in dmesg: CONFIG_KVM off?)"))

    if dev_kvm:
        evidence.append("/dev/kvm exists")
    else:
        problems.append("/dev/kvm is missing")

    probe_lines = [ln.strip() for ln in probe_output.splitlines() if ln.startswith("KVM-PROBE")]
    evidence += probe_lines
    if PROBE_OK not in probe_output:
        failed = next((ln for ln in probe_lines if " FAIL" in ln), None)
        problems.append(f"kvm_probe failed: {failed or probe_output.strip()[-200:] or 'no output'}")

    return NestedKvmCheck(not problems, mode, evidence, "; ".join(problems))


# Section markers in the script's output (at the start of a line, alone on it).
SECTION = "ORCH-NESTED-KVM"


def nested_kvm_script(probe_path: str = PROBE_GUEST_PATH) -> str:
    """The check as one sh script: dmesg, /dev/kvm, the probe, each after a
    marker line; exit status 0 only if every check parse_nested_kvm makes passes
    (the same strings), so a target can skip what needs KVM without parsing."""
    probe = shlex.quote(probe_path)
    return "\n".join([
        "ok=0",
        f"echo {SECTION} dmesg", "dmesg",
        f"echo {SECTION} dev-kvm", "if [ -c /dev/kvm ]; then echo present; else echo missing; ok=1; fi",
        f"echo {SECTION} probe", f"out=$({probe} 2>&1)", 'echo "$out"',
        f"dmesg | grep -qF {shlex.quote(EL2_LINE)} || ok=1",
        # The nVHE line contains the VHE text: one grep finds either.
        f"dmesg | grep -qF {shlex.quote(VHE_LINE)} || ok=1",
        f'echo "$out" | grep -qF {shlex.quote(PROBE_OK)} || ok=1',
        "exit $ok",
    ])


def parse_nested_kvm_output(output: str) -> NestedKvmCheck:
    """Decide from the output of nested_kvm_script (pure)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.replace("\r", "").splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == SECTION:
            current = sections.setdefault(words[1], [])
        elif current is not None:
            current.append(line)
    dev_kvm = [ln.strip() for ln in sections.get("dev-kvm", [])]
    return parse_nested_kvm("\n".join(sections.get("dmesg", [])), "present" in dev_kvm,
                            "\n".join(sections.get("probe", [])))


def check_nested_kvm(run: Callable[[str], tuple[int, str]],
                     probe_path: str = PROBE_GUEST_PATH) -> NestedKvmCheck:
    """Run the check with any command runner: run(script) -> (exit status, output)."""
    _, output = run(nested_kvm_script(probe_path))
    return parse_nested_kvm_output(output)
