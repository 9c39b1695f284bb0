"""orchestrator/kernel/static_program.py: one way to compile and cache a static arm64 program."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.kernel import toolchain
from orchestrator.kernel import static_program
from orchestrator.kernel.static_program import CompileFailed, compile_argv, compile_static


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "arm64-orchestrator" / static_program.CACHE_SUBDIR


def test_argv_is_gcc_static_flags_output_sources() -> None:
    assert compile_argv("aarch64-linux-gnu-gcc", [Path("a.c"), Path("b.c")], ("-O2", "-Wall"), Path("/o/x")) == [
        "aarch64-linux-gnu-gcc", "-static", "-O2", "-Wall", "-o", "/o/x", "a.c", "b.c"]


def test_cached_by_source_flags_and_compiler(cache: Path, tmp_path: Path) -> None:
    tc = toolchain.detect()
    src = tmp_path / "hello.c"
    src.write_text("int main(void) { return 0; }\n")
    binary = compile_static([src], tc, ("-O2",), "hello")
    assert binary.parent == cache and binary.name.startswith("hello-")
    assert binary.read_bytes()[:4] == b"\x7fELF"
    assert compile_static([src], tc, ("-O2",), "hello") == binary  # a cache hit
    assert compile_static([src], tc, ("-O1",), "hello") != binary
    other = toolchain.Toolchain(tc.arch, tc.cross_compile, tc.gcc_version + " (other)", tc.ccache)
    assert static_program.cache_key([src], other, ("-O2",)) != static_program.cache_key([src], tc, ("-O2",))
    src.write_text("int main(void) { return 1; }\n")
    assert static_program.cache_key([src], tc, ("-O2",)) not in binary.name
    assert not [p for p in cache.iterdir() if ".tmp" in p.name]


def test_a_compile_error_names_the_first_errors_and_caches_nothing(cache: Path, tmp_path: Path) -> None:
    src = tmp_path / "broken.c"
    src.write_text("int main(void) { return undeclared_thing; }\n")
    with pytest.raises(CompileFailed) as exc:
        compile_static([src], toolchain.detect(), (), "broken")
    assert isinstance(exc.value, UserError)  # callers report it as a step error, as before
    assert f"compiling {src} failed:" in str(exc.value) and "undeclared_thing" in str(exc.value)
    assert any("error" in line for line in exc.value.first_errors)
    assert "static C library" in (exc.value.hint or "")
    assert list(cache.iterdir()) == []


def test_a_missing_compiler_is_a_user_error(cache: Path, tmp_path: Path) -> None:
    src = tmp_path / "x.c"
    src.write_text("int main(void) { return 0; }\n")
    missing = toolchain.Toolchain("arm64", "no-such-prefix-", "none", None)
    with pytest.raises(UserError, match="no-such-prefix-gcc not found"):
        compile_static([src], missing, (), "x")
    assert list(cache.iterdir()) == []
