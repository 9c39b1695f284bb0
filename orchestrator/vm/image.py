"""The guest's initramfs, assembled from Debian arm64 packages without root.

Parts: our /init (guest/init), busybox-static with the applet links we use,
dropbear (SSH) plus exactly the shared libraries its ELF headers ask for, and
OpenSSH's sftp-server at the path dropbear runs for the "sftp" subsystem.
Packages are fetched with `apt-get download PKG:arm64` into the cache and
unpacked with `dpkg-deb -x`; nothing is installed on the host.

The image is two archives in one file, which the kernel unpacks one after
the other: the base (everything but the per-run SSH keys), built and
compressed once per content and cached under the sha256 of everything that
goes into it (paths, modes, file contents, package versions via content),
and a small uncompressed archive with this run's authorized key and host key.
The cached base is checked against its recorded sha256 before every use: a
corrupted entry is rebuilt, never booted.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc
from orchestrator.atomic import atomic_writer, write_text_atomic
from orchestrator.vm.cpio import CpioArchive
from orchestrator.errors import UserError
from orchestrator.paths import GUEST_DIR, cache_dir
from orchestrator.vm.sshkeys import Ed25519Key

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
    path: Path  # for QEMU -initrd: the base, or (with SSH) a per-run copy + the keys archive
    key: str  # sha256 of the base's content inputs (the per-run keys are not in it)
    host_key_public: str | None  # the pinned host key (OpenSSH line), when SSH is in
    sftp_path: str | None  # where dropbear looks for sftp-server
    base: Path | None = None  # the cached, compressed base archive
    rebuilt: bool = False  # the base was (re)written by this call


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


def _add_ssh(arc: CpioArchive, trees: _Tree) -> str:
    """dropbear + sftp-server and their libraries (the keys come per run: keys_archive)."""
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
    arc.add_dir(os.path.dirname(HOST_KEY_PATH), 0o755)
    return sftp


def keys_archive(pubkey: str, host_key: Ed25519Key) -> bytes:
    """This run's keys as an uncompressed newc archive, unpacked after the base."""
    if "\n" in pubkey.strip() or not pubkey.startswith("ssh-"):
        raise ValueError("ssh_pubkey must be one OpenSSH public key line")
    arc = CpioArchive()
    arc.add_dir("/root", 0o700)
    arc.add_dir("/root/.ssh", 0o700)
    arc.add_dir(os.path.dirname(HOST_KEY_PATH), 0o755)
    arc.add_file("/root/.ssh/authorized_keys", (pubkey.strip() + "\n").encode(), mode=0o600)
    arc.add_file(HOST_KEY_PATH, host_key.dropbear_private(), mode=0o600)
    return arc.to_bytes()


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


