"""The guest's initramfs, assembled from Debian arm64 packages without root.

Parts: our /init (guest/init), busybox-static with the applet links we use,
dropbear (SSH) plus exactly the shared libraries its ELF headers ask for, and
OpenSSH's sftp-server at the path dropbear runs for the "sftp" subsystem.
Packages are fetched with `apt-get download PKG:arm64` into the cache and
unpacked with `dpkg-deb -x`; nothing is installed on the host.

An image is keyed by the sha256 of everything that goes into it (paths, modes,
file contents, package versions via content), so the same inputs return the
same cached file without rebuilding.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import proc
from .cpio import CpioArchive
from .errors import UserError
from .paths import GUEST_DIR, cache_dir
from .sshkeys import Ed25519Key

# Bump when the layout changes in a way the content hash would not see.
IMAGE_FORMAT = "orch-initramfs-1"
ARCH = "arm64"
APT_HINT = "dpkg --add-architecture arm64 && apt-get update"

PACKAGES = (
    "busybox-static",
    "dropbear-bin",
    "openssh-sftp-server",
    # Shared libraries of dropbear and sftp-server (checked against DT_NEEDED below).
    "libc6",
    "libcrypt1",
    "libtomcrypt1",
    "libtommath1",
    "zlib1g",
    "libgmp10",
)

# Applets linked into /bin.  Explicit (we cannot run the arm64 busybox on the
# host to ask it); checked against the applet table inside the binary at build.
APPLETS = (
    "[ [[ awk base64 basename cat chmod chown cmp cp cttyhack cut date dd df dirname dmesg "
    "du echo env expr false find free grep gunzip gzip halt head hexdump hostname id "
    "ip kill killall ln ls mkdir mkfifo mknod mkswap mktemp more mount mv nproc od "
    "pidof ping poweroff printf ps pwd readlink realpath reboot rm rmdir sed seq "
    "setsid sh sha256sum sleep sort stat stty swapoff swapon sync sysctl tail tar "
    "taskset tee test time timeout top touch tr true umount uname uniq uptime usleep "
    "wc which xargs yes zcat"
).split()

LIB_DIRS = ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu")
DROPBEAR = "usr/sbin/dropbear"
SFTP_SERVER = "usr/lib/openssh/sftp-server"
HOST_KEY_PATH = "/etc/dropbear/dropbear_ed25519_host_key"

ETC_FILES = {
    # dropbear finds root's authorized_keys through the home directory here,
    # and rejects users whose shell is not listed in /etc/shells.
    "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    # "*": no password can match, but not empty ("blank password, rejected")
    # and not "!" (locked account).
    "/etc/shadow": "root:*:19000:0:99999:7:::\n",
    "/etc/group": "root:x:0:\n",
    "/etc/shells": "/bin/sh\n",
    "/etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    "/etc/hosts": "127.0.0.1 localhost guest\n",
}


@dataclass(frozen=True)
class GuestImage:
    path: Path  # gzip-compressed newc cpio, for QEMU -initrd
    key: str  # sha256 of the content inputs
    host_key_public: str | None  # the pinned host key (OpenSSH line), when SSH is in
    sftp_path: str | None  # where dropbear looks for sftp-server


# -- Debian packages ----------------------------------------------------------

def _deb_name(pkg: str) -> str:
    return f"{pkg}_*_{ARCH}.deb"


def fetch_deb(pkg: str) -> Path:
    """The cached .deb of pkg for arm64, downloading it with apt-get if needed."""
    debs = cache_dir("debs")
    found = sorted(debs.glob(_deb_name(pkg)), key=lambda p: p.stat().st_mtime)
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise UserError(f"apt-get not found: cannot fetch {pkg}:{ARCH}",
                        hint="run on Debian/Ubuntu, or put the .deb files into " + str(debs))
    result = proc.run(["apt-get", "download", f"{pkg}:{ARCH}"], cwd=debs, timeout=300)
    found = sorted(debs.glob(_deb_name(pkg)))
    if result.returncode != 0 or not found:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"cannot download Debian package {pkg}:{ARCH}: {detail}",
                        hint=APT_HINT)
    return found[-1]


def unpack_deb(deb: Path) -> Path:
    """dpkg-deb -x into the cache (once per .deb file)."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", deb.name.removesuffix(".deb"))
    dest = cache_dir("debs-unpacked") / name
    if dest.is_dir():
        return dest
    tmp = dest.with_name(f"{name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    result = proc.run(["dpkg-deb", "-x", deb, tmp], timeout=120)
    if result.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"dpkg-deb -x {deb} failed: {result.stderr.strip()}",
                        hint=f"delete {deb} so it is downloaded again")
    try:
        tmp.rename(dest)
    except OSError:  # another process unpacked it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# -- ELF: which shared libraries a binary needs -------------------------------

