"""Guest image assembly: ELF parsing on real arm64 binaries, and a real build.

The build tests use Debian arm64 packages (apt-get download, cached under
$XDG_CACHE_HOME/arm64-orchestrator/debs after the first run): they need the
network on an empty cache, so they are in the integration tier.
"""
from __future__ import annotations

import gzip
import os
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import need_command
from orchestrator.vm import cpio, image as guest_image
from orchestrator.errors import UserError
from orchestrator.vm.sshkeys import GuestKeys, parse_dropbear_ed25519

CC = "aarch64-linux-gnu-gcc"


def _compile(tmp_path: Path, *flags: str) -> Path:
    need_command(CC, "gcc-aarch64-linux-gnu")
    src = tmp_path / "hello.c"
    body = 'printf("%f\\n", sqrt(x))' if "-lm" in flags else 'puts("hi")'
    src.write_text('#include <math.h>\n#include <stdio.h>\nvolatile double x = 2;\n'
                   f'int main(void){{ {body}; return 0; }}\n')
    out = tmp_path / ("hello" + "".join(flags).replace("-", "_"))
    subprocess.run([CC, *flags[:1], "-o", str(out), str(src), *flags[1:]], check=True,
                   capture_output=True)
    return out


def test_read_elf_dynamic_and_static(tmp_path: Path) -> None:
    dynamic = guest_image.read_elf(_compile(tmp_path, "-O2"))
    assert dynamic is not None
    assert dynamic.machine == guest_image.EM_AARCH64
    assert dynamic.interp == "/lib/ld-linux-aarch64.so.1"
    assert dynamic.needed == ("libc.so.6",)
    static = guest_image.read_elf(_compile(tmp_path, "-static"))
    assert static is not None and static.interp is None and static.needed == ()
    script = tmp_path / "x.sh"
    script.write_text("#!/bin/sh\n")
    assert guest_image.read_elf(script) is None


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    keys = GuestKeys.generate()
    extra_dir = tmp_path_factory.mktemp("extra")
    tool = extra_dir / "tool.sh"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    image = guest_image.build_image(extra={"/opt/tool.sh": tool},
                                    ssh_pubkey=keys.client.openssh_public(), host_key=keys.host)
    archives = cpio.parse_initramfs(image.path.read_bytes())
    # What the kernel ends up with: later archives add to (and override) earlier ones.
    entries = {e.path: e for arc in archives for e in arc}
    return keys, image, entries, tool, archives


@pytest.mark.integration
def test_image_layout(built) -> None:
    keys, image, entries, _, _ = built
    assert entries["init"].mode == stat.S_IFREG | 0o755
    assert entries["init"].data == (guest_image.GUEST_DIR / "init").read_bytes()
    assert entries["dev/console"].rdev == (5, 1)
    assert entries["dev/null"].rdev == (1, 3)
    for applet in ("sh", "mount", "poweroff", "cttyhack", "setsid", "mkswap", "ip"):
        assert entries[f"bin/{applet}"].data == b"busybox"
    # dropbear's libraries, resolved from its ELF headers through symlinks.
    for lib in ("lib/aarch64-linux-gnu/libc.so.6", "lib/aarch64-linux-gnu/libcrypt.so.1",
                "lib/aarch64-linux-gnu/libz.so.1", "usr/lib/aarch64-linux-gnu/libtomcrypt.so.1",
                "usr/lib/aarch64-linux-gnu/libtommath.so.1", "usr/lib/aarch64-linux-gnu/libgmp.so.10",
                "lib/ld-linux-aarch64.so.1"):
        assert lib in entries, lib
    assert not any("gconv" in p for p in entries)  # only what is needed, not all of libc6
    # sftp-server where this dropbear looks for it.
    assert image.sftp_path == "/usr/lib/sftp-server"
    assert "usr/lib/sftp-server" in entries and "usr/lib/openssh/sftp-server" in entries
    # Keys: authorized for root (home from /etc/passwd), host key in dropbear format.
    assert b"root:x:0:0:root:/root:/bin/sh" in entries["etc/passwd"].data
    assert entries["root/.ssh/authorized_keys"].data.decode().strip() == keys.client.openssh_public()
    assert entries["root/.ssh"].mode == stat.S_IFDIR | 0o700
    host = entries[guest_image.HOST_KEY_PATH.lstrip("/")]
    assert host.mode == stat.S_IFREG | 0o600
    assert parse_dropbear_ed25519(host.data) == keys.host
    assert image.host_key_public == keys.host.openssh_public()
    assert entries["opt/tool.sh"].mode == stat.S_IFREG | 0o755