# (path, size, mtime_ns, inode) -> sha256: the base key is computed on every
# boot, and the selftest binaries in it are large; a changed file has a new stat.
_digests: dict[tuple[str, int, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    ident = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if (digest := _digests.get(ident)) is None:
        digest = sha256_of(path)
        _digests[ident] = digest
    return digest


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _content_key(arc: CpioArchive) -> str:
    """sha256 over every entry's path, mode, device and content."""
    manifest = [IMAGE_FORMAT]
    for e in arc.entries():
        digest = _file_sha256(e.data) if isinstance(e.data, Path) else hashlib.sha256(e.data).hexdigest()
        manifest.append(f"{e.path} {e.mode:o} {e.rdev[0]}:{e.rdev[1]} {digest}")
    return hashlib.sha256(json.dumps(manifest).encode()).hexdigest()


def package_trees(packages: Iterable[str] = PACKAGES) -> list[Path]:
    return [unpack_deb(fetch_deb(pkg)) for pkg in packages]


def packages_id(packages: Iterable[str] = PACKAGES) -> str:
    """The .deb files (name_version_arch) the image is made of, for the --resume key."""
    return ",".join(fetch_deb(pkg).name for pkg in packages)


def _checksum_path(image: Path) -> Path:
    return image.with_name(image.name + ".sha256")


def valid_base(path: Path) -> bool:
    """The cached base exists and still has the sha256 recorded when it was written."""
    try:
        recorded = _checksum_path(path).read_text().strip()
    except OSError:
        return False
    return path.is_file() and sha256_of(path) == recorded


def _write_base(arc: CpioArchive, path: Path) -> None:
    """The archive, then its checksum (written last: the pair is valid only when both are)."""
    _checksum_path(path).unlink(missing_ok=True)
    arc.write_gzip(path)
    write_text_atomic(_checksum_path(path), sha256_of(path) + "\n", per_process=True)


def build_image(
    *,
    extra: Mapping[str, Path] | None = None,
    ssh_pubkey: str | None = None,
    host_key: Ed25519Key | None = None,
    init: Path = GUEST_DIR / "init",
    keep: int = 16,
) -> GuestImage:
    """Build (or reuse) the base initramfs; with keys, a per-run file for QEMU.

    extra: guest path -> host file (arm64 ELF files get their shared libraries
    from the same packages; static binaries are simplest).
    ssh_pubkey / host_key: with both, the image carries dropbear + sftp-server,
    authorizes ssh_pubkey (an OpenSSH public key line) for root, and presents
    host_key, which the client pins.  Both or neither: a host key made in the
    guest could not be checked.  The keys go into a second archive appended to
    a per-run copy of the base (GuestImage.path; remove it with discard()).
    keep: how many base images to keep in the cache (least recently used go first).
    """
    if (ssh_pubkey is None) != (host_key is None):
        raise ValueError("build_image: pass ssh_pubkey and host_key together (or neither)")
    keys = keys_archive(ssh_pubkey, host_key) if ssh_pubkey is not None and host_key is not None else None
    trees = _Tree(package_trees())
    arc = _base_archive(trees, init)
    sftp = _add_ssh(arc, trees) if keys is not None else None
    _add_extra(arc, trees, extra or {})

    key = _content_key(arc)
    images = cache_dir("images")
    base = images / f"initramfs-{key[:20]}.cpio.gz"
    rebuilt = not valid_base(base)  # missing, half-written or corrupted: build it again
    if rebuilt:
        _write_base(arc, base)
        _prune(images, keep, base)
    else:
        os.utime(base)  # mark as recently used for pruning
    path = base
    if keys is not None:
        path = _per_run_copy(base, keys)
    return GuestImage(path, key, host_key.openssh_public() if host_key else None, sftp, base, rebuilt)


def _per_run_copy(base: Path, keys: bytes) -> Path:
    """base + zero padding to a 4-byte boundary + the keys archive.

    The kernel's initramfs unpacker (init/initramfs.c, unpack_to_rootfs) takes
    concatenated archives, compressed or not, skips NUL padding between them,
    and starts an uncompressed one only at a 4-byte aligned offset.
    """
    runs = cache_dir("images", "run")
    out = runs / f"{base.name.removesuffix('.cpio.gz')}-{os.getpid()}-{os.urandom(4).hex()}.cpio"
    with open(base, "rb") as src, atomic_writer(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.write(b"\0" * (-dst.tell() % 4))
        dst.write(keys)
    _prune_runs(runs, out)
    return out


RUN_FILES_KEPT = 8  # the latest runs' qemu-argv.txt stay runnable by hand


def _prune_runs(runs: Path, current: Path) -> None:
    """Per-run files beyond the newest few, once QEMU has surely read them (a minute)."""
    files = sorted(runs.glob("*.cpio"), key=_mtime, reverse=True)
    for old in files[RUN_FILES_KEPT:]:
        try:
            if old != current and old.stat().st_mtime < time.time() - 60:
                old.unlink()
        except OSError:
            pass


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile by another run's pruning
        return 0.0


def _prune(images: Path, keep: int, current: Path) -> None:
    files = sorted(images.glob("initramfs-*.cpio.gz"), key=_mtime, reverse=True)
    for old in files[keep:]:
        if old != current:
            _checksum_path(old).unlink(missing_ok=True)
            old.unlink(missing_ok=True)
