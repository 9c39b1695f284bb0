"""Machine shapes (data in machines/*.yaml) and the QEMU command line for them.

A shape says what the guest should look like (vCPUs, memory, EL2 on/off, KVM
mode, network); `plan_accel` decides how this host can provide it (KVM or TCG,
and why), and `render_qemu_argv` turns both into an argument list.  Rendering
is pure given a HostInfo, so the argv of every shape is checked in as a golden
file (tests/golden/).
"""
from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path

from orchestrator import datafiles, proc
from orchestrator.errors import UserError
from orchestrator.paths import PROJECT_ROOT

MACHINES_DIR = PROJECT_ROOT / "machines"
QEMU = "qemu-system-aarch64"

ACCELS = ("auto", "tcg", "kvm")
KVM_MODES = ("vhe", "nvhe")
GIC_VERSIONS = ("2", "3", "max")
# QEMU releases before 10.0 refuse virtualization=on together with KVM.
QEMU_KVM_NESTED_MIN = (10, 0)
# Kernel command line of every boot: console on the PL011, and reboot at once
# on panic (with -no-reboot QEMU then exits instead of sitting in a dead guest).
BASE_CMDLINE = "console=ttyAMA0 panic=-1"
_CPU_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*(,[a-z0-9_-]+(=[a-z0-9_-]+)?)*$")


@dataclass(frozen=True)
class MachineShape:
    name: str
    accel: str = "auto"  # auto: KVM when it can provide the shape, else TCG
    cpu: str = "max,pauth-impdef=on"  # the TCG CPU model (KVM always uses "host")
    vcpus: int = 2
    memory_mb: int = 4096
    virtualization: bool = True  # guest starts at EL2 (needed for nested KVM)
    gic_version: str = "3"
    kvm_mode: str = "vhe"  # how the guest's own KVM runs: vhe | nvhe
    cmdline: str = ""  # extra kernel parameters
    network: bool = True  # virtio-net with QEMU user networking (needed for SSH)


class _ShapeWording(datafiles.KeyNamedInText):
    """Shape errors say `key 'vcpus': got 'two', expected a int`, as they always have."""

    def subject(self, at: datafiles.KeyPath) -> str:
        return f"key '{datafiles.render(at)}'" if at else ""

    def wrong_type(self, at: datafiles.KeyPath, got: str, expected: str) -> str:
        return self.say(at, f"got {got}, expected {expected}")


def _a(name: str) -> str:
    """Type errors name the MachineShape annotation ("expected a int"), as they always have."""
    return f"a {_ANNOTATIONS[name]}"


_ANNOTATIONS = {f.name: f.type for f in fields(MachineShape)}
_F = datafiles.Field
SHAPE_SCHEMA = datafiles.Mapping({
    "name": _F(datafiles.Str(expected=_a("name"))),
    "accel": _F(datafiles.Str(expected=_a("accel"), choices=ACCELS), help="auto | tcg | kvm"),
    "cpu": _F(datafiles.Str(expected=_a("cpu"), pattern=_CPU_RE.pattern,
                            matching="a QEMU CPU model with options, e.g. max,pauth-impdef=on"),
              help="the TCG CPU model (KVM uses host)"),
    "vcpus": _F(datafiles.Int(1, 64, expected=_a("vcpus"))),
    "memory_mb": _F(datafiles.Int(256, 65536, expected=_a("memory_mb"))),
    "virtualization": _F(datafiles.Bool(expected=_a("virtualization")), help="EL2 in the guest"),
    "gic_version": _F(datafiles.Str(expected=_a("gic_version"), choices=GIC_VERSIONS, numbers_as_text=True)),
    "kvm_mode": _F(datafiles.Str(expected=_a("kvm_mode"), choices=KVM_MODES), help="vhe | nvhe"),
    # printable words without quotes: they go onto the kernel command line as they are
    "cmdline": _F(datafiles.Str(expected=_a("cmdline"), pattern=r'[\x21\x23-\x7e\s]*',
                                matching="space-separated kernel parameters without quotes"),
                  help="extra kernel parameters"),
    "network": _F(datafiles.Bool(expected=_a("network")), help="virtio-net for SSH"),
}, expected="a mapping of keys to values at the top level")


def load_shape(path: Path) -> MachineShape:
    """Read and validate one machines/*.yaml file."""
    if not path.is_file():
        raise UserError(f"machine shape file not found: {path}",
                        hint=f"shapes available: {', '.join(available_shapes())}")
    doc = datafiles.load(path, SHAPE_SCHEMA, what="machine shape", wording=_ShapeWording())
    shape = MachineShape(**{"name": path.stem, **doc.data})
    if shape.kvm_mode == "nvhe" and not shape.virtualization:
        raise doc.error(("kvm_mode",), f"got {shape.kvm_mode!r}, expected vhe when virtualization is false (no EL2, no KVM)")
    return shape


def available_shapes() -> list[str]:
    return sorted(p.stem for p in MACHINES_DIR.glob("*.yaml"))


def shape_by_name(name_or_path: str) -> MachineShape:
    """'default' -> machines/default.yaml; a path with / or .yaml is read as is."""
    if "/" in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        return load_shape(Path(name_or_path))
    if name_or_path not in available_shapes():
        raise UserError(f"unknown machine shape '{name_or_path}'",
                        hint=f"use one of {', '.join(available_shapes())} or a path to a .yaml file")
    return load_shape(MACHINES_DIR / f"{name_or_path}.yaml")


# -- what this host can do ----------------------------------------------------

