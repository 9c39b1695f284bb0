"""One loader for every data file (orchestrator/datafiles.py): a bad file of
each kind names file, line, key and the closest known name, with a hint; the
shipped files all load."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import datafiles
from orchestrator.errors import UserError
from orchestrator.judge.verdicts import load_all_expectations
from orchestrator.kernel import kconfig
from orchestrator.kernel.variants import load_variants
from orchestrator.matrix.spec import MATRICES_DIR, load_matrix
from orchestrator.parsers import crashlog
from orchestrator.paths import KERNEL_CONFIGS_DIR, PATCHES_DIR
from orchestrator.vm import machine
from orchestrator.workload import definitions, tracing


def _error(load, *args) -> UserError:
    with pytest.raises(UserError) as exc:
        load(*args)
    assert exc.value.hint, f"no hint in {exc.value}"
    return exc.value


def _bad_matrix(tmp_path: Path) -> tuple[Path, UserError]:
    p = tmp_path / "m.yaml"
    p.write_text("variants: [baseline]\nworkloads: [page-idle]\nmachnes: [default]\n")
    return p, _error(load_matrix, p)


def _bad_machine(tmp_path: Path) -> tuple[Path, UserError]:
    p = tmp_path / "shape.yaml"
    p.write_text("vcpus: 2\nkvm_mod: vhe\n")
    return p, _error(machine.load_shape, p)


def _bad_workload(tmp_path: Path, monkeypatch) -> tuple[Path, UserError]:
    monkeypatch.setattr(definitions, "WORKLOADS_DIR", tmp_path)
    p = tmp_path / "w.yaml"
    p.write_text("program: bin/x\nargs: []\ntimeout_s: 5\noutput: phase-timing\n")
    return p, _error(definitions.load_workload, "w")


def _bad_tracepoints(tmp_path: Path, monkeypatch) -> tuple[Path, UserError]:
    monkeypatch.setattr(tracing, "TRACEPOINTS_DIR", tmp_path)
    p = tmp_path / "t.yaml"
    p.write_text("events: [kvm:kvm_age_hva]\nkprobes:\n  - {name: a, symbol: b, knd: r}\n")
    return p, _error(tracing.load_tracepoint_set, "t")


def _bad_crash_patterns(tmp_path: Path) -> tuple[Path, UserError]:
    p = tmp_path / "patterns.yaml"
    p.write_text("patterns:\n  - name: x\n    kind: bug\n    header: 'BUG: x'\n    title: t\n    extractor: stal\n")
    return p, _error(crashlog.load_patterns, p)


def _bad_expectations(tmp_path: Path) -> tuple[Path, UserError]:
    p = tmp_path / "expectations.yaml"
    p.write_text("v4:\n  - name: a\n    chek: kprobe.age_gfn.hits > 0\n")
    return p, _error(load_all_expectations, p)


def _bad_variants(tmp_path: Path) -> tuple[Path, UserError]:
    p = tmp_path / "variants.yaml"
    p.write_text("# variants\nvarients:\n  v4: []\n")
    return p, _error(load_variants, tmp_path)


def _bad_config_sets(tmp_path: Path, monkeypatch) -> tuple[Path, UserError]:
    monkeypatch.setattr(kconfig, "KERNEL_CONFIGS_DIR", tmp_path)
    (tmp_path / "kvm.config").write_text("CONFIG_KVM=y\n")
    p = tmp_path / "sets.yaml"
    p.write_text("sets:\n  good: [kvm]\n  s: {base: defconfig, fragment: [kvm]}\n")
    assert kconfig.load_config_set("good").base == "allnoconfig"  # a bad set does not break the others
    return p, _error(kconfig.load_config_set, "s")


@pytest.mark.parametrize(("kind", "line", "key", "closest"), [
    ("matrix", 3, "machnes: unknown key", "(did you mean 'machines'?)"),
    ("machine", 2, "unknown key 'kvm_mod'", "(did you mean 'kvm_mode'?)"),
    ("workload", 4, "output: got 'phase-timing'", "(closest: 'phase-timings')"),
    ("tracepoints", 3, "kprobes[0].knd: unknown key", "(did you mean 'kind'?)"),
    ("crash_patterns", 6, "patterns[0].extractor: got 'stal'", "(closest: 'stall')"),
    ("expectations", 3, "v4[0].chek: unknown key", "(did you mean 'check'?)"),
    ("variants", 2, "varients: unknown key", "(did you mean 'variants'?)"),
    ("config_sets", 3, "sets.s: unknown key 'fragment'", "(did you mean 'fragments'?)"),
])
def test_a_bad_file_of_each_kind_names_file_line_key_and_closest_name(tmp_path, monkeypatch, kind, line, key, closest):
    bad = globals()[f"_bad_{kind}"]
    path, err = bad(tmp_path, monkeypatch) if "monkeypatch" in bad.__code__.co_varnames else bad(tmp_path)
    assert err.message.startswith(f"{path}:{line}: "), err.message
    assert key in err.message and closest in err.message, err.message


def test_shipped_data_files_all_load():
    for name in machine.available_shapes():
        machine.shape_by_name(name)
    for p in sorted(definitions.WORKLOADS_DIR.glob("*.yaml")):
        definitions.load_workload(p.stem)
    for p in sorted(tracing.TRACEPOINTS_DIR.glob("*.yaml")):
        tracing.load_tracepoint_set(p.stem)
    assert crashlog.load_patterns().patterns
    assert load_all_expectations(PATCHES_DIR / "expectations.yaml")
    assert {"baseline", "v4", "v4-fixed"} <= set(load_variants(PATCHES_DIR))
    sets = datafiles.load(KERNEL_CONFIGS_DIR / "sets.yaml", kconfig.SETS_SCHEMA, what="config sets").data["sets"]
    for name in sets:
        assert kconfig.load_config_set(name).fragments
    for p in sorted(MATRICES_DIR.glob("*.yaml")):
        assert load_matrix(p).cells


# -- the loader itself ------------------------------------------------------------------

SCHEMA = datafiles.Mapping({
    "count": datafiles.Field(datafiles.Int(1, 9), required=True, help="how many"),
    "names": datafiles.Field(datafiles.List(datafiles.Str(), expected="a list of names"), default=[]),
})


def test_values_keep_their_lines_and_defaults_fill_in(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("# comment\ncount: 3\nnames:\n  - a\n  - b\n")
    doc = datafiles.load(p, SCHEMA, what="test")
    assert doc.data == {"count": 3, "names": ["a", "b"]}
    assert doc.line(("names", 1)) == 5 and doc.line(("count",)) == 2
    err = doc.error(("names", 1), "not wanted", hint="drop it")
    assert str(err) == f"{p}:5: names[1]: not wanted\n  how to fix: drop it"
    p.write_text("count: 1\n")
    assert datafiles.load(p, SCHEMA, what="test").data == {"count": 1, "names": []}


@pytest.mark.parametrize(("text", "message"), [
    ("count: [1\n", ":2: not valid YAML: "),
    ("names: [a]\n", ":1: missing count"),
    ("count: 10\n", ":1: count: got 10, expected an integer from 1 to 9"),
    ("count: two\n", ":1: count: expected an integer, got 'two'"),
    ("count: 1\nnames:\n  - [x]\n", ":3: names: expected a list of names, got a list at [0]"),
    ("- 1\n", ":1: expected a mapping, got a list"),
    ("", ":1: missing count"),
])
def test_errors_say_file_line_key_and_what_was_expected(tmp_path, text, message):
    p = tmp_path / "d.yaml"
    p.write_text(text)
    with pytest.raises(UserError) as exc:
        datafiles.load(p, SCHEMA, what="test")
    err = exc.value
    assert err.message.startswith(f"{p}{message}"), err.message
    assert err.hint


def test_aliases_are_refused_where_asked_and_bounded_everywhere(tmp_path, monkeypatch):
    p = tmp_path / "d.yaml"
    p.write_text("count: &c 1\nnames: [*c]\n")
    with pytest.raises(UserError, match=r"d.yaml:1: YAML anchors/aliases are not allowed in test files"):
        datafiles.load(p, SCHEMA, what="test", allow_aliases=False)
    # Aliases are walked each time they are used: a YAML bomb stops at MAX_VALUES.
    monkeypatch.setattr(datafiles, "MAX_VALUES", 50)
    p.write_text("count: 1\nnames: &n [a, b, c, d, e, f, g, h, i]\nmore: [*n, *n, *n, *n, *n, *n]\n")
    many = datafiles.Mapping({**SCHEMA.fields, "more": datafiles.Field(datafiles.List(datafiles.List(datafiles.Str())))})
    with pytest.raises(UserError, match="more than 50 values"):
        datafiles.load(p, many, what="test")


def test_too_large_a_file_is_refused_before_it_is_parsed(tmp_path):
    p = tmp_path / "d.yaml"
    with p.open("wb") as f:
        f.truncate(datafiles.MAX_BYTES + 1)
    with pytest.raises(UserError, match="test file larger than 1 MB"):
        datafiles.load(p, SCHEMA, what="test")


def test_timed_names_a_set_that_does_not_exist(tmp_path, monkeypatch):
    from orchestrator.kernel import kconfig
    from orchestrator.workload import timing
    f = tmp_path / "sets.yaml"
    f.write_text("sets:\n  timing: [base]\n  evidence: [base]\ntimed:\n  - timng\n")
    monkeypatch.setattr(kconfig, "sets_file", lambda: f)
    with pytest.raises(UserError) as e:
        timing.timed_config_sets()
    text = str(e.value)
    assert f"{f}:5:" in text and "'timng'" in text and "did you mean 'timing'" in text, text


def test_unknown_workload_or_tracepoint_set_names_the_closest():
    from orchestrator.workload.definitions import load_workload
    from orchestrator.workload.tracing import load_tracepoint_set
    with pytest.raises(UserError, match=r"unknown workload 'page-idel' \(did you mean 'page-idle'\?\)"):
        load_workload("page-idel")
    with pytest.raises(UserError, match=r"unknown tracepoint set 'agng'"):
        load_tracepoint_set("agng")
