"""The QEMU device LAVA boots the job on, from the cell's machine shape.

lava-run needs the *rendered* device dictionary (what lava-server would make
from qemu.jinja2); a LAVA server needs a device dictionary template that
extends qemu.jinja2.  Both give QEMU the same options as the local target's
command line (vm.machine.render_qemu_argv: EL2, GIC, CPU model, vCPUs,
memory, accelerator), minus the kernel, initrd and command line, which the
job's deploy action passes, and minus the network (LAVA uses the serial
console only).  Checked by LAVA's own device schema in the tests.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.vm.machine import HostInfo, MachineShape, render_qemu_argv

# The options the job's deploy action supplies (image_arg), dropped from the argv.
_FROM_JOB = ("-kernel", "-initrd", "-append")

# Constants a rendered device dictionary must have (validation fails without
# them: measured with lava-dispatcher 2023.01, shared/docs/lava/README.md).
_CONSTANTS: dict[str, Any] = {
    "shutdown-message": "The system is going down for reboot NOW",
    "kernel-start-message": "Linux version [0-9]",
    "default-shell-prompt": "lava-test: # ",
    "spawn_maxread": "4092",
    "failure_retry": 1,
    "boot_retry": None,
    "posix": {"lava_test_sh_cmd": "/bin/sh", "lava_test_results_dir": "/lava-%s",
              "lava_test_shell_file": "~/.bashrc"},
}

_ACTION_TIMEOUTS: dict[str, dict[str, int]] = {
    "apply-overlay-image": {"minutes": 2}, "dd-image": {"minutes": 10}, "download-retry": {"minutes": 5},
    "http-download": {"minutes": 5}, "lava-test-shell": {"minutes": 3}, "nfs-deploy": {"minutes": 10},
    "power-off": {"seconds": 10}, "bootloader-commands": {"minutes": 3}, "bootloader-interrupt": {"seconds": 30},
    "u-boot-interrupt": {"seconds": 30}, "umount-retry": {"seconds": 45}, "auto-login-action": {"minutes": 2},
    "bootloader-action": {"minutes": 3}, "uboot-action": {"minutes": 3}, "uboot-retry": {"minutes": 3},
    "bootloader-retry": {"minutes": 3}, "boot-qemu-image": {"minutes": 2}, "boot-image-retry": {"minutes": 2},
}
_CONNECTION_TIMEOUTS: dict[str, dict[str, int]] = {
    "dd-image": {"minutes": 10}, "uboot-retry": {"seconds": 30}, "bootloader-commands": {"seconds": 30},
    "auto-login-action": {"minutes": 2}, "bootloader-interrupt": {"seconds": 30},
    "u-boot-interrupt": {"seconds": 30}, "lava-test-shell": {"seconds": 10},
}


def qemu_options(shape: MachineShape, host: HostInfo | None = None) -> list[str]:
    """The local target's QEMU options for shape, one "-opt value" string each
    (LAVA joins them with spaces), without kernel, initrd, command line and NIC."""
    argv = render_qemu_argv(replace(shape, network=False), Path("Image"), Path("initrd"), host=host)[1:]
    out: list[str] = []
    i = 0
    while i < len(argv):
        opt = argv[i]
        has_value = i + 1 < len(argv) and not argv[i + 1].startswith("-")
        if opt in _FROM_JOB:
            i += 2
            continue
        out.append(f"{opt} {argv[i + 1]}" if has_value else opt)
        i += 2 if has_value else 1
    return out


def device_dictionary(shape: MachineShape, host: HostInfo | None = None) -> dict[str, Any]:
    """The rendered device dictionary for `lava-run --device`."""
    return {
        "device_info": [{"board": "qemu"}],
        "available_architectures": ["arm64", "aarch64"],
        "constants": _CONSTANTS,
        "parameters": {"pass": None},  # as base.jinja2 renders it for a device with no media
        "actions": {
            "deploy": {"connections": {"serial": None},
                       "methods": {"image": {"parameters": {
                           # required by validation even for tmpfs deploys
                           "guest": {"size": 512, "interface": "ide", "driveid": "lavatest"}}}}},
            "boot": {"connections": {"serial": None},
                     "methods": {"qemu": {"parameters": {"command": "qemu-system-aarch64",
                                                         "options": qemu_options(shape, host)}}}},
        },
        "timeouts": {"actions": _ACTION_TIMEOUTS, "connections": _CONNECTION_TIMEOUTS},
    }


def server_device_template(shape: MachineShape) -> str:
    """A device dictionary for lava-server (devices/NAME.jinja2): qemu.jinja2
    with the local target's options (the stock block adds user networking and
    has no switch to turn it off).  CPU model, machine, memory and the
    extra options (vCPUs, accelerator) come from the job context
    (render.qemu_context), so one device serves every machine shape; the
    defaults are the given shape's."""
    machine = f"virt,virtualization={'on' if shape.virtualization else 'off'},gic-version={shape.gic_version}"
    lines = ["{% extends 'qemu.jinja2' %}", "{% block qemu_options %}",
             f"          - -cpu {{{{ cpu|default('{shape.cpu}') }}}}",
             f"          - -machine {{{{ machine|default('{machine}') }}}}",
             f"          - -m {{{{ memory|default({shape.memory_mb}) }}}}",
             "          - -nodefaults",
             "          - -display none",
             "          - -no-reboot",
             "          - -chardev stdio,id=console,signal=off",
             "          - -serial chardev:console",
             "          - -nic none",
             "{% if extra_options %}",
             "          extra: {{ extra_options }}",
             "{% endif %}",
             "{% endblock qemu_options %}"]
    return "\n".join(lines) + "\n"