@dataclass(frozen=True)
class HostInfo:
    machine: str  # platform.machine(): x86_64, aarch64, ...
    kvm_usable: bool  # /dev/kvm can be opened read-write
    kvm_nested: bool  # host KVM offers EL2 to guests (kvm-arm.mode=nested)
    qemu_version: tuple[int, int]

    @classmethod
    def probe(cls, qemu: str = QEMU) -> HostInfo:
        machine = platform.machine()
        kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
        nested = False
        version = (0, 0)
        if machine in ("aarch64", "arm64") and kvm:
            try:
                nested = "kvm-arm.mode=nested" in Path("/proc/cmdline").read_text().split()
            except OSError:
                nested = False
            version = qemu_version(qemu).number
        return cls(machine, kvm, nested, version)


class QemuVersion(str):
    """What `QEMU --version` says: as a string "PATH: first line" (what records and
    the --resume key carry: another QEMU may change a result), with the parts
    the code decides on (`number`: (major, minor), (0, 0) when unknown)."""
    binary: str
    path: str | None  # None: not on PATH
    line: str  # first line of --version, or "not installed" / "version unknown"
    number: tuple[int, int]

    def __new__(cls, binary: str, path: str | None, line: str) -> QemuVersion:
        self = super().__new__(cls, f"{path or binary}: {line}")
        match = re.search(r"version (\d+)\.(\d+)", line)
        self.binary, self.path, self.line = binary, path, line
        self.number = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        return self


@functools.lru_cache(maxsize=4)
def qemu_version(qemu: str = QEMU) -> QemuVersion:
    """The one place QEMU's version is asked (once per binary and process)."""
    path = shutil.which(qemu)
    if path is None:
        return QemuVersion(qemu, None, "not installed")
    try:
        out = proc.run([path, "--version"], timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return QemuVersion(qemu, path, "version unknown")
    return QemuVersion(qemu, path, (out.splitlines() or ["version unknown"])[0].strip())


@dataclass(frozen=True)
class AccelPlan:
    accel: str  # "kvm" | "tcg"
    cpu: str
    reason: str  # one sentence: why this accelerator


def plan_accel(shape: MachineShape, host: HostInfo) -> AccelPlan:
    """KVM only where it can give the shape what it asks for; otherwise TCG."""
    arm_host = host.machine in ("aarch64", "arm64")
    if shape.accel == "tcg":
        return AccelPlan("tcg", shape.cpu, f"shape {shape.name} asks for TCG")
    why_not = None
    if not arm_host:
        why_not = f"host is {host.machine}, KVM needs an arm64 host"
    elif not host.kvm_usable:
        why_not = "/dev/kvm is missing or not read-write for this user"
    elif shape.virtualization and not host.kvm_nested:
        why_not = ("the guest needs EL2 (virtualization=on) but the host kernel does not "
                   "offer nested virtualization (boot it with kvm-arm.mode=nested)")
    elif shape.virtualization and host.qemu_version < QEMU_KVM_NESTED_MIN:
        why_not = (f"QEMU {host.qemu_version[0]}.{host.qemu_version[1]} cannot combine "
                   f"KVM with virtualization=on (needs >= {QEMU_KVM_NESTED_MIN[0]}.0)")
    if why_not is None:
        return AccelPlan("kvm", "host", "KVM on an arm64 host"
                         + (" with nested virtualization" if shape.virtualization else ""))
    if shape.accel == "kvm":
        raise UserError(f"shape {shape.name} asks for accel kvm, but {why_not}",
                        hint="use accel: auto or tcg in the shape file")
    return AccelPlan("tcg", shape.cpu, f"TCG because {why_not}")


# -- the command line ---------------------------------------------------------

def kernel_cmdline(shape: MachineShape, cmdline_extra: str = "", ssh: bool = False) -> str:
    words = BASE_CMDLINE.split()
    if shape.virtualization and shape.kvm_mode == "nvhe":
        words.append("kvm-arm.mode=nvhe")  # VHE is the default on a VHE-capable CPU at EL2
    if shape.network:
        words.append("orch.net=1")
        if ssh:
            words.append("orch.ssh=1")
    words += shape.cmdline.split()
    words += cmdline_extra.split()
    return " ".join(words)


def render_qemu_argv(
    shape: MachineShape,
    kernel: Path,
    initrd: Path,
    cmdline_extra: str = "",
    ssh_port: int | None = None,
    *,
    host: HostInfo | None = None,
    qemu: str = QEMU,
) -> list[str]:
    """The full qemu-system-aarch64 argument list for shape on host."""
    host = host or HostInfo.probe(qemu)
    plan = plan_accel(shape, host)
    if ssh_port is not None and not shape.network:
        raise UserError(f"shape {shape.name} has network: false, so SSH cannot be used",
                        hint="set network: true in the shape file or use the serial console")
    machine = f"virt,virtualization={'on' if shape.virtualization else 'off'}"
    machine += f",gic-version={shape.gic_version}"
    argv = [
        qemu,
        # No default devices: -nographic would add a NIC (and its option ROM,
        # "failed to find romfile efi-virtio.rom") and a monitor muxed on stdio.
        "-nodefaults", "-display", "none", "-no-reboot",
        "-accel", "tcg,thread=multi" if plan.accel == "tcg" else "kvm",
        "-machine", machine,
        "-cpu", plan.cpu,
        "-smp", str(shape.vcpus),
        "-m", str(shape.memory_mb),
        # The serial console is QEMU's stdio, byte for byte: no monitor escape
        # (Ctrl-A) and signal=off so a Ctrl-C we send reaches the guest.
        "-chardev", "stdio,id=console,signal=off",
        "-serial", "chardev:console",
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", kernel_cmdline(shape, cmdline_extra, ssh=ssh_port is not None),
    ]
    if shape.network:
        netdev = "user,id=n0"
        if ssh_port is not None:
            netdev += f",hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
        argv += ["-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,romfile="]
    else:
        argv += ["-nic", "none"]
    return argv
