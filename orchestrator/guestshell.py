"""One way to run commands and fetch files in a booted guest: SSH when it is
up, the serial console otherwise (and the report says which was used)."""
from __future__ import annotations

import base64
import shlex
from pathlib import Path

from .console import GuestConsole
from .ssh import SshSession


class GuestShell:
    def __init__(self, console: GuestConsole, ssh: SshSession | None) -> None:
        self.console = console
        self.ssh = ssh

    @property
    def via(self) -> str:
        return "ssh" if self.ssh is not None else "serial"

    def run(self, cmd: str, timeout: float = 120.0) -> tuple[int, str]:
        """(exit status, stdout+stderr)."""
        if self.ssh is not None:
            res = self.ssh.run(cmd, timeout=timeout)
            return res.status, res.stdout + res.stderr
        res = self.console.run(cmd, timeout=timeout)
        return res.exit_status, res.output

    def fetch(self, remote: str, local: Path, timeout: float = 300.0) -> Path:
        local.parent.mkdir(parents=True, exist_ok=True)
        if self.ssh is not None:
            return self.ssh.fetch(remote, local)
        # Serial fallback: base64 keeps binary-safe and marker-safe output.
        res = self.console.run(f"base64 {shlex.quote(remote)}", timeout=timeout)
        if res.exit_status != 0:
            raise FileNotFoundError(f"guest file {remote}: {res.output.strip()[:200]}")
        local.write_bytes(base64.b64decode("".join(res.output.split())))
        return local
