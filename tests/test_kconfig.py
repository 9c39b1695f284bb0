"""Config fragments: parsing, named sets, and verification against real merges."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.kernel import toolchain
from orchestrator.kernel.build import make_env
from orchestrator.errors import UserError
from orchestrator.kernel.kconfig import (
    ConfigSet,
    config_commands,
    dropped_error,
    explain_dropped,
    generate_config,
    load_config_set,
    load_fragment,
    parse_config_text,
    verify_config,
)
from orchestrator.kernel.kconfig_deps import KconfigTree, annotate, evaluate, explain

FIXTURES = Path(__file__).parent / "fixtures" / "kconfig"
# The final .config of `evidence` on linux-source-6.1 without MODULES (the
# options that matter here, as olddefconfig left them).
FINAL_61_NO_MODULES = """# CONFIG_MODULES is not set
CONFIG_HAVE_KPROBES=y
CONFIG_TRACING_SUPPORT=y
CONFIG_FTRACE=y
CONFIG_HAVE_REGS_AND_STACK_ACCESS_API=y
"""


def test_parse_config_text_values_and_unset():
    opts, lines = parse_config_text("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n# comment\n")
    assert opts == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x y"'}
    assert lines["CONFIG_C"] == 3


def test_strict_parse_names_file_and_line(tmp_path: Path):
    frag = tmp_path / "bad.config"
    frag.write_text("CONFIG_A=y\nCONFIG_B y\n")
    with pytest.raises(UserError) as exc:
        load_fragment(str(frag))
    assert f"{frag}:2" in str(exc.value)


def test_unknown_fragment_lists_known_ones():
    with pytest.raises(UserError) as exc:
        load_fragment("no-such-fragment")
    msg = str(exc.value)
    assert "unknown config fragment 'no-such-fragment'" in msg and "kvm" in msg


def test_fragment_name_cannot_escape_configs_dir():
    with pytest.raises(UserError):
        load_fragment("../../etc/passwd")


def test_named_sets_resolve_in_order():
    evidence = load_config_set("evidence")
    names = [f.name for f in evidence.fragments]
    assert names[0] == "base" and "lockstat" in names
    timing = load_config_set("timing")
    assert "lockstat" not in [f.name for f in timing.fragments]
    assert evidence.key() != timing.key()


def test_unknown_set_is_a_clear_error():
    with pytest.raises(UserError) as exc:
        load_config_set("nope")
    assert "unknown config set 'nope'" in str(exc.value) and "evidence" in str(exc.value)


def test_verify_reports_dropped_option_with_fragment_and_line(tmp_path: Path):
    frag = tmp_path / "z.config"
    frag.write_text("# zram\nCONFIG_ZRAM=y\nCONFIG_SWAP=y\n")
    cs = ConfigSet("t", (load_fragment(str(frag)),))
    dropped = verify_config("CONFIG_SWAP=y\n# CONFIG_ZRAM is not set\n", cs)
    assert len(dropped) == 1
    assert dropped[0].option == "CONFIG_ZRAM" and dropped[0].line == 2 and dropped[0].actual == "n"
    assert str(frag) in str(dropped[0])


def test_requesting_n_is_satisfied_by_absence(tmp_path: Path):
    frag = tmp_path / "n.config"
    frag.write_text("# CONFIG_MODULES is not set\n")
    cs = ConfigSet("t", (load_fragment(str(frag)),))
    assert verify_config("CONFIG_64BIT=y\n", cs) == []


@pytest.mark.integration
def test_real_merge_catches_zram_without_blk_dev(kernel_source, tmp_path: Path):
    """The field-notes trap, for real: allnoconfig + ZRAM=y without BLK_DEV drops ZRAM."""
    frag = tmp_path / "zram-only.config"
    frag.write_text("CONFIG_SWAP=y\nCONFIG_ZRAM=y\n")
    cs = ConfigSet("zram-only", (load_fragment(str(frag)),))
    tc = toolchain.detect()
    with pytest.raises(UserError) as exc:
        generate_config(kernel_source.repo, tmp_path / "obj", cs, make_env(tc), tc.make_vars())
    msg = str(exc.value)
    assert "CONFIG_ZRAM=y requested by" in msg and "zram-only.config:2" in msg
    # The unmet dependency comes from the tree's own Kconfig (`if BLK_DEV` around zram's source).
    assert "ZRAM depends on BLK_DEV [=n] (drivers/block/Kconfig:" in msg
    assert "'CONFIG_BLK_DEV=y'" in exc.value.hint
    assert "CONFIG_SWAP" not in msg  # SWAP itself survives allnoconfig


@pytest.mark.integration
def test_real_merge_of_shipped_minimal_set_verifies(kernel_source, tmp_path: Path):
    tc = toolchain.detect()
    cs = load_config_set("minimal")
    config = generate_config(kernel_source.repo, tmp_path / "obj", cs, make_env(tc), tc.make_vars())
    final, _ = parse_config_text(config.read_text())
    assert final["CONFIG_KVM"] == "y" and final["CONFIG_ZRAM"] == "y"


# ------------------------------------------------------- unmet dependencies


def test_expression_evaluation_follows_kconfig_tristate_rules():
    cfg = {"CONFIG_A": "y", "CONFIG_M": "m", "CONFIG_S": '"abc"'}
    assert evaluate("A && M", cfg) == 1
    assert evaluate("A && !B", cfg) == 2
    assert evaluate("B || (A && M)", cfg) == 1
    assert evaluate("!A", cfg) == 0
    assert evaluate('S = "abc"', cfg) == 2 and evaluate('S != "abc"', cfg) == 0
    assert evaluate("$(cc-option,-foo)", cfg) is None  # a macro: unknown, never guessed
    assert annotate("MODULES && HAVE_KPROBES", {"CONFIG_HAVE_KPROBES": "y"}) == "MODULES [=n] && HAVE_KPROBES [=y]"


def test_dropped_kprobes_names_modules_from_the_trees_kconfig():
    """6.1's KPROBES depends on MODULES: the explanation says so, with the
    file:line of the `depends on`, and offers the fragment line that fixes it."""
    tree = KconfigTree(FIXTURES / "linux-6.1-excerpt")
    final, _ = parse_config_text(FINAL_61_NO_MODULES)
    e = explain(tree, "CONFIG_KPROBES", final)
    assert e.text == "KPROBES depends on MODULES [=n] (arch/Kconfig:4)"
    assert e.fix == ("CONFIG_MODULES=y",)
    # KPROBE_EVENTS: inside `if FTRACE` (met), its own `depends on KPROBES` is not.
    e = explain(tree, "CONFIG_KPROBE_EVENTS", final)
    assert e.text == "KPROBE_EVENTS depends on KPROBES [=n] (kernel/trace/Kconfig:12)"
    # Help text mentioning Kconfig words is not parsed as Kconfig.
    assert "say" not in tree.symbols and tree.symbols["KPROBES"].has_prompt


def test_unset_enclosing_if_is_named():
    tree = KconfigTree(FIXTURES / "linux-6.1-excerpt")
    final, _ = parse_config_text("CONFIG_KPROBES=y\nCONFIG_HAVE_REGS_AND_STACK_ACCESS_API=y\n")
    e = explain(tree, "KPROBE_EVENTS", final)
    assert e.text == "KPROBE_EVENTS depends on FTRACE [=n] (kernel/trace/Kconfig:9)" and e.fix == ("CONFIG_FTRACE=y",)


def test_unknown_and_promptless_symbols(tmp_path: Path):
    (tmp_path / "Kconfig").write_text('config HAVE_X\n\tbool\n\nconfig USER\n\tbool "user"\n\tselect HAVE_X\n')
    tree = KconfigTree(tmp_path)
    assert "not defined by any Kconfig file" in explain(tree, "NOPE", {}).text
    e = explain(tree, "HAVE_X", {})
    assert "HAVE_X has no prompt (Kconfig:1): a fragment cannot set it; it is selected by USER [=n]" == e.text
    assert e.fix == ("CONFIG_USER=y",)


def test_dropped_error_puts_the_fix_in_the_hint(tmp_path: Path):
    frag = tmp_path / "tracing.config"
    frag.write_text("CONFIG_KPROBES=y\nCONFIG_KPROBE_EVENTS=y\n")
    cs = ConfigSet("t", (load_fragment(str(frag)),))
    dropped = explain_dropped(FIXTURES / "linux-6.1-excerpt", FINAL_61_NO_MODULES, verify_config(FINAL_61_NO_MODULES, cs))
    err = dropped_error(cs, dropped)
    assert "CONFIG_KPROBES=y requested by" in err.message and "KPROBES depends on MODULES [=n]" in err.message
    # CONFIG_KPROBES=y would fix KPROBE_EVENTS but is itself dropped: only MODULES is offered.
    assert "add 'CONFIG_MODULES=y' to a fragment of config set 't'" in err.hint


# ------------------------------------------------------- config base targets


def test_sets_may_start_from_a_config_target(tmp_path: Path, monkeypatch):
    from orchestrator.kernel import kconfig
    (tmp_path / "kvm.config").write_text("CONFIG_KVM=y\n")
    (tmp_path / "sets.yaml").write_text(
        "sets:\n  dk: {base: defconfig, fragments: [kvm]}\n  plain: [kvm]\n"
        "  bad: {base: 'defconfig; rm -rf /', fragments: [kvm]}\n  typo: {bsae: defconfig}\n")
    monkeypatch.setattr(kconfig, "KERNEL_CONFIGS_DIR", tmp_path)
    dk, plain = load_config_set("dk"), load_config_set("plain")
    assert dk.base == "defconfig" and plain.base == "allnoconfig" and dk.key() != plain.key()
    with pytest.raises(UserError) as exc:
        load_config_set("bad")
    assert "sets.bad.base" in exc.value.message and "NAME_defconfig" in exc.value.hint
    with pytest.raises(UserError) as exc:
        load_config_set("typo")
    assert "unknown key 'bsae'" in exc.value.message
    cmds = config_commands(Path("/src"), Path("/obj"), dk, ["ARCH=arm64"])
    assert cmds[0] == ["make", "-s", "O=/obj", "ARCH=arm64", "defconfig"]
    assert cmds[1][:4] == ["/src/scripts/kconfig/merge_config.sh", "-m", "-O", "/obj"] and cmds[1][4] == "/obj/.config"
    assert cmds[2][-1] == "olddefconfig"
    assert config_commands(Path("/src"), Path("/obj"), plain, [])[0][1] == "-n"


def test_allnoconfig_set_keys_are_unchanged_by_the_base_field():
    """Adding `base` must not invalidate every cached build of the existing sets."""
    import hashlib
    cs = load_config_set("minimal")
    h = hashlib.sha256()
    for frag in cs.fragments:
        h.update(frag.name.encode() + b"\0" + frag.path.read_bytes() + b"\0")
    assert cs.key() == h.hexdigest()


@pytest.mark.integration
def test_real_defconfig_base_then_fragment_verifies(kernel_source, tmp_path: Path):
    """defconfig (arm64) then a fragment on top, merged and verified for real."""
    frag = tmp_path / "lockstat.config"
    frag.write_text("CONFIG_LOCK_STAT=y\n# CONFIG_SOUND is not set\n")
    cs = ConfigSet("defconfig+lockstat", (load_fragment(str(frag)),), base="defconfig")
    tc = toolchain.detect()
    config = generate_config(kernel_source.repo, tmp_path / "obj", cs, make_env(tc), tc.make_vars())
    final, _ = parse_config_text(config.read_text())
    # From defconfig: a driver allnoconfig never has; from the fragment: LOCK_STAT, SOUND off.
    assert final.get("CONFIG_VIRTIO_NET") == "y" and final["CONFIG_LOCK_STAT"] == "y"
    assert final.get("CONFIG_SOUND", "n") == "n"