EM_AARCH64 = 183


@dataclass(frozen=True)
class ElfInfo:
    machine: int
    interp: str | None
    needed: tuple[str, ...]


def read_elf(path: Path) -> ElfInfo | None:
    """DT_NEEDED and PT_INTERP of a 64-bit little-endian ELF; None if not ELF."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return None
    if data[4] != 2 or data[5] != 1:
        raise UserError(f"{path}: not a 64-bit little-endian ELF file")
    (machine,) = struct.unpack_from("<H", data, 0x12)
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic = interp = None
    for i in range(phnum):
        p_type, _flags, off, vaddr, _pa, filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1:
            loads.append((vaddr, off, filesz))
        elif p_type == 2:
            dynamic = (off, filesz)
        elif p_type == 3:
            interp = data[off:off + filesz].rstrip(b"\0").decode()
    needed_offsets: list[int] = []
    strtab_vaddr = None
    if dynamic is not None:
        off, size = dynamic
        for pos in range(off, off + size, 16):
            tag, val = struct.unpack_from("<qQ", data, pos)
            if tag == 0:
                break
            if tag == 1:
                needed_offsets.append(val)
            elif tag == 5:
                strtab_vaddr = val
    needed: list[str] = []
    if needed_offsets and strtab_vaddr is not None:
        strtab = next(off + strtab_vaddr - va for va, off, sz in loads
                      if va <= strtab_vaddr < va + sz)
        for n in needed_offsets:
            end = data.index(b"\0", strtab + n)
            needed.append(data[strtab + n:end].decode())
    return ElfInfo(machine, interp, tuple(needed))


# -- assembling ---------------------------------------------------------------

class _Tree:
    """Files of several unpacked packages, copied into the archive as they are."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = list(roots)

    def find(self, rel: str) -> Path | None:
        for root in self.roots:
            cand = root / rel
            if cand.is_symlink() or cand.exists():
                return cand
        return None

    def find_lib(self, soname: str) -> str | None:
        for d in LIB_DIRS:
            if self.find(f"{d}/{soname}") is not None:
                return f"{d}/{soname}"
        return None

    def copy(self, arc: CpioArchive, rel: str) -> Path:
        """Add rel (following symlinks inside the tree, keeping them as symlinks)."""
        host = self.find(rel)
        if host is None:
            raise UserError(f"{rel} is in none of the unpacked packages",
                            hint=f"check the package list in {__name__}.PACKAGES")
        if "/" + rel in arc:
            return host.resolve()
        if host.is_symlink():
            target = os.readlink(host)
            arc.add_symlink("/" + rel, target)
            resolved = os.path.normpath(os.path.join(os.path.dirname(rel), target)
                                        if not target.startswith("/") else target.lstrip("/"))
            return self.copy(arc, resolved)
        arc.add_file("/" + rel, host, mode=stat.S_IMODE(host.stat().st_mode))
        return host


