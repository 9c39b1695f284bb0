"""Bad matrix input is found when the matrix is loaded: before listing (what CI
uses to plan jobs), building or booting; and a near miss names the closest
valid name."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.matrix.spec import load_matrix

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return p


def test_list_refuses_an_unknown_parameter_with_the_closest_name(tmp_path: Path) -> None:
    m = write(tmp_path, "variants: [baseline]\nworkloads:\n  - page-idle\n  - {name: mglru-aging, params: {vcpu: 1}}\n")
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run-matrix", "--matrix", str(m), "--list"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == ""  # no cell listed
    assert "Traceback" not in res.stderr
    assert f"error: {m}:4: workloads[1].params.vcpu: workload mglru-aging has no parameter 'vcpu' " \
           "(did you mean 'vcpus'?); its parameters: " in res.stderr


@pytest.mark.parametrize(("text", "needle"), [
    # a value that fails its pattern, in the workloads list and in an include
    ("variants: [baseline]\nworkloads: [{name: page-idle, params: {bytes: lots}}]\n",
     "m.yaml:2: workloads[0].params: workload page-idle: parameter bytes='lots' does not match ^[0-9]+[KMG]?$"),
    ("variants: [baseline]\nworkloads: [page-idle]\ninclude:\n  - {variant: baseline, workload: {name: page-idle, params: {vcpus: x}}}\n",
     "m.yaml:4: include[0].workload.params: workload page-idle: parameter vcpus='x' does not match"),
    # typo help for keys, workloads and machines
    ("variant: [baseline]\nworkloads: [page-idle]\n", "m.yaml:1: variant: unknown key (did you mean 'variants'?)"),
    ("variants: [baseline]\nworkloads: [page-idel]\n",
     "m.yaml:2: workloads[0]: unknown workload 'page-idel' (did you mean 'page-idle'?); known workloads: "),
    ("variants: [baseline]\nmachines: [default, nvhee]\nworkloads: [page-idle]\n",
     "m.yaml:2: machines: unknown machine shape 'nvhee' (did you mean 'nvhe'?); known shapes: "),
    ("variants: [baseline]\nworkloads: [page-idle]\nexclude:\n  - {machin: nvhe}\n",
     "m.yaml:4: exclude[0].machin: unknown key (did you mean 'machine'?)"),
])
def test_every_cell_is_validated_at_load_time(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(UserError) as exc:
        load_matrix(write(tmp_path, text))
    assert needle in str(exc.value)


def test_no_suggestion_for_a_name_nothing_is_close_to(tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        load_matrix(write(tmp_path, "variants: [baseline]\nworkloads: [qqqqqqqq]\n"))
    assert "did you mean" not in str(exc.value) and "known workloads: " in str(exc.value)


@pytest.mark.parametrize(("args", "needle"), [
    (["--variant", "v4-fixd"], "error: unknown variant 'v4-fixd' in patches/variants.yaml (did you mean 'v4-fixed'?)"),
    (["--variant", "v4-fixed", "--config-set", "evidnce"], "error: unknown config set 'evidnce' (did you mean 'evidence'?)"),
])
def test_build_names_the_closest_variant_and_config_set(tmp_path: Path, args: list[str], needle: str) -> None:
    # Refused before any source is prepared: an empty cache stays empty.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "build", "--series", "patches", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert needle in res.stderr, res.stderr
    assert "how to fix: " in res.stderr
    assert not (tmp_path / "cache" / "arm64-orchestrator" / "sources").exists()
