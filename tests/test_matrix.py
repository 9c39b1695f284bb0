"""Matrix expansion, include/exclude, schema errors and sharding."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.matrix.spec import load_matrix, shard


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return p


BASE = """\
variants: [baseline, v4, v4-fixed]
machines: [default, nvhe]
workloads:
  - page-idle
  - {name: mglru-aging, params: {vcpus: 2, bytes: 64M}}
repeats: 2
"""


def test_product_of_axes_and_repeats(tmp_path):
    m = load_matrix(write(tmp_path, BASE))
    assert len(m.cells) == 3 * 2 * 2 * 2
    assert len({c.key for c in m.cells}) == len(m.cells)
    assert m.compare == [("baseline", "v4"), ("baseline", "v4-fixed")]


def test_exclude_partial_match_and_include(tmp_path):
    text = BASE + """\
exclude:
  - {variant: v4, machine: nvhe}
include:
  - {variant: v4, machine: nvhe, workload: {name: race, params: {seconds: 30}}}
"""
    m = load_matrix(write(tmp_path, text))
    v4_nvhe = [c for c in m.cells if c.variant == "v4" and c.machine == "nvhe"]
    assert [c.workload.name for c in v4_nvhe] == ["race", "race"]  # one per repeat
    assert len(m.cells) == 24 - 4 + 2


def test_shipped_matrices_load():
    assert load_matrix("default").cells
    assert load_matrix("smoke").cells


@pytest.mark.parametrize("text,needle", [
    ("variants: [a]\nworkloads: [page-idle]\nmachnes: [default]\n", "m.yaml:3: machnes: unknown key"),
    ("variants: [a]\nworkloads: [page-idle]\nrepeats: many\n", "m.yaml:3: repeats: expected an integer"),
    ("variants: [../etc]\nworkloads: [page-idle]\n", "m.yaml:1: variants"),
    ("variants: [a]\n", "workloads: missing"),
    ("variants: [a]\nworkloads: [page-idle]\nexclude:\n  - {varient: a}\n", "m.yaml:4: exclude[0].varient: unknown key (did you mean 'variant'?); allowed: variant"),
    ("variants: [a\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_schema_errors_name_file_line_key(tmp_path, text, needle):
    with pytest.raises(UserError) as exc:
        load_matrix(write(tmp_path, text))
    assert needle in str(exc.value)


def test_yaml_bomb_is_refused_quickly(tmp_path):
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n'
    with pytest.raises(UserError) as exc:
        load_matrix(write(tmp_path, bomb))
    assert "anchors/aliases are not allowed" in str(exc.value)


def test_too_many_cells_is_refused(tmp_path):
    with pytest.raises(UserError) as exc:
        load_matrix(write(tmp_path, "variants: [a]\nworkloads: [page-idle]\nrepeats: 1000\nmachines: [a, b, c, d, e, f]\n"))
    assert "more than" in str(exc.value)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_shards_partition_and_balance(tmp_path, n):
    m = load_matrix(write(tmp_path, BASE))
    parts = [shard(m.cells, i, n) for i in range(1, n + 1)]
    keys = [c.key for p in parts for c in p]
    assert sorted(keys) == sorted(c.key for c in m.cells)  # every cell exactly once
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert parts == [shard(m.cells, i, n) for i in range(1, n + 1)]  # deterministic


def test_shards_keep_builds_together_when_possible(tmp_path):
    m = load_matrix(write(tmp_path, BASE))  # 3 builds x 8 cells
    parts = [shard(m.cells, i, 3) for i in range(1, 4)]
    assert all(len({c.build_key for c in p}) == 1 for p in parts)


def test_bad_shard_spec():
    with pytest.raises(UserError):
        shard([], 4, 3)
