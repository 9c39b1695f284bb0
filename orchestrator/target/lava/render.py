"""A GuestJob as one LAVA job definition (pure: data in, YAML text out).

The job deploys the kernel and the project's initramfs to tmpfs (LAVA writes
its own test overlay straight into the cpio: `overlays: {lava: true}`),
boots it with QEMU and runs one inline test definition: it sources the guest
library (guest_lib.sh), then for each of the cell's scripts runs it
(orch_run), reports it with lava-test-case (its seconds as the measurement)
and prints its output and evidence files between marker lines (orch_emit).
The scripts themselves travel in the initramfs (steps/N.sh, step_files), so
the job stays readable and no script text is quoted into YAML.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from orchestrator.target.job import GuestJob
from orchestrator.vm.machine import MachineShape, kernel_cmdline

GUEST_LIB = "/opt/orch/lava/lib.sh"
GUEST_STEPS_DIR = "/opt/orch/lava/steps"
DEFINITION = "orch"  # the inline test definition's name: LAVA reports it as "1_orch"
# guest/init's shell prompt (PS1='# '): LAVA waits for it after the kernel boots.
PROMPT = "# "
# What LAVA needs besides the scripts' own time: deploying (unpacking the
# initramfs, adding the overlay), printing the blocks, powering off.
DEPLOY_TIMEOUT_S = 600
EMIT_MARGIN_S = 60  # per script: orch_emit prints its output and evidence
TEST_MARGIN_S = 120
JOB_MARGIN_S = 300
_CASE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class JobSettings:
    """What the target file says about the lab (not about the cell)."""
    device_type: str  # "qemu" for a QEMU device; a board's type in a lab
    kernel_url: str  # file:///... for a local dispatcher, https://... for a remote lab
    initramfs_url: str
    job_name_prefix: str = "orch"
    priority: str = "medium"
    visibility: str = "public"
    tags: tuple[str, ...] = ()
    # Job context for the device template (qemu.jinja2: cpu, machine, memory,
    # extra_options); empty when the device dictionary carries the options.
    context: dict[str, Any] = field(default_factory=dict)
    # A lab's ceiling on job time (the target file's max_job_timeout_s): the
    # test action and the job are cut to it; None: what the scripts need.
    max_job_timeout_s: int | None = None


def case_name(name: str) -> str:
    """A script name as a LAVA test case name (letters, digits, . _ -)."""
    return _CASE_CHARS.sub("_", name).strip("_") or "script"


def case_names(job: GuestJob) -> list[str]:
    """One LAVA case name per script, unique within the job (in script order)."""
    out: list[str] = []
    for i, s in enumerate(job.scripts):
        name = case_name(s.name)
        out.append(name if name not in out else f"{name}_{i}")
    return out


def step_files(job: GuestJob) -> dict[str, str]:
    """Guest path -> text of each script, for the initramfs."""
    return {f"{GUEST_STEPS_DIR}/{i}.sh": s.script if s.script.endswith("\n") else s.script + "\n"
            for i, s in enumerate(job.scripts)}


def guest_cmdline(shape: MachineShape) -> str:
    """The kernel command line: the local target's, without the network (LAVA
    talks to the serial console; the QEMU device has no NIC)."""
    return kernel_cmdline(replace(shape, network=False))


def test_steps(job: GuestJob) -> list[str]:
    names = [s.name for s in job.scripts]
    steps = [f". {GUEST_LIB}"]
    for i, (s, case) in enumerate(zip(job.scripts, case_names(job), strict=True)):
        for path in s.evidence:
            if not path.startswith("/") or any(c.isspace() for c in path):
                raise ValueError(f"script {s.name!r}: evidence path {path!r} must be absolute, without spaces")
        needs = str(names.index(s.needs)) if s.needs is not None else ""
        steps.append(f"orch_run {i} {int(s.timeout_s)} {needs}".rstrip())
        steps.append(f"lava-test-case {case} --result $(orch_result {i}) "
                     f"--measurement $(orch_seconds {i}) --units seconds")
        steps.append(" ".join(["orch_emit", str(i), *(shlex.quote(p) for p in s.evidence)]))
    return steps


def _t(seconds: int) -> dict[str, int]:
    return {"seconds": int(seconds)}


def render_job(job: GuestJob, settings: JobSettings) -> dict[str, Any]:
    """The LAVA job definition as data (yaml.safe_dump it, or job_yaml)."""
    test_s = sum(int(s.timeout_s) + EMIT_MARGIN_S for s in job.scripts) + TEST_MARGIN_S
    job_s = DEPLOY_TIMEOUT_S + int(job.boot_timeout_s) + test_s + JOB_MARGIN_S
    if settings.max_job_timeout_s is not None:
        job_s = min(job_s, settings.max_job_timeout_s)
        test_s = min(test_s, job_s)
    definition: dict[str, Any] = {
        "device_type": settings.device_type,
        "job_name": f"{settings.job_name_prefix} {job.cell_key}",
        "priority": settings.priority,
        "visibility": settings.visibility,
        "context": {"arch": "arm64", **settings.context},
        "timeouts": {"job": _t(job_s), "action": _t(max(DEPLOY_TIMEOUT_S, test_s)),
                     "connection": {"minutes": 2}},
    }
    if settings.tags:
        definition["tags"] = list(settings.tags)
    definition["actions"] = [
        {"deploy": {
            "to": "tmpfs", "os": "oe", "timeout": _t(DEPLOY_TIMEOUT_S),
            "images": {
                "kernel": {"image_arg": f'-kernel {{kernel}} -append "{guest_cmdline(job.shape)}"',
                           "url": settings.kernel_url},
                "rootfs": {"image_arg": "-initrd {rootfs}", "url": settings.initramfs_url,
                           "compression": "gz", "format": "cpio.newc",
                           # written into the cpio; else LAVA builds a disk with libguestfs
                           "overlays": {"lava": True}},
            }}},
        {"boot": {"method": "qemu", "media": "tmpfs", "timeout": _t(job.boot_timeout_s),
                  "prompts": [PROMPT]}},
        {"test": {"timeout": _t(test_s), "definitions": [{
            "from": "inline", "name": DEFINITION, "path": f"inline/{DEFINITION}.yaml",
            "repository": {
                "metadata": {"format": "Lava-Test Test Definition 1.0", "name": DEFINITION,
                             "description": f"cell {job.cell_key}"},
                "run": {"steps": test_steps(job)},
            }}]}},
    ]
    return definition


def job_yaml(definition: dict[str, Any]) -> str:
    return yaml.safe_dump(definition, sort_keys=False, default_flow_style=False, width=1000)


def qemu_context(shape: MachineShape, accel: str = "tcg") -> dict[str, Any]:
    """Job context for a lab's `qemu` device type (qemu.jinja2 and
    device.server_device_template read cpu, machine, memory, extra_options):
    the shape's EL2 machine, CPU model, memory, vCPUs and accelerator."""
    machine = f"virt,virtualization={'on' if shape.virtualization else 'off'},gic-version={shape.gic_version}"
    return {"cpu": shape.cpu if accel == "tcg" else "host", "machine": machine, "memory": shape.memory_mb,
            "extra_options": [f"-smp {shape.vcpus}",
                              "-accel tcg,thread=multi" if accel == "tcg" else "-accel kvm"]}
