"""A booted guest: image + QEMU + serial console + SSH, as one context manager.

    with start_guest(shape, kernel, workdir=run_dir) as g:
        g.console.run("uname -r")
        g.ssh.run("dmesg")

Leaving the block powers the guest off (and kills QEMU if it does not stop).
"""
from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import UserError
from orchestrator.vm.console import KMSG_FRAGMENT, BootFailure, BootInfo, GuestConsole
from orchestrator.vm.image import GuestImage, build_image
# qemu_version lives in machine.py (one place); importable from here as before.
from orchestrator.vm.machine import MachineShape, qemu_version, render_qemu_argv  # noqa: F401
from orchestrator.vm.nested_kvm import PROBE_GUEST_PATH, build_kvm_probe
from orchestrator.paths import cache_dir
from orchestrator.vm.ssh import SshError, SshSession, free_port, port_in_use_failure, wait_for_ssh
from orchestrator.vm.sshkeys import GuestKeys

PORT_ATTEMPTS = 3
# paramiko logs each failed attempt of wait_for_ssh (with a traceback) from its
# transport thread; without a handler Python prints that on stderr.  What
# failed is reported through SshError / the "ssh" step instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
# guest/init prints "ORCH-SSH ok pid=N" or "ORCH-SSH failed" before the ready
# marker when asked to start sshd (orch.ssh=1), and nothing when not.
SSH_MARKER = "ORCH-SSH"
SSH_FAILED_MARKER = "ORCH-SSH failed"


def sshd_problem(boot_log: str) -> str:
    """Why guest/init did not start sshd, from the boot log; "" if it did (or may have)."""
    text = KMSG_FRAGMENT.sub("", boot_log.replace("\r", ""))  # a kernel message may split a line
    if SSH_FAILED_MARKER in text:
        return f"guest init could not start sshd ({SSH_FAILED_MARKER!r} on the console)"
    if SSH_MARKER not in text:
        return "guest init did not start sshd (no ORCH-SSH line before the ready marker; orch.ssh=0 on the command line?)"
    return ""


@dataclass
class Guest:
    shape: MachineShape
    image: GuestImage
    console: GuestConsole
    boot: BootInfo
    ssh: SshSession | None
    ssh_port: int | None
    keys: GuestKeys | None
    ssh_error: str = ""  # why SSH is None although it was asked for


@contextmanager
def start_guest(
    shape: MachineShape,
    kernel: Path,
    *,
    workdir: Path,
    extra: Mapping[str, Path] | None = None,
    cmdline_extra: str = "",
    ssh: bool = True,
    keys: GuestKeys | None = None,
    silence: float = 90.0,
    overall: float = 300.0,
    ssh_timeout: float = 60.0,
) -> Iterator[Guest]:
    """Build the image, boot to the ready marker, connect SSH (if asked)."""
    if not kernel.is_file():
        raise UserError(f"kernel image not found: {kernel}", hint="build the kernel first")
    ssh = ssh and shape.network
    if ssh and keys is None:
        keys = GuestKeys.generate()  # per run: nothing to leak or go stale
    files = {PROBE_GUEST_PATH: build_kvm_probe(), **(extra or {})}
    try:
        image = build_image(
            extra=files,
            ssh_pubkey=keys.client.openssh_public() if ssh and keys else None,
            host_key=keys.host if ssh and keys else None,
        )
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UserError(f"no space left on device for the guest image in the cache {cache_dir('images')}",
                        hint="free space under $XDG_CACHE_HOME/arm64-orchestrator (or point XDG_CACHE_HOME "
                             "at a larger file system)") from None
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = free_port() if ssh else None
            argv = render_qemu_argv(shape, kernel, image.path, cmdline_extra, port)
            console = GuestConsole(argv, workdir / "console.log")
            # Written first: a QEMU that fails to start is reproduced from it.
            (workdir / "qemu-argv.txt").write_text("\n".join(argv) + "\n")
            try:
                console.start()
                info = console.wait_ready(silence=silence, overall=overall)
                break
            except BootFailure as exc:
                console.close()
                # Another process took the port between free_port() and QEMU's bind.
                if (exc.reason == "qemu-exit" and port is not None and attempt < PORT_ATTEMPTS
                        and port_in_use_failure(exc.last_lines)):
                    continue
                raise
            except BaseException:
                console.close()
                raise
        stack.callback(console.poweroff, 15.0)
        session = None
        ssh_error = ""
        if ssh and keys is not None and port is not None:
            # The boot log says whether init started sshd: if not, waiting is pointless.
            ssh_error = sshd_problem(console.log_path.read_bytes().decode(errors="replace"))
        if ssh and keys is not None and port is not None and not ssh_error:
            try:
                session = wait_for_ssh(port, keys.client, keys.host,
                                       deadline=time.monotonic() + ssh_timeout, alive=lambda: console.alive)
                stack.callback(session.close)
            except SshError as exc:
                # The serial console still works: carry on over it and say so.
                if not console.alive:
                    console.drain()
                    raise BootFailure("ready", "panic" if console.panic_line() else "qemu-exit", console.last_lines,
                                      console.log_path, (console.panic_line() or console.exit_detail())
                                      + " while waiting for SSH") from exc
                ssh_error = str(exc)
        yield Guest(shape, image, console, info, session, port, keys, ssh_error)
