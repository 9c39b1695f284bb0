"""Config fragments: parsing, named sets, and verification against real merges."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import toolchain
from orchestrator.build import make_env
from orchestrator.errors import UserError
from orchestrator.kconfig import (
    ConfigSet,
    generate_config,
    load_config_set,
    load_fragment,
    parse_config_text,
    verify_config,
)


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
    assert "CONFIG_SWAP" not in msg  # SWAP itself survives allnoconfig


def test_real_merge_of_shipped_minimal_set_verifies(kernel_source, tmp_path: Path):
    tc = toolchain.detect()
    cs = load_config_set("minimal")
    config = generate_config(kernel_source.repo, tmp_path / "obj", cs, make_env(tc), tc.make_vars())
    final, _ = parse_config_text(config.read_text())
    assert final["CONFIG_KVM"] == "y" and final["CONFIG_ZRAM"] == "y"
