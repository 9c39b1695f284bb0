"""A deterministic cpio "newc" writer for initramfs images (no root needed).

The kernel's initramfs unpacker reads the SVR4 "newc" format (magic 070701):
a 110-byte ASCII header of 13 eight-digit hex fields, the NUL-terminated name
padded to a multiple of 4, the data padded to a multiple of 4, and a final
"TRAILER!!!" entry.  Entries are written sorted by path with mtime 0 and
uid/gid 0, so the same inputs always give the same bytes (and the same image
cache key).  Device nodes are plain header fields here, which is why building
as an ordinary user works: nothing is created on the host file system.
"""
from __future__ import annotations

import gzip
import io
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from orchestrator.atomic import atomic_writer

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One archive member.  `data` is bytes, or a host Path read when written."""

    path: str  # relative, no leading "/" (the kernel accepts both; tools expect this)
    mode: int  # full st_mode: file type bits | permission bits
    data: bytes | Path = b""
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for device nodes

    @property
    def size(self) -> int:
        if isinstance(self.data, Path):
            return self.data.stat().st_size
        return len(self.data)


def _norm(path: str) -> str:
    """'/usr/bin/x' -> 'usr/bin/x'; rejects '..' and empty names."""
    parts = PurePosixPath("/" + path.lstrip("/")).parts[1:]
    if not parts or any(p in ("..", ".") for p in parts):
        raise ValueError(f"invalid archive path {path!r}")
    return "/".join(parts)


class CpioArchive:
    """Collects entries, then writes them sorted; parents are added implicitly."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    # -- adding -------------------------------------------------------------
    def _add(self, entry: Entry) -> None:
        if entry.path in self._entries:
            existing = self._entries[entry.path]
            # Re-adding an identical directory is harmless (implicit parents).
            if stat.S_ISDIR(existing.mode) and stat.S_ISDIR(entry.mode):
                return
            raise ValueError(f"duplicate archive path {'/' + entry.path!r}")
        parent = PurePosixPath(entry.path).parent
        if str(parent) != ".":
            self.add_dir(str(parent))
        self._entries[entry.path] = entry

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._add(Entry(_norm(path), stat.S_IFDIR | (mode & 0o7777)))

    def add_file(self, path: str, data: bytes | Path, mode: int = 0o644) -> None:
        if isinstance(data, Path) and not data.is_file():
            raise FileNotFoundError(f"{data}: not a regular file")
        self._add(Entry(_norm(path), stat.S_IFREG | (mode & 0o7777), data))

    def add_symlink(self, path: str, target: str) -> None:
        self._add(Entry(_norm(path), stat.S_IFLNK | 0o777, target.encode()))

    def add_device(self, path: str, kind: str, major: int, minor: int, mode: int = 0o600) -> None:
        if kind not in ("c", "b"):
            raise ValueError(f"device kind must be 'c' or 'b', not {kind!r}")
        ftype = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
        self._add(Entry(_norm(path), ftype | (mode & 0o7777), b"", (major, minor)))

    # -- reading back -------------------------------------------------------
    def __contains__(self, path: str) -> bool:
        return _norm(path) in self._entries

    def entries(self) -> list[Entry]:
        return [self._entries[p] for p in sorted(self._entries)]

    # -- writing ------------------------------------------------------------
    def write(self, out: BinaryIO) -> None:
        for ino, entry in enumerate(self.entries(), start=1):
            _write_entry(out, entry, ino)
        _write_entry(out, Entry(TRAILER, 0), 0)
        # The kernel and cpio(1) accept any length; pad to 512 like GNU cpio.
        pos = out.tell()
        if pos % 512:
            out.write(b"\0" * (512 - pos % 512))

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.write(buf)
        return buf.getvalue()

    def write_gzip(self, path: Path, *, level: int = 6) -> None:
        """Write gzip-compressed, atomically (temp file + rename), deterministically."""
        with atomic_writer(path, "wb", per_process=True) as raw:
            # filename="" and mtime=0 keep the gzip header free of host details.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                               compresslevel=level) as gz:
                self.write(gz)  # GzipFile.tell() counts uncompressed bytes


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _write_entry(out: BinaryIO, entry: Entry, ino: int) -> None:
    name = entry.path.encode() + b"\0"
    size = entry.size
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        ino, entry.mode, 0, 0, nlink, 0, size,
        0, 0, entry.rdev[0], entry.rdev[1], len(name), 0,
    )
    header = NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)
    out.write(header + name + _pad(len(header) + len(name)))
    if isinstance(entry.data, Path):
        written = 0
        with open(entry.data, "rb") as src:
            while chunk := src.read(_COPY_CHUNK):
                out.write(chunk)
                written += len(chunk)
        if written != size:
            raise RuntimeError(f"{entry.data} changed size while being archived")
    else:
        out.write(entry.data)
    out.write(_pad(size))


@dataclass(frozen=True)
class ParsedEntry:
    path: str
    mode: int
    rdev: tuple[int, int]
    data: bytes


def parse(data: bytes) -> list[ParsedEntry]:
    """Read a newc archive back (for tests and for inspecting images)."""
    return _parse_at(data, 0)[0]


def _parse_at(data: bytes, pos: int) -> tuple[list[ParsedEntry], int]:
    """The archive starting at pos, and the offset just after its trailer."""
    result: list[ParsedEntry] = []
    while True:
        if data[pos:pos + 6] != NEWC_MAGIC:
            raise ValueError(f"bad cpio magic at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = fields[1], fields[6], fields[9], fields[10], fields[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize
        pos += -pos % 4
        if name == TRAILER:
            return result, pos
        body = data[pos:pos + size]
        pos += size
        pos += -pos % 4
        result.append(ParsedEntry(name, mode, (rmaj, rmin), body))


def parse_initramfs(data: bytes) -> list[list[ParsedEntry]]:
    """Every archive of an initramfs file, as the kernel reads it: gzip-compressed
    or plain newc archives one after the other, NUL padding between them."""
    archives: list[list[ParsedEntry]] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            pos += 1
            continue
        if data[pos:pos + 2] == b"\x1f\x8b":
            d = zlib.decompressobj(wbits=31)  # one gzip member
            archives.append(parse(d.decompress(data[pos:])))
            pos = len(data) - len(d.unused_data)
        elif data[pos:pos + 6] == NEWC_MAGIC:
            if pos % 4:
                raise ValueError(f"uncompressed archive at offset {pos}, not 4-byte aligned (the kernel would reject it)")
            entries, end = _parse_at(data, pos)
            archives.append(entries)
            pos = end
        else:
            raise ValueError(f"neither gzip nor newc cpio at offset {pos}")
    return archives
