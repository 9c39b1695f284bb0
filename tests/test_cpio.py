"""cpio newc writer: parsed back by our reader and by Debian's cpio(1)."""
from __future__ import annotations

import gzip
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import need_command
from orchestrator.vm import cpio


def _sample(tmp_path: Path) -> cpio.CpioArchive:
    host_file = tmp_path / "payload.bin"
    host_file.write_bytes(b"x" * 4097)  # not a multiple of 4: exercises padding
    arc = cpio.CpioArchive()
    arc.add_file("/init", b"#!/bin/sh\necho hi\n", mode=0o755)
    arc.add_file("/usr/lib/payload.bin", host_file, mode=0o600)
    arc.add_symlink("/bin/sh", "busybox")
    arc.add_device("/dev/console", "c", 5, 1)
    arc.add_device("/dev/null", "c", 1, 3, mode=0o666)
    arc.add_device("/dev/vda", "b", 254, 0)
    arc.add_dir("/proc", mode=0o555)
    return arc


def test_round_trip_entries_modes_devices(tmp_path: Path) -> None:
    parsed = {e.path: e for e in cpio.parse(_sample(tmp_path).to_bytes())}
    # Implicit parents exist, and every parent precedes its children.
    order = list(parsed)
    assert order == sorted(order)
    for path in order:
        parent = path.rpartition("/")[0]
        if parent:
            assert order.index(parent) < order.index(path)
    assert parsed["init"].mode == stat.S_IFREG | 0o755
    assert parsed["init"].data == b"#!/bin/sh\necho hi\n"
    assert parsed["usr/lib/payload.bin"].data == b"x" * 4097
    assert parsed["usr/lib/payload.bin"].mode == stat.S_IFREG | 0o600
    assert parsed["usr"].mode == stat.S_IFDIR | 0o755
    assert parsed["proc"].mode == stat.S_IFDIR | 0o555
    assert parsed["bin/sh"].mode == stat.S_IFLNK | 0o777
    assert parsed["bin/sh"].data == b"busybox"
    assert parsed["dev/console"].mode == stat.S_IFCHR | 0o600
    assert parsed["dev/console"].rdev == (5, 1)
    assert parsed["dev/null"].rdev == (1, 3)
    assert parsed["dev/vda"].mode == stat.S_IFBLK | 0o600


def test_deterministic_gzip(tmp_path: Path) -> None:
    a, b = tmp_path / "a.cpio.gz", tmp_path / "b.cpio.gz"
    _sample(tmp_path).write_gzip(a)
    _sample(tmp_path).write_gzip(b)
    assert a.read_bytes() == b.read_bytes()
    assert gzip.decompress(a.read_bytes()) == _sample(tmp_path).to_bytes()


def test_gnu_cpio_lists_what_we_wrote(tmp_path: Path) -> None:
    need_command("cpio", "cpio")
    raw = tmp_path / "a.cpio"
    raw.write_bytes(_sample(tmp_path).to_bytes())
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet", "-F", str(raw)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    by_name = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in listing}
    assert by_name["dev/console"].startswith("crw-------")
    assert "5,   1" in by_name["dev/console"] or "5, 1" in by_name["dev/console"]
    assert by_name["dev/null"].startswith("crw-rw-rw-")
    assert by_name["dev/vda"].startswith("brw-------")
    assert by_name["init"].startswith("-rwxr-xr-x")
    assert by_name["bin/sh"].startswith("lrwxrwxrwx") and by_name["bin/sh"].endswith("-> busybox")
    assert " 4097 " in by_name["usr/lib/payload.bin"]
    assert " root " in by_name["init"]


def test_rejects_duplicates_and_escapes() -> None:
    arc = cpio.CpioArchive()
    arc.add_file("/etc/passwd", b"a")
    with pytest.raises(ValueError, match="duplicate"):
        arc.add_file("etc/passwd", b"b")
    with pytest.raises(ValueError, match="invalid archive path"):
        arc.add_file("/etc/../../x", b"c")
    with pytest.raises(ValueError):
        arc.add_device("/dev/x", "p", 1, 1)


def test_concatenated_archives_as_the_kernel_reads_them(tmp_path: Path) -> None:
    """gzip base + NUL padding + a plain archive (how guest_image adds per-run keys)."""
    second = cpio.CpioArchive()
    second.add_file("/root/.ssh/authorized_keys", b"ssh-ed25519 AAAA k\n", mode=0o600)
    gz = tmp_path / "base.cpio.gz"
    _sample(tmp_path).write_gzip(gz)
    head = gz.read_bytes()
    data = head + b"\0" * (-len(head) % 4) + second.to_bytes()
    first, keys = cpio.parse_initramfs(data)
    assert "init" in {e.path for e in first}
    assert [e.path for e in keys] == ["root", "root/.ssh", "root/.ssh/authorized_keys"]
    if len(head) % 4:  # the kernel only starts a plain archive at an aligned offset
        with pytest.raises(ValueError, match="not 4-byte aligned"):
            cpio.parse_initramfs(head + second.to_bytes())
