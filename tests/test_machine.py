"""Machine shapes: YAML validation and golden QEMU command lines.

Regenerate the golden files after an intended change with
    ORCH_UPDATE_GOLDEN=1 pytest tests/test_machine.py
and review the diff.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.vm import machine
from orchestrator.errors import UserError
from orchestrator.vm.machine import HostInfo, MachineShape

GOLDEN = Path(__file__).parent / "golden"
KERNEL = Path("/k/Image")
INITRD = Path("/k/initramfs.cpio.gz")

HOSTS = {
    "x86": HostInfo("x86_64", kvm_usable=True, kvm_nested=False, qemu_version=(7, 2)),
    "arm64-nested": HostInfo("aarch64", kvm_usable=True, kvm_nested=True, qemu_version=(10, 1)),
    "arm64-no-nested": HostInfo("aarch64", kvm_usable=True, kvm_nested=False,
                                qemu_version=(10, 1)),
}
CASES = [
    ("default", "x86", None),
    ("default", "x86", 10022),
    ("nvhe", "x86", 10022),
    ("smp4", "x86", 10022),
    ("default", "arm64-nested", 10022),
    ("default", "arm64-no-nested", None),
]


def _render(shape_name: str, host: str, port: int | None) -> dict:
    shape = machine.shape_by_name(shape_name)
    argv = machine.render_qemu_argv(shape, KERNEL, INITRD, "orch.zram=1G", port,
                                    host=HOSTS[host])
    return {"argv": argv, "reason": machine.plan_accel(shape, HOSTS[host]).reason}


@pytest.mark.parametrize(("shape_name", "host", "port"), CASES)
def test_golden_argv(shape_name: str, host: str, port: int | None) -> None:
    golden = GOLDEN / f"qemu-{shape_name}-{host}-{'ssh' if port else 'nossh'}.json"
    got = _render(shape_name, host, port)
    if os.environ.get("ORCH_UPDATE_GOLDEN"):
        # Regenerating is a change to review, never a pass: write the new file and
        # fail when it differs, so a run with the variable set cannot hide a change.
        text = json.dumps(got, indent=1) + "\n"
        if not golden.is_file() or golden.read_text() != text:
            golden.write_text(text)
            pytest.fail(f"{golden.name} regenerated: review `git diff {golden}`, then run without ORCH_UPDATE_GOLDEN",
                        pytrace=False)
    assert got == json.loads(golden.read_text())


def test_golden_facts() -> None:
    """The properties the golden files exist for, stated directly."""
    x86 = _render("default", "x86", 10022)["argv"]
    assert x86[x86.index("-accel") + 1] == "tcg,thread=multi"
    assert x86[x86.index("-machine") + 1] == "virt,virtualization=on,gic-version=3"
    assert "hostfwd=tcp:127.0.0.1:10022-:22" in x86[x86.index("-netdev") + 1]
    assert "virtio-net-pci,netdev=n0,romfile=" in x86
    append = x86[x86.index("-append") + 1]
    assert "orch.ssh=1" in append and "orch.zram=1G" in append
    nvhe = _render("nvhe", "x86", 10022)["argv"]
    assert "kvm-arm.mode=nvhe" in nvhe[nvhe.index("-append") + 1]
    assert "kvm-arm.mode" not in append
    smp4 = _render("smp4", "x86", None)["argv"]
    assert smp4[smp4.index("-smp") + 1] == "4"
    kvm = _render("default", "arm64-nested", 10022)
    assert kvm["argv"][kvm["argv"].index("-accel") + 1] == "kvm"
    assert kvm["argv"][kvm["argv"].index("-cpu") + 1] == "host"
    fallback = _render("default", "arm64-no-nested", None)
    assert "tcg" in fallback["argv"][fallback["argv"].index("-accel") + 1]
    assert "kvm-arm.mode=nested" in fallback["reason"]


def test_no_network_means_no_nic() -> None:
    shape = MachineShape(name="quiet", network=False)
    argv = machine.render_qemu_argv(shape, KERNEL, INITRD, host=HOSTS["x86"])
    assert argv[argv.index("-nic") + 1] == "none"
    assert "-netdev" not in argv
    with pytest.raises(UserError, match="network: false"):
        machine.render_qemu_argv(shape, KERNEL, INITRD, ssh_port=2222, host=HOSTS["x86"])


def test_old_qemu_falls_back_with_reason() -> None:
    host = HostInfo("aarch64", kvm_usable=True, kvm_nested=True, qemu_version=(7, 2))
    plan = machine.plan_accel(machine.shape_by_name("default"), host)
    assert plan.accel == "tcg" and "QEMU 7.2" in plan.reason
    forced = MachineShape(name="k", accel="kvm")
    with pytest.raises(UserError, match="accel kvm"):
        machine.plan_accel(forced, HOSTS["x86"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kvm_mode: pvhe\n", "key 'kvm_mode': got 'pvhe', expected one of vhe, nvhe"),
        ("vcpus: two\n", "key 'vcpus': got 'two', expected a int"),
        ("vcpus: 0\n", "key 'vcpus': got 0, expected an integer from 1 to 64"),
        ("accel: hvf\n", "expected one of auto, tcg, kvm"),
        ("gic_version: 4\n", "key 'gic_version': got '4', expected one of 2, 3, max"),
        ("cpus: 2\n", "unknown key 'cpus'"),
        ("network: yes please\n", "key 'network'"),
        ("cpu: 'max; rm -rf /'\n", "key 'cpu'"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_validation_names_file_key_and_allowed(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        machine.load_shape(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_shipped_shapes_load() -> None:
    names = machine.available_shapes()
    assert {"default", "nvhe", "smp4"} <= set(names)
    default = machine.shape_by_name("default")
    assert (default.vcpus, default.memory_mb, default.kvm_mode) == (2, 4096, "vhe")
    assert machine.shape_by_name("nvhe").kvm_mode == "nvhe"
    assert machine.shape_by_name("smp4").vcpus == 4
    with pytest.raises(UserError, match="unknown machine shape"):
        machine.shape_by_name("nope")