def _add_with_libs(arc: CpioArchive, tree: _Tree, host: Path, what: str) -> None:
    """Add the shared libraries (and interpreter) an ELF binary needs, recursively."""
    todo = [(host, what)]
    seen: set[str] = set()
    while todo:
        path, name = todo.pop()
        info = read_elf(path)
        if info is None:
            continue
        if info.machine != EM_AARCH64:
            raise UserError(f"{name}: not an arm64 (aarch64) binary (ELF machine {info.machine})",
                            hint="cross-compile it with aarch64-linux-gnu-gcc (ideally -static)")
        if info.interp and info.interp.lstrip("/") not in seen:
            seen.add(info.interp.lstrip("/"))
            todo.append((tree.copy(arc, info.interp.lstrip("/")), info.interp))
        for soname in info.needed:
            rel = tree.find_lib(soname)
            if rel is None:
                raise UserError(f"{name} needs {soname}, which none of the packages provides",
                                hint=f"add its Debian package to {__name__}.PACKAGES "
                                     "or link the program statically")
            if rel not in seen:
                seen.add(rel)
                todo.append((tree.copy(arc, rel), soname))


def busybox_applets(busybox: Path) -> set[str]:
    """The applet names compiled into a busybox binary.

    busybox keeps them as one sorted NUL-separated table starting "[\\0[[\\0"
    (applet_names in libbb); we read it instead of running the arm64 binary.
    """
    data = busybox.read_bytes()
    start = data.find(b"[\0[[\0")
    if start < 0:
        return set()
    names: set[str] = set()
    for raw in data[start:start + 16384].split(b"\0"):
        if not raw:
            break
        names.add(raw.decode(errors="replace"))
    return names


def sftp_server_path(dropbear: Path) -> str | None:
    """Where this dropbear binary execs sftp-server (a compile-time string)."""
    match = re.search(rb"(/[A-Za-z0-9_/.-]*sftp-server)\0", dropbear.read_bytes())
    return match.group(1).decode() if match else None


def _base_archive(trees: _Tree, init: Path) -> CpioArchive:
    arc = CpioArchive()
    arc.add_file("/init", init, mode=0o755)
    for d, mode in (("/proc", 0o555), ("/sys", 0o555), ("/dev", 0o755), ("/tmp", 0o1777),
                    ("/run", 0o755), ("/root", 0o700), ("/mnt", 0o755), ("/var/log", 0o755),
                    ("/sbin", 0o755), ("/usr/bin", 0o755)):
        arc.add_dir(d, mode)
    # The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
    arc.add_device("/dev/console", "c", 5, 1)
    arc.add_device("/dev/null", "c", 1, 3, mode=0o666)

    busybox = trees.copy(arc, "bin/busybox")
    have = busybox_applets(busybox)
    missing = [a for a in APPLETS if a not in have]
    if missing:
        raise UserError(f"busybox ({busybox}) lacks applets {', '.join(missing)}",
                        hint=f"remove them from {__name__}.APPLETS or use another busybox")
    for applet in APPLETS:
        arc.add_symlink(f"/bin/{applet}", "busybox")

    for path, text in ETC_FILES.items():
        arc.add_file(path, text.encode(), mode=0o600 if path == "/etc/shadow" else 0o644)
    return arc


def _add_ssh(arc: CpioArchive, trees: _Tree, pubkey: str, host_key: Ed25519Key) -> str:
    dropbear = trees.copy(arc, DROPBEAR)
    _add_with_libs(arc, trees, dropbear, "/" + DROPBEAR)
    sftp = sftp_server_path(dropbear)
    if sftp is None:
        raise UserError(f"{dropbear}: cannot find which sftp-server path it runs")
    server = trees.copy(arc, SFTP_SERVER)
    _add_with_libs(arc, trees, server, "/" + SFTP_SERVER)
    if sftp.lstrip("/") != SFTP_SERVER and sftp not in arc:
        # openssh-sftp-server ships the compatibility link itself; else make one.
        if trees.find(sftp.lstrip("/")) is not None:
            trees.copy(arc, sftp.lstrip("/"))
        else:
            arc.add_symlink(sftp, "/" + SFTP_SERVER)
    arc.add_dir("/root/.ssh", 0o700)
    if "\n" in pubkey.strip() or not pubkey.startswith("ssh-"):
        raise ValueError("ssh_pubkey must be one OpenSSH public key line")
    arc.add_file("/root/.ssh/authorized_keys", (pubkey.strip() + "\n").encode(), mode=0o600)
    arc.add_file(HOST_KEY_PATH, host_key.dropbear_private(), mode=0o600)
    return sftp


