"""A GuestJob as a LAVA job and a QEMU device dictionary: golden files (as
tuxrun checks its rendered jobs), and both validated by LAVA's own schemas
(lava_common, from the Debian lava-common package) in the system Python."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.target.job import GuestJob, GuestScript
from orchestrator.target.lava import device, render
from orchestrator.vm.machine import HostInfo, shape_by_name

from conftest import missing_prerequisite

GOLDEN = Path(__file__).parent / "golden" / "lava"
X86 = HostInfo("x86_64", kvm_usable=False, kvm_nested=False, qemu_version=(7, 2))
SYSTEM_PYTHON = "/usr/bin/python3"


def sample_job(shape: str = "default") -> GuestJob:
    return GuestJob(
        "baseline.evidence.default.page-idle~1a2b3c.r1", shape_by_name(shape), Path("/cache/Image"),
        {"/opt/orch/bin/page_idle": Path("/cache/page_idle")},
        (GuestScript("nested-kvm", "dmesg | grep -i kvm\n/usr/bin/kvm_probe", 120),
         GuestScript("workload page-idle", "exec /opt/orch/workloads/run page-idle", 900,
                     ("/tmp/orch-evidence/lock_stat", "/tmp/orch-evidence/dmesg"), needs="nested-kvm")),
        boot_timeout_s=300)


def settings(**kw) -> render.JobSettings:
    return render.JobSettings("qemu", "file:///cache/Image", "file:///cache/initramfs-0123.cpio.gz", **kw)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("ORCH_REGEN_GOLDEN") == "1" and not path.exists():
        path.write_text(text)
    assert path.is_file(), f"{path} missing: create it with ORCH_REGEN_GOLDEN=1 (only for a new file)"
    assert text == path.read_text(), f"{name} changed: review the diff; delete the file and regenerate if intended"


def test_job_matches_golden_file() -> None:
    check_golden("job-lava-run.yaml", render.job_yaml(render.render_job(sample_job(), settings())))


def test_server_job_with_qemu_context_matches_golden_file() -> None:
    s = settings(context=render.qemu_context(shape_by_name("smp4")), tags=("kvm",), priority="high")
    check_golden("job-lava-server-smp4.yaml", render.job_yaml(render.render_job(sample_job("smp4"), s)))


def test_device_dictionary_matches_golden_and_the_local_qemu_options() -> None:
    dev = device.device_dictionary(shape_by_name("default"), X86)
    check_golden("device-default-x86.yaml", yaml.safe_dump(dev, sort_keys=False))
    opts = dev["actions"]["boot"]["methods"]["qemu"]["parameters"]["options"]
    # the local target's EL2 machine, CPU and accelerator; no NIC, kernel or initrd
    assert "-machine virt,virtualization=on,gic-version=3" in opts
    assert "-cpu max,pauth-impdef=on" in opts and "-accel tcg,thread=multi" in opts and "-smp 2" in opts
    assert not any(o.split()[0] in ("-kernel", "-initrd", "-append", "-netdev", "-device") for o in opts)


def test_steps_run_report_and_emit_each_script_in_order() -> None:
    job = sample_job()
    steps = render.test_steps(job)
    assert steps == [
        ". /opt/orch/lava/lib.sh",
        "orch_run 0 120",
        "lava-test-case nested-kvm --result $(orch_result 0) --measurement $(orch_seconds 0) --units seconds",
        "orch_emit 0",
        "orch_run 1 900 0",
        "lava-test-case workload_page-idle --result $(orch_result 1) --measurement $(orch_seconds 1) "
        "--units seconds",
        "orch_emit 1 /tmp/orch-evidence/lock_stat /tmp/orch-evidence/dmesg",
    ]
    assert render.step_files(job)["/opt/orch/lava/steps/1.sh"] == "exec /opt/orch/workloads/run page-idle\n"


def test_timeouts_cover_every_script_and_a_lab_ceiling_cuts_them() -> None:
    d = render.render_job(sample_job(), settings())
    test_s = d["actions"][2]["test"]["timeout"]["seconds"]
    assert test_s >= 120 + 900 and d["timeouts"]["job"]["seconds"] > test_s + 300
    capped = render.render_job(sample_job(), settings(max_job_timeout_s=60))
    assert capped["timeouts"]["job"]["seconds"] == 60 and capped["actions"][2]["test"]["timeout"]["seconds"] == 60


def test_case_names_are_lava_names_and_unique() -> None:
    job = GuestJob("k", shape_by_name("default"), Path("/I"), {},
                   (GuestScript("workload page-idle", "true", 5), GuestScript("workload/page idle", "true", 5)), 60)
    assert render.case_names(job) == ["workload_page-idle", "workload_page_idle"]
    assert render.case_name("a b:c") == "a_b_c"


def test_evidence_path_with_a_space_is_refused() -> None:
    job = GuestJob("k", shape_by_name("default"), Path("/I"), {}, (GuestScript("s", "true", 5, ("/tmp/a b",)),), 60)
    with pytest.raises(ValueError, match="without spaces"):
        render.test_steps(job)


def test_server_device_template_takes_the_shape_from_the_job_context() -> None:
    text = device.server_device_template(shape_by_name("default"))
    assert text.startswith("{% extends 'qemu.jinja2' %}")
    assert "-machine {{ machine|default('virt,virtualization=on,gic-version=3') }}" in text
    assert "extra: {{ extra_options }}" in text and "-nic none" in text


# -- LAVA's own schemas -------------------------------------------------------------------

VALIDATE = r"""
import json, sys, yaml
from lava_common.schemas import validate
from lava_common.schemas.device import validate as validate_device
docs = json.load(sys.stdin)
for kind, text in docs:
    data = yaml.safe_load(text)
    if kind == "device":
        validate_device(data)
    else:
        validate(data, strict=True)
print("ok")
"""


def _lava_validate(docs: list[tuple[str, str]]) -> subprocess.CompletedProcess:
    if not Path(SYSTEM_PYTHON).is_file() or subprocess.run(
            [SYSTEM_PYTHON, "-c", "import lava_common.schemas"], capture_output=True).returncode != 0:
        missing_prerequisite("lava_common (Debian package lava-common) is not installed: run ./scripts/bootstrap")
    return subprocess.run([SYSTEM_PYTHON, "-c", VALIDATE], input=json.dumps(docs), capture_output=True, text=True,
                          timeout=120)


def test_rendered_jobs_and_device_pass_lavas_schema() -> None:
    docs = [("job", render.job_yaml(render.render_job(sample_job(), settings()))),
            ("job", render.job_yaml(render.render_job(sample_job("smp4"), settings(
                context=render.qemu_context(shape_by_name("smp4")), tags=("kvm",))))),
            ("device", yaml.safe_dump(device.device_dictionary(shape_by_name("default"), X86)))]
    res = _lava_validate(docs)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_lavas_schema_would_catch_a_broken_job() -> None:
    d = render.render_job(sample_job(), settings())
    del d["actions"][0]["deploy"]["images"]["rootfs"]["url"]
    res = _lava_validate([("job", render.job_yaml(d))])
    assert res.returncode != 0 and "['rootfs']" in res.stderr.splitlines()[-1], res.stderr[-500:]