@pytest.mark.integration
def test_keys_are_a_second_archive_and_the_base_is_shared(built) -> None:
    keys, image, _, tool, archives = built
    assert len(archives) == 2
    base, per_run = ({e.path for e in a} for a in archives)
    assert not any("authorized_keys" in p or p == guest_image.HOST_KEY_PATH.lstrip("/") for p in base)
    assert {"root/.ssh/authorized_keys", guest_image.HOST_KEY_PATH.lstrip("/")} <= per_run
    assert image.base is not None and image.path != image.base
    assert image.path.read_bytes().startswith(image.base.read_bytes())
    # Other keys (every run has its own): the same cached base, not rebuilt.
    other_keys = GuestKeys.generate()
    inode_before = image.base.stat().st_ino
    again = guest_image.build_image(extra={"/opt/tool.sh": tool},
                                    ssh_pubkey=other_keys.client.openssh_public(), host_key=other_keys.host)
    assert again.base == image.base and again.key == image.key and not again.rebuilt
    assert again.base.stat().st_ino == inode_before  # a rebuild would os.replace it
    assert again.path != image.path
    again_entries = {e.path: e for a in cpio.parse_initramfs(again.path.read_bytes()) for e in a}
    assert again_entries["root/.ssh/authorized_keys"].data.decode().strip() == other_keys.client.openssh_public()
    other = guest_image.build_image(extra={"/opt/tool2.sh": tool},
                                    ssh_pubkey=keys.client.openssh_public(), host_key=keys.host)
    assert other.key != image.key


@pytest.mark.integration
def test_corrupt_cached_base_is_rebuilt_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flipped byte in the cached base (a private cache: debs linked from the real one)."""
    import faults_support as fs
    monkeypatch.setenv("XDG_CACHE_HOME", str(fs.temp_cache(tmp_path / "xdg", fresh=("images",))))
    first = guest_image.build_image()
    assert first.rebuilt and guest_image.valid_base(first.base)
    good = first.base.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    first.base.write_bytes(data)
    assert not guest_image.valid_base(first.base)
    second = guest_image.build_image()
    assert second.rebuilt and second.base == first.base
    assert second.base.read_bytes() == good  # deterministic: the same bytes as before
    # A base without its checksum (a write cut short before it) is not trusted either.
    guest_image._checksum_path(second.base).unlink()
    assert guest_image.build_image().rebuilt
    assert fs.partial_files(tmp_path / "xdg" / "arm64-orchestrator" / "images") == []


@pytest.mark.integration
def test_applet_list_matches_busybox() -> None:
    busybox = guest_image.unpack_deb(guest_image.fetch_deb("busybox-static")) / "bin/busybox"
    have = guest_image.busybox_applets(busybox)
    assert len(have) > 100 and "sh" in have
    assert set(guest_image.APPLETS) <= have


@pytest.mark.integration
def test_bad_extras_are_user_errors(tmp_path: Path) -> None:
    x86 = Path("/bin/true")  # a host (x86_64) binary
    with pytest.raises(UserError, match="not an arm64"):
        guest_image.build_image(extra={"/opt/true": x86})
    with pytest.raises(UserError, match="would replace"):
        guest_image.build_image(extra={"/init": x86})
    with pytest.raises(UserError, match="not found"):
        guest_image.build_image(extra={"/opt/x": tmp_path / "missing"})


def test_keys_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="together"):  # checked before any package is fetched
        guest_image.build_image(ssh_pubkey="ssh-ed25519 AAAA x")


@pytest.mark.integration
def test_dynamic_extra_gets_its_libraries(tmp_path: Path) -> None:
    prog = _compile(tmp_path, "-O2", "-lm")
    assert guest_image.read_elf(prog).needed == ("libm.so.6", "libc.so.6")
    image = guest_image.build_image(extra={"/opt/mprog": prog})
    names = {e.path for a in cpio.parse_initramfs(image.path.read_bytes()) for e in a}
    assert "lib/aarch64-linux-gnu/libm.so.6" in names
    assert "lib/ld-linux-aarch64.so.1" in names


def test_download_failure_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(UserError) as err:
        guest_image.fetch_deb("no-such-package-orchestrator-test")
    assert "dpkg --add-architecture arm64 && apt-get update" in str(err.value)
    assert not os.listdir(tmp_path / "arm64-orchestrator" / "debs")