def _add_extra(arc: CpioArchive, trees: _Tree, extra: Mapping[str, Path]) -> None:
    for guest_path, host in sorted(extra.items()):
        if not guest_path.startswith("/"):
            raise UserError(f"extra guest path {guest_path!r} must be absolute")
        if not host.is_file():
            raise UserError(f"extra file for {guest_path} not found: {host}")
        if guest_path in arc:
            raise UserError(f"extra file {guest_path} would replace a file of the base image",
                            hint="install it under another path, e.g. /opt/...")
        mode = 0o755 if os.access(host, os.X_OK) else 0o644
        arc.add_file(guest_path, host, mode=mode)
        _add_with_libs(arc, trees, host, f"{host} (for {guest_path})")


def _content_key(arc: CpioArchive) -> str:
    """sha256 over every entry's path, mode, device and content."""
    manifest = [IMAGE_FORMAT]
    for e in arc.entries():
        if isinstance(e.data, Path):
            h = hashlib.sha256()
            with open(e.data, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            digest = h.hexdigest()
        else:
            digest = hashlib.sha256(e.data).hexdigest()
        manifest.append(f"{e.path} {e.mode:o} {e.rdev[0]}:{e.rdev[1]} {digest}")
    return hashlib.sha256(json.dumps(manifest).encode()).hexdigest()


def package_trees(packages: Iterable[str] = PACKAGES) -> list[Path]:
    return [unpack_deb(fetch_deb(pkg)) for pkg in packages]


def build_image(
    *,
    extra: Mapping[str, Path] | None = None,
    ssh_pubkey: str | None = None,
    host_key: Ed25519Key | None = None,
    init: Path = GUEST_DIR / "init",
    keep: int = 16,
) -> GuestImage:
    """Build (or reuse) the initramfs.

    extra: guest path -> host file (arm64 ELF files get their shared libraries
    from the same packages; static binaries are simplest).
    ssh_pubkey / host_key: with both, the image carries dropbear + sftp-server,
    authorizes ssh_pubkey (an OpenSSH public key line) for root, and presents
    host_key, which the client pins.  Both or neither: a host key made in the
    guest could not be checked.
    keep: how many images to keep in the cache (least recently used go first).
    """
    if (ssh_pubkey is None) != (host_key is None):
        raise ValueError("build_image: pass ssh_pubkey and host_key together (or neither)")
    trees = _Tree(package_trees())
    arc = _base_archive(trees, init)
    sftp = None
    if ssh_pubkey is not None and host_key is not None:
        sftp = _add_ssh(arc, trees, ssh_pubkey, host_key)
    _add_extra(arc, trees, extra or {})

    key = _content_key(arc)
    images = cache_dir("images")
    path = images / f"initramfs-{key[:20]}.cpio.gz"
    if path.exists():
        os.utime(path)  # mark as recently used for pruning
    else:
        arc.write_gzip(path)
        _prune(images, keep, path)
    return GuestImage(path, key, host_key.openssh_public() if host_key else None, sftp)


def _prune(images: Path, keep: int, current: Path) -> None:
    files = sorted(images.glob("initramfs-*.cpio.gz"), key=lambda p: p.stat().st_mtime,
                   reverse=True)
    for old in files[keep:]:
        if old != current:
            old.unlink(missing_ok=True)
