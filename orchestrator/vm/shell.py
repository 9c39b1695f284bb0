"""One way to run commands and fetch files in a booted guest: SSH when it is
up, the serial console otherwise (and the report says which was used).

If SSH breaks mid-run, the console says why: a guest that died (QEMU gone,
or a panic on the console) raises GuestCrashed; a guest that lives on without
its SSH server raises ConnectionLost once, and later commands use the console.
"""
from __future__ import annotations

import base64
import shlex
from pathlib import Path
from typing import NoReturn

import paramiko

from orchestrator.vm.console import ConsoleError, GuestConsole, GuestCrashed
from orchestrator.vm.ssh import SshError, SshSession

# What paramiko and our SSH wrapper raise when the connection is gone.
_SSH_FAULTS = (SshError, paramiko.SSHException, OSError, EOFError)


class ConnectionLost(ConsoleError):
    """SSH dropped while the guest kept running; the shell now uses the serial console."""


class GuestShell:
    def __init__(self, console: GuestConsole, ssh: SshSession | None) -> None:
        self.console = console
        self.ssh = ssh
        self.ssh_lost = ""  # why SSH was given up mid-run ("" if it never broke)

    @property
    def via(self) -> str:
        return "ssh" if self.ssh is not None else "serial"

    def _ssh_up(self) -> bool:
        transport = self.ssh.client.get_transport() if self.ssh is not None else None
        return transport is not None and transport.is_active()

    def _lost(self, cmd: str, why: object) -> NoReturn:
        """SSH broke: read the console to learn whether the guest is still there."""
        self.console.drain()
        if not self.console.alive:
            panic = self.console.panic_line()
            raise GuestCrashed("panic" if panic else "qemu-exit", self.console.last_lines,
                               self.console.log_path, panic or self.console.exit_detail())
        self.ssh_lost = f"SSH connection dropped mid-command ({why})"
        try:
            assert self.ssh is not None
            self.ssh.close()
        except Exception:  # noqa: BLE001 - already broken
            pass
        self.ssh = None
        raise ConnectionLost(self.ssh_lost + "; the serial console is used from here on",
                             self.console.last_lines, self.console.log_path)

    def run(self, cmd: str, timeout: float = 120.0) -> tuple[int, str]:
        """(exit status, stdout+stderr)."""
        if self.ssh is not None:
            try:
                # The console is read meanwhile: a full pty would stop the guest.
                with self.console.reading_in_background():
                    res = self.ssh.run(cmd, timeout=timeout)
            except _SSH_FAULTS as exc:
                if self._ssh_up() and self.console.alive:
                    raise  # the command's own time limit; the connection is fine
                self._lost(cmd, f"{type(exc).__name__}: {exc}")
            # paramiko reports -1 when the channel closed without an exit status.
            if res.status == -1 and not self._ssh_up():
                self._lost(cmd, "the connection closed before the exit status arrived")
            return res.status, res.stdout + res.stderr
        res = self.console.run(cmd, timeout=timeout)
        return res.exit_status, res.output

    def fetch(self, remote: str, local: Path, timeout: float = 300.0) -> Path:
        local.parent.mkdir(parents=True, exist_ok=True)
        if self.ssh is not None:
            try:
                with self.console.reading_in_background():
                    return self.ssh.fetch(remote, local)
            except _SSH_FAULTS as exc:
                if self._ssh_up() and self.console.alive:
                    raise  # e.g. no such file in the guest
                try:
                    self._lost(f"sftp get {remote}", f"{type(exc).__name__}: {exc}")
                except ConnectionLost:
                    pass  # fetching is idempotent: fetch it again over the console
        # Serial fallback: base64 keeps binary-safe and marker-safe output.
        res = self.console.run(f"base64 {shlex.quote(remote)}", timeout=timeout)
        if res.exit_status != 0:
            raise FileNotFoundError(f"guest file {remote}: {res.output.strip()[:200]}")
        local.write_bytes(base64.b64decode("".join(res.output.split())))
        return local
