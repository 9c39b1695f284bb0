"""SSH to the guest (paramiko): commands, streamed output, SFTP fetch.

The guest's host key is generated on the host and baked into the image
(guest_image, sshkeys), so the client pins it: a different key is an error,
never "added on first use".  QEMU forwards 127.0.0.1:PORT to the guest's port
22; `free_port` picks a port, and the caller retries with a new one if QEMU
could not bind it (another process took it in between).
"""
from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from orchestrator.vm.sshkeys import Ed25519Key

HOST = "127.0.0.1"
# QEMU's message when hostfwd cannot bind (the port was taken meanwhile).
PORT_IN_USE_MARKERS = ("Could not set up host forwarding rule", "Address already in use")


def free_port() -> int:
    """A port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_in_use_failure(console_lines: list[str]) -> bool:
    """Did QEMU exit because its SSH forwarding port was taken?"""
    return any(m in line for line in console_lines for m in PORT_IN_USE_MARKERS)


@dataclass(frozen=True)
class SshResult:
    status: int
    stdout: str
    stderr: str
    duration: float


class SshError(Exception):
    pass


class SshSession:
    """A connected client; close() (or the context manager) ends it."""

    def __init__(self, client: paramiko.SSHClient) -> None:
        self.client = client

    def __enter__(self) -> SshSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def run(self, cmd: str, timeout: float = 600.0) -> SshResult:
        """Run cmd with the guest's /bin/sh; collect stdout and stderr."""
        out: list[str] = []
        err: list[str] = []
        status, duration = self._exec(cmd, timeout, out.append, err.append)
        return SshResult(status, "".join(out), "".join(err), duration)

    def stream(self, cmd: str, on_output: Callable[[str, str], None],
               timeout: float = 600.0) -> int:
        """Run cmd, calling on_output("stdout"|"stderr", text) as data arrives."""
        status, _ = self._exec(cmd, timeout, lambda t: on_output("stdout", t),
                               lambda t: on_output("stderr", t))
        return status

    def _exec(self, cmd: str, timeout: float, on_out: Callable[[str], None],
              on_err: Callable[[str], None]) -> tuple[int, float]:
        start = time.monotonic()
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError("SSH connection is closed")
        chan = transport.open_session(timeout=30)
        try:
            chan.exec_command(cmd)
            chan.shutdown_write()  # no stdin: commands cannot wait for input
            while True:
                got = False
                if chan.recv_ready():
                    on_out(chan.recv(65536).decode(errors="replace"))
                    got = True
                if chan.recv_stderr_ready():
                    on_err(chan.recv_stderr(65536).decode(errors="replace"))
                    got = True
                if not got:
                    if chan.exit_status_ready() and not chan.recv_ready() \
                            and not chan.recv_stderr_ready():
                        break
                    if time.monotonic() - start > timeout:
                        raise SshError(f"command did not finish in {timeout:g} s: {cmd}")
                    # Set when the exit status arrives; output is polled at 10 ms.
                    chan.status_event.wait(0.01)
            return chan.recv_exit_status(), time.monotonic() - start
        finally:
            chan.close()

    def fetch(self, remote: str, local: Path) -> Path:
        """Copy a guest file to the host over SFTP (dropbear runs sftp-server)."""
        local.parent.mkdir(parents=True, exist_ok=True)
        with self.client.open_sftp() as sftp:
            sftp.get(remote, str(local))
        return local


def connect(port: int, client_key: Ed25519Key, host_key: Ed25519Key,
            timeout: float = 10.0) -> SshSession:
    """One connection attempt as root, accepting only host_key."""
    client = paramiko.SSHClient()
    # paramiko looks non-22 ports up as "[host]:port".
    client.get_host_keys().add(f"[{HOST}]:{port}", host_key.paramiko_public().get_name(),
                               host_key.paramiko_public())
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            HOST, port=port, username="root", pkey=client_key.paramiko_private(),
            timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
            allow_agent=False, look_for_keys=False,
        )
    except BaseException:
        client.close()
        raise
    return SshSession(client)


def wait_for_ssh(port: int, client_key: Ed25519Key, host_key: Ed25519Key,
                 deadline: float, alive: Callable[[], bool] = lambda: True) -> SshSession:
    """Retry connect until `deadline` (time.monotonic()) or until not alive().

    While the guest boots, QEMU's user network accepts the TCP connection and
    then drops it (no banner): those errors are retried.  A wrong host key or
    a rejected login are not: they will not fix themselves.
    """
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise SshError("QEMU exited while waiting for SSH")
        try:
            return connect(port, client_key, host_key,
                           timeout=max(1.0, min(10.0, deadline - time.monotonic())))
        except (paramiko.BadHostKeyException, paramiko.AuthenticationException):
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            last = exc
            time.sleep(0.2)
    raise SshError(f"no SSH on 127.0.0.1:{port} before the deadline: {last!r}")
