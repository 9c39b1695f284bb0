"""The compiler that builds arm64 code on this host: cross on x86_64, native on arm64."""
from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass

from orchestrator import proc
from orchestrator.errors import UserError


@dataclass(frozen=True)
class Toolchain:
    arch: str  # kernel ARCH
    cross_compile: str  # "" on an arm64 host
    gcc_version: str  # first line of `gcc --version`
    ccache: str | None  # path of ccache, None when absent

    @property
    def gcc(self) -> str:
        return f"{self.cross_compile}gcc"

    def make_vars(self) -> list[str]:
        """Variables for the kernel's make (never through a shell)."""
        out = [f"ARCH={self.arch}"]
        if self.cross_compile:
            out.append(f"CROSS_COMPILE={self.cross_compile}")
        if self.ccache:
            out.append(f"CC=ccache {self.gcc}")
        return out

    def describe(self) -> str:
        return f"{self.gcc}: {self.gcc_version}" + (" + ccache" if self.ccache else "")


def host_is_arm64() -> bool:
    return platform.machine() in ("aarch64", "arm64")


def detect() -> Toolchain:
    cross = "" if host_is_arm64() else "aarch64-linux-gnu-"
    gcc = f"{cross}gcc"
    if shutil.which(gcc) is None:
        pkg = "gcc" if not cross else "gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu libc6-dev-arm64-cross"
        raise UserError(
            f"compiler {gcc} not found on PATH",
            hint=f"apt-get install {pkg}   (or run `orchestrator install-deps`)",
        )
    res = proc.run([gcc, "--version"], timeout=30)
    version = res.stdout.splitlines()[0].strip() if res.stdout else "unknown"
    return Toolchain("arm64", cross, version, shutil.which("ccache"))
