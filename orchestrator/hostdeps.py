"""Host prerequisites: what is present, what is missing, and how to install it.

Standard library only: the bootstrap runs this before any Python dependency
is installed.  `python3 -m orchestrator.hostdeps --install` is what both
README commands call first.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Requirement:
    name: str  # what the user sees
    package: str  # Debian package that provides it
    binary: str | None = None  # checked on PATH when set
    path: str | None = None  # checked as a file when set
    version_argv: tuple[str, ...] = ()
    cross_only: bool = False  # only needed on non-arm64 hosts
    foreign_arm64: bool = False  # an arm64 package fetched with `apt-get download` (not installed)


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("qemu-system-aarch64", "qemu-system-arm", binary="qemu-system-aarch64", version_argv=("qemu-system-aarch64", "--version")),
    Requirement("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu", binary="aarch64-linux-gnu-gcc",
                version_argv=("aarch64-linux-gnu-gcc", "--version"), cross_only=True),
    Requirement("aarch64-linux-gnu-ld", "binutils-aarch64-linux-gnu", binary="aarch64-linux-gnu-ld", cross_only=True),
    Requirement("arm64 libc headers", "libc6-dev-arm64-cross", path="/usr/aarch64-linux-gnu/include/stdio.h", cross_only=True),
    Requirement("gcc", "gcc", binary="gcc", version_argv=("gcc", "--version")),
    Requirement("make", "make", binary="make", version_argv=("make", "--version")),
    Requirement("bc", "bc", binary="bc"),
    Requirement("bison", "bison", binary="bison", version_argv=("bison", "--version")),
    Requirement("flex", "flex", binary="flex", version_argv=("flex", "--version")),
    Requirement("libssl-dev", "libssl-dev", path="/usr/include/openssl/ssl.h"),
    Requirement("libelf-dev", "libelf-dev", path="/usr/include/libelf.h"),
    Requirement("xz", "xz-utils", binary="xz", version_argv=("xz", "--version")),
    Requirement("ccache", "ccache", binary="ccache", version_argv=("ccache", "--version")),
    Requirement("git", "git", binary="git", version_argv=("git", "--version")),
    Requirement("cpio", "cpio", binary="cpio", version_argv=("cpio", "--version")),  # the tests check our initramfs with GNU cpio
    Requirement("dpkg-deb", "dpkg", binary="dpkg-deb"),  # unpacks the guest image's arm64 packages
    Requirement("apt-get", "apt", binary="apt-get"),  # `apt-get download` of those packages
    # LAVA targets (targets/lava-*.yaml, docs/lava.md): the dispatcher (lava-run), and for the
    # local LAVA instance the server, PostgreSQL's programs (the instance runs its own cluster,
    # initdb in its directory) and lavacli.  --no-install-recommends keeps apache2 out.
    Requirement("postgresql", "postgresql", binary="pg_ctlcluster"),
    Requirement("lava-run", "lava-dispatcher", binary="lava-run"),
    Requirement("lava-server", "lava-server", binary="lava-server"),
    Requirement("lavacli", "lavacli", binary="lavacli"),
    Requirement("linux-source-6.12", "linux-source-6.12", path="/usr/src/linux-source-6.12.tar.xz"),
    Requirement("python3-venv", "python3-venv", binary=None),
    Requirement("busybox-static:arm64", "busybox-static:arm64", foreign_arm64=True),
    Requirement("dropbear-bin:arm64", "dropbear-bin:arm64", foreign_arm64=True),
    Requirement("openssh-sftp-server:arm64", "openssh-sftp-server:arm64", foreign_arm64=True),
)


def host_is_arm64() -> bool:
    return platform.machine() in ("aarch64", "arm64")


def _run(argv: list[str] | tuple[str, ...]) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, errors="replace", timeout=120)


def _dpkg_version(package: str) -> str | None:
    try:
        res = _run(["dpkg-query", "-W", "-f=${Status}|${Version}", package])
    except (OSError, subprocess.TimeoutExpired):
        return None
    status, _, version = res.stdout.partition("|")
    return version if res.returncode == 0 and "install ok installed" in status else None


def _arm64_arch_enabled() -> bool:
    if host_is_arm64():
        return True
    try:
        return "arm64" in _run(["dpkg", "--print-foreign-architectures"]).stdout.split()
    except OSError:
        return False


def _candidate(package: str) -> str | None:
    """The version apt would download, or None (arch not added / lists not updated)."""
    try:
        res = _run(["apt-cache", "policy", package])
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in res.stdout.splitlines():
        line = line.strip()
        if line.startswith("Candidate:"):
            cand = line.split(":", 1)[1].strip()
            return None if cand == "(none)" else cand
    return None


@dataclass
class Check:
    req: Requirement
    present: bool
    version: str


def check(req: Requirement) -> Check:
    if req.foreign_arm64:
        pkg = req.package.replace(":arm64", "") if host_is_arm64() else req.package
        cand = _candidate(pkg) if _arm64_arch_enabled() else None
        return Check(req, cand is not None, f"downloadable {cand}" if cand else "arm64 architecture/package lists missing")
    if req.name == "python3-venv":
        ok = subprocess.run([sys.executable, "-m", "venv", "--help"], capture_output=True).returncode == 0
        ok = ok and subprocess.run([sys.executable, "-m", "ensurepip", "--version"], capture_output=True).returncode == 0
        return Check(req, ok, sys.version.split()[0] if ok else "python venv/ensurepip missing")
    present = True
    if req.binary:
        present = shutil.which(req.binary) is not None
    if req.path:
        present = present and os.path.exists(req.path)
    version = ""
    if present and req.version_argv:
        try:
            out = _run(req.version_argv)
            version = (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else ""
        except (OSError, subprocess.TimeoutExpired):
            version = "?"
    if present and not version:
        version = _dpkg_version(req.package) or "present"
    return Check(req, present, version)


def needed() -> list[Requirement]:
    return [r for r in REQUIREMENTS if not (r.cross_only and host_is_arm64())]


def missing_packages(checks: list[Check]) -> list[str]:
    return sorted({c.req.package for c in checks if not c.present and not c.req.foreign_arm64})


def install_commands(checks: list[Check]) -> list[list[str]]:
    """The apt commands that make every check pass, in order."""
    cmds: list[list[str]] = []
    missing = missing_packages(checks)
    foreign_missing = any(c.req.foreign_arm64 and not c.present for c in checks)
    if foreign_missing and not _arm64_arch_enabled():
        cmds.append(["dpkg", "--add-architecture", "arm64"])
    if missing or foreign_missing:
        cmds.append(["apt-get", "update"])
    if missing:
        cmds.append(["apt-get", "install", "-y", "--no-install-recommends", *missing])
    return cmds


def doctor(stream=sys.stdout) -> list[Check]:
    checks = [check(r) for r in needed()]
    width = max(len(c.req.name) for c in checks)
    for c in checks:
        mark = "ok     " if c.present else "MISSING"
        stream.write(f"{mark} {c.req.name:<{width}}  {c.version if c.present else '(Debian package ' + c.req.package + ')'}\n")
        if not c.present and c.req.foreign_arm64:
            stream.write(f"        {c.version}\n")
    return checks


def install(stream=sys.stdout) -> int:
    """Install what is missing as root; otherwise print the exact commands. Returns exit status."""
    checks = [check(r) for r in needed()]
    cmds = install_commands(checks)
    if not cmds:
        stream.write("host dependencies: all present\n")
        return 0
    if os.geteuid() != 0:
        stream.write("host dependencies missing; run as root:\n")
        for cmd in cmds:
            stream.write("  sudo " + " ".join(cmd) + "\n")
        return 2
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in cmds:
        stream.write("+ " + " ".join(cmd) + "\n")
        stream.flush()
        rc = subprocess.run(cmd, env=env).returncode
        if rc != 0:
            stream.write(f"command failed (exit {rc}): {' '.join(cmd)}\n")
            return 2
    still = [c.req.name for c in (check(r) for r in needed()) if not c.present]
    if still:
        stream.write(f"still missing after install: {', '.join(still)}\n")
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="orchestrator-hostdeps")
    ap.add_argument("--install", action="store_true", help="install what is missing (root) or print the commands")
    args = ap.parse_args(argv)
    if args.install:
        return install()
    checks = doctor()
    return 0 if all(c.present for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
