"""QEMU on a pty: boot stages, panics, and commands over the serial console.

GuestConsole starts QEMU (own session and process group, registered with
orchestrator.proc), writes every console byte to a log file as it arrives,
and follows the boot through named stages.  Failures are typed: BootFailure
says which stage was reached, why it stopped (hang, panic, qemu-exit,
timeout) and the last console lines.

QEMU cannot outlive us: the context manager and proc's handlers end its
process group; if our process is SIGKILLed, QEMU gets SIGKILL from the kernel
(PR_SET_PDEATHSIG, set between fork and exec) and SIGHUP from its pty closing.

Commands (run) use markers that the echoed command line cannot contain, so
they work with or without tty echo, and the markers are still found when a
kernel message lands in the middle of one.  Kernel messages printed while a
command runs do end up in its output: use SSH for exact output, or boot with
orch.printk=N to lower the console loglevel.
"""
from __future__ import annotations

import codecs
import ctypes
import errno
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pexpect

from orchestrator import proc
from orchestrator.errors import UserError

# (stage name, text that marks it), in boot order.
STAGES: tuple[tuple[str, str], ...] = (
    ("banner", "Booting Linux on physical CPU"),
    ("init", "ORCH-INIT"),
    ("ready", "ORCH-READY uptime="),
)
PANIC_START = "Kernel panic - not syncing"
PANIC_END = "---[ end Kernel panic"
# kernel_restart() (reboot(2), `reboot -f`): with -no-reboot QEMU then exits.
REBOOT_LINE = "reboot: Restarting system"
# After a panic starts, keep reading this long for the rest of the report.
PANIC_GRACE_S = 5.0
LAST_LINES = 60
# n_tty's canonical mode reads at most 4095 bytes a line.
MAX_COMMAND_LINE = 3800
# Bounds on what a guest can make us hold, whatever it prints (binary garbage,
# a line that never ends): one console line, and a command's output (its head
# and tail are kept, the middle is dropped and the drop is said in the output).
MAX_LINE_CHARS = 4096
MAX_PENDING = 1 << 20
KEEP_HEAD = 256 << 10
KEEP_TAIL = 256 << 10
# How often a command's output is searched in full for its end marker when no
# new "END-" arrived (a kernel message may have split the marker).
FULL_PARSE_EVERY_S = 1.0
SHELL_EXIT_MARKER = "ORCH-SHELL-EXIT"  # guest/init, after the console shell ended
# At the start of a line and alone on it: `cat /init` shows the echo command, not this.
# Lines end "\r\r\n" on a real console (the guest tty's onlcr, then the host
# pty's), so any number of CRs may come before the newline.
_SHELL_EXIT = re.compile(rb"(?:^|\n)" + SHELL_EXIT_MARKER.encode() + rb"\r*\n")


class _ShellExited(Exception):
    """Raised from interact()'s output filter to end the session."""


# A kernel message line ("[   12.345678] ..."): printk output can land in the
# middle of any console line, so parsers drop these before matching.
KMSG_FRAGMENT = re.compile(r"\[\s*\d+\.\d+\][^\n]*\n")
_READY_RE = re.compile(r"ORCH-READY uptime=([0-9.]+)")

PR_SET_PDEATHSIG = 1


class ConsoleError(Exception):
    """Base of the console's failures; carries the last console lines."""

    def __init__(self, message: str, last_lines: Sequence[str] = (), log_path: Path | None = None):
        super().__init__(message)
        self.last_lines = list(last_lines)
        self.log_path = log_path

    def __str__(self) -> str:
        tail = "\n".join(f"    | {line}" for line in self.last_lines[-15:])
        where = f"\n  console log: {self.log_path}" if self.log_path else ""
        return f"{self.args[0]}\n  last console lines:\n{tail}{where}"


class BootFailure(ConsoleError):
    """The guest did not reach the ready marker."""

    def __init__(self, stage: str | None, reason: str, last_lines: Sequence[str],
                 log_path: Path | None = None, detail: str = ""):
        self.stage = stage  # last stage reached (None: not even the banner)
        self.reason = reason  # "hang" | "panic" | "qemu-exit" | "reboot" | "timeout"
        self.detail = detail
        msg = f"boot failed ({reason}) after stage {stage or 'none'}"
        super().__init__(msg + (f": {detail}" if detail else ""), last_lines, log_path)


class GuestCrashed(ConsoleError):
    """Panic or QEMU exit while running a command."""

    def __init__(self, reason: str, last_lines: Sequence[str], log_path: Path | None = None,
                 detail: str = ""):
        self.reason = reason  # "panic" | "qemu-exit"
        self.detail = detail  # the panic line, or how QEMU ended
        msg = f"guest stopped while running a command ({reason})"
        super().__init__(msg + (f": {detail}" if detail else ""), last_lines, log_path)


class CommandTimeout(ConsoleError):
    def __init__(self, cmd: str, timeout: float, last_lines: Sequence[str], log_path: Path | None = None):
        self.cmd = cmd
        super().__init__(f"command did not finish in {timeout:g} s: {cmd}", last_lines, log_path)


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    output: str  # stdout+stderr as the console showed them, "\n" line ends
    duration: float  # seconds, host clock, send to end marker


@dataclass
class BootInfo:
    stages: dict[str, float] = field(default_factory=dict)  # stage -> s since QEMU start
    guest_uptime: float | None = None  # /proc/uptime at the ready marker


# -- pure helpers (tested on captured logs) -----------------------------------

def command_line(cmd: str, nonce: str) -> str:
    """The line typed on the console for cmd.

    `sh -c` turns syntax errors and `exit` into an exit status instead of
    killing or confusing the console shell; stdin is /dev/null so the command
    cannot eat what we type next.  printf splits the markers so the echo of
    this line never contains "BEGIN-<nonce>" or "END-<nonce>-".
    """
    return (f"printf '%s-%s\\n' BEGIN {nonce}; sh -c {shlex.quote(cmd)} </dev/null 2>&1; "
            f"printf 'END-%s-%d\\n' {nonce} $?\n")


def parse_command_output(text: str, nonce: str) -> tuple[int, str] | None:
    """(exit status, output) once both markers are in text, else None."""
    pattern = re.compile(rf"BEGIN-{nonce}\r*\n(.*?)END-{nonce}-(\d+)\r*\n", re.S)
    match = pattern.search(text)
    if match is None:
        # A kernel message may have split a marker: look again without them.
        match = pattern.search(KMSG_FRAGMENT.sub("", text.replace("\r", "")))
    if match is None:
        return None
    return int(match.group(2)), re.sub(r"\r+\n", "\n", match.group(1))


def scan_boot_log(text: str) -> tuple[list[str], bool]:
    """Stages reached (in order) and whether a panic started, for a saved log."""
    reached = [name for name, marker in STAGES if marker in text]
    return reached, PANIC_START in text


# -- the live console ---------------------------------------------------------

# Looked up once here, not in the forked child (no dlopen between fork and exec).
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child between fork and exec: SIGKILL when the parent dies.

    The kernel sends it when the forking *thread* exits, so start QEMU from
    a thread that lives as long as the run (normally the main thread).
    """
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # parent died before prctl took effect
        os._exit(1)


class _SpawnHandle:
    """What orchestrator.proc needs of a child (pid, poll, wait, args)."""

    def __init__(self, child: pexpect.spawn, argv: Sequence[str]) -> None:
        self.child = child
        self.pid = child.pid
        self.args = list(argv)

    def poll(self) -> int | None:
        """None while running; else the exit status, or -signal like Popen."""
        if self.child.isalive():
            return None
        if self.child.exitstatus is not None:
            return self.child.exitstatus
        return -(self.child.signalstatus or 0)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.02)
        return status


class GuestConsole:
    """One QEMU run.  Use as a context manager: QEMU never survives the block."""

    def __init__(self, argv: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None):
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self._env = env
        self._child: pexpect.spawn | None = None
        self._handle: _SpawnHandle | None = None
        self._log = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._lines: deque[str] = deque(maxlen=LAST_LINES)
        self._partial = ""
        self._pending = ""  # text not yet consumed by a command/boot wait
        self._trim: tuple[str, str, int] | None = None  # (kept head, note, dropped) of a long output
        self._tail = ""  # end of previous chunk, for markers split across reads
        self._panic_at: float | None = None
        self._started = 0.0
        self._last_output = 0.0
        self._echo_off = False
        self._closed = False
        self.boot_info = BootInfo()
        self.exit_status: int | None = None

    # -- process lifetime -----------------------------------------------------
    def start(self) -> None:
        if shutil.which(self.argv[0], path=(self._env or os.environ).get("PATH")) is None:
            raise UserError(f"{self.argv[0]} not found on PATH",
                            hint="apt-get install qemu-system-arm   (or run `orchestrator install-deps`)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb", buffering=0)
        parent = os.getpid()
        self._started = self._last_output = time.monotonic()
        self._child = pexpect.spawn(
            self.argv[0], self.argv[1:], timeout=None, maxread=65536, echo=False,
            env=self._env, preexec_fn=lambda: _die_with_parent(parent),
            dimensions=(50, 500),
        )
        self._child.logfile_read = self._log
        self._handle = _SpawnHandle(self._child, self.argv)
        proc.register(self._handle)  # type: ignore[arg-type]  # duck-typed Popen

    @property
    def alive(self) -> bool:
        return self._child is not None and self._child.isalive()

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    def close(self) -> None:
        """End QEMU's process group (SIGTERM, grace, SIGKILL); idempotent."""
        if self._child is None or self._closed:
            return
        self._closed = True
        assert self._handle is not None
        # QEMU forks no helpers, so once it is reaped its group is empty (and
        # its pid may be reused): signal the group only while it is alive.
        if self._child.isalive():
            proc.kill_group(self._child.pid)
        try:
            self.exit_status = self._handle.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        proc.unregister(self._handle)  # type: ignore[arg-type]
        try:
            self._child.close(force=True)
        except Exception:  # already reaped / fd closed
            pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def interact(self) -> str:
        """Hand the console to the user's terminal until they press Ctrl-], the
        shell exits, or QEMU exits; returns which ("escape", "shell-exit", "qemu-exit").

        guest/init runs the console shell in a loop (PID 1 must not exit) and
        prints SHELL_EXIT_MARKER each time it ends: seeing it ends the session,
        so `exit` does what the user expects instead of starting a new shell.
        """
        if self._child is None:
            raise ConsoleError("QEMU is not running")
        self._child.logfile_read = None  # interact() copies output itself
        self._interact_tail = b""
        try:
            self._child.interact(escape_character=chr(29), output_filter=self._watch_output)
        except _ShellExited:
            return "shell-exit"
        finally:
            if self._log is not None:
                self._child.logfile_read = self._log
        return "escape" if self._child.isalive() else "qemu-exit"

    def _watch_output(self, data: bytes) -> bytes:
        data = self._log_output(data)
        # The marker may be split across reads: look at the end of the last chunk too.
        seen = self._interact_tail + data
        if m := _SHELL_EXIT.search(seen):
            shown = max(0, m.start() - len(self._interact_tail))
            os.write(1, data[:shown])  # what came before the marker, as interact() would
            raise _ShellExited
        self._interact_tail = seen[-(len(SHELL_EXIT_MARKER) + 16):]  # room for the CRs
        return data

    def _log_output(self, data: bytes) -> bytes:
        if self._log is not None:
            self._log.write(data)
        return data

    def __enter__(self) -> GuestConsole:
        if self._child is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------
    @property
    def last_lines(self) -> list[str]:
        return list(self._lines) + ([self._partial] if self._partial else [])

    def _read(self, wait: float) -> bool:
        """Read what is there (waiting up to `wait` s); False at EOF."""
        assert self._child is not None
        try:
            data = self._child.read_nonblocking(65536, timeout=max(wait, 0.0))
        except pexpect.TIMEOUT:
            return True
        except pexpect.EOF:
            return False
        except OSError as exc:
            # pexpect writes the log as it reads: a full disk surfaces here.
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OSError(exc.errno, f"{exc.strerror} (writing the console log)", str(self.log_path)) from exc
            raise
        text = self._decoder.decode(data)
        if not text:
            return True
        self._last_output = time.monotonic()
        self._pending += text
        window = self._tail + text
        self._tail = window[-256:]
        if self._panic_at is None and PANIC_START in window:
            self._panic_at = time.monotonic()
        parts = (self._partial + text.replace("\r", "")).split("\n")
        self._partial = parts.pop()
        if len(self._partial) > MAX_LINE_CHARS:  # a line that never ends (binary output)
            parts.append(self._partial[:MAX_LINE_CHARS] + " [...]")
            self._partial = ""
        self._lines.extend(ln if len(ln) <= MAX_LINE_CHARS else ln[:MAX_LINE_CHARS] + " [...]"
                           for ln in parts[-LAST_LINES:])
        return True

    def _bound_pending(self, start_marker: str) -> None:
        """Keep at most MAX_PENDING characters of a command's unconsumed output:
        from its start marker the first KEEP_HEAD characters, a note of how much
        was dropped, and the latest characters (where the end marker will be)."""
        if len(self._pending) <= MAX_PENDING:
            return
        begin = self._pending.find(start_marker)
        if begin < 0:  # not started yet: only the end can matter
            self._pending = self._pending[-KEEP_TAIL:]
            return
        body = self._pending[begin:]
        if self._trim is None:
            head, rest, dropped = body[:KEEP_HEAD], body[KEEP_HEAD:], 0
        else:
            head, note, dropped = self._trim
            rest = body[len(head) + len(note):]
        dropped += len(rest) - KEEP_TAIL
        note = f"\n[... {dropped} characters of console output dropped ...]\n"
        self._trim = (head, note, dropped)
        self._pending = head + note + rest[-KEEP_TAIL:]

    @contextmanager
    def reading_in_background(self) -> Iterator[None]:
        """Keep reading the console while another channel (SSH) runs a command.

        Nobody else reads the pty then; once its buffer is full QEMU blocks in
        the guest's next UART write, and the guest stops (a burst of kernel
        messages was enough).  Output read here goes to the log and the last
        lines (panics are noticed); it is not a command's output.  The caller
        must not use the console in the block.
        """
        if not self.alive:
            yield
            return
        stop = threading.Event()
        failed: list[BaseException] = []

        def pump() -> None:
            try:
                # Short waits: the SSH command's caller joins this thread after each command.
                while not stop.is_set() and self._read(0.05):
                    self._pending = ""
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                failed.append(exc)

        thread = threading.Thread(target=pump, name="console-reader", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        if failed:
            raise failed[0]

    def drain(self, quiet: float = 1.0, limit: float = 10.0) -> None:
        """Read what QEMU printed until EOF, `quiet` s without output, or `limit` s
        (e.g. the panic of a guest that died while SSH ran a command)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            before = self._last_output
            if not self._read(min(quiet, max(0.0, end - time.monotonic()))):
                self._finish_exit()
                return
            self._pending = self._pending[-KEEP_TAIL:]
            if self._last_output == before and self._panic_at is None:
                return
            if self._panic_at is not None and self._panic_complete():
                return

    def exit_detail(self) -> str:
        """How QEMU ended, for messages ("" while it runs)."""
        if self.alive:
            return ""
        status = self.exit_status
        if status is None and self._handle is not None:
            status = self._handle.poll()
        if status is None:
            return "QEMU exited"
        if status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = f"signal {-status}"
            return f"QEMU was killed by {name}"
        return f"QEMU exited with status {status}"

    def reboot_seen(self) -> bool:
        return any(REBOOT_LINE in ln for ln in self.last_lines)

    def panic_line(self) -> str | None:
        """The "Kernel panic - not syncing: ..." line, once one was seen."""
        return next((ln.strip() for ln in self.last_lines if PANIC_START in ln), None)

    def _panic_complete(self) -> bool:
        return self._panic_at is not None and (
            PANIC_END in self._tail or time.monotonic() - self._panic_at > PANIC_GRACE_S)

    def _finish_exit(self) -> None:
        """QEMU closed the pty: collect its exit status."""
        assert self._handle is not None
        try:
            self.exit_status = self._handle.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    # -- booting ----------------------------------------------------------------
    def wait_ready(self, *, silence: float = 90.0, overall: float = 300.0) -> BootInfo:
        """Follow the boot to the ready marker, or raise BootFailure."""
        deadline = self._started + overall
        stage: str | None = None
        scanned = 0  # offset in self._pending already searched for stages
        while True:
            # Search stages from a little before the new text (split markers).
            chunk = self._pending[max(0, scanned - 64):]
            for name, marker in STAGES:
                if name not in self.boot_info.stages and marker in chunk:
                    self.boot_info.stages[name] = time.monotonic() - self._started
                    stage = name
            if "ready" not in self.boot_info.stages and len(self._pending) > MAX_PENDING:
                self._pending = self._pending[-256:]  # stages found so far are recorded
            scanned = len(self._pending)
            if "ready" in self.boot_info.stages:
                match = _READY_RE.search(self._pending)
                self.boot_info.guest_uptime = float(match.group(1)) if match else None
                # Keep only what follows the ready line for the command protocol.
                self._pending = self._pending[match.end():] if match else ""
                # A panic after the ready line surfaces in the next run().
                return self.boot_info
            if self._panic_at is not None:
                # Let the rest of the panic report arrive, then fail.
                while not self._panic_complete() and self._read(0.2):
                    pass
                raise BootFailure(stage, "panic", self.last_lines, self.log_path,
                                  self.panic_line() or "")
            now = time.monotonic()
            if now > deadline:
                raise BootFailure(stage, "timeout", self.last_lines, self.log_path,
                                  f"no ready marker within {overall:g} s")
            if now - self._last_output > silence:
                raise BootFailure(stage, "hang", self.last_lines, self.log_path,
                                  f"no console output for {silence:g} s")
            if not self._read(min(0.5, deadline - now)):
                self._finish_exit()
                if self.reboot_seen():
                    # Without -no-reboot this would start over: a boot loop.
                    raise BootFailure(stage, "reboot", self.last_lines, self.log_path,
                                      f"the guest rebooted before the ready marker ({REBOOT_LINE!r}); "
                                      "-no-reboot stopped what would be a boot loop")
                # QEMU's own complaint (bad option, missing file) names the problem.
                own = [ln.strip() for ln in self.last_lines if ln.startswith(Path(self.argv[0]).name + ":")]
                raise BootFailure(stage, "qemu-exit", self.last_lines, self.log_path,
                                  f"QEMU exited with status {self.exit_status}" + (f": {own[-1]}" if own else ""))

    # -- commands ---------------------------------------------------------------
    def _send(self, text: str) -> None:
        assert self._child is not None
        self._child.send(text.encode())

    def run(self, cmd: str, timeout: float = 60.0) -> CommandResult:
        """Run cmd with /bin/sh in the guest; raises CommandTimeout/GuestCrashed."""
        nonce = secrets.token_hex(6)
        line = command_line(cmd, nonce)
        if len(line.encode()) > MAX_COMMAND_LINE:
            raise ValueError(f"command too long for the serial console ({len(line)} bytes); "
                             "copy a script into the image or use SSH")
        if not self._echo_off:
            # Echo only adds noise (markers cannot match it): turn it off once,
            # in the console shell itself (the command's stdin is /dev/null).
            self._echo_off = True
            line = "stty -echo 2>/dev/null; " + line
        self._pending = ""
        self._trim = None
        start = time.monotonic()
        self._send(line)
        end_marker = f"END-{nonce}-"
        end_seen = False
        last_full = 0.0
        checked = 0  # offset up to which the end marker was looked for
        while True:
            # Parse only once the end marker may have arrived: output is
            # bounded, but searching all of it on every read would not be.
            now = time.monotonic()
            end_seen = end_seen or end_marker in self._pending[max(0, checked - len(end_marker)):]
            checked = len(self._pending)
            parsed = None
            if end_seen or now - last_full >= FULL_PARSE_EVERY_S:
                last_full = now
                parsed = parse_command_output(self._pending, nonce)
            if parsed is not None:
                status, output = parsed
                end = self._pending.find(f"END-{nonce}-")
                self._pending = self._pending[end:].split("\n", 1)[-1] if end >= 0 else ""
                return CommandResult(status, output, time.monotonic() - start)
            if self._panic_at is not None:
                while not self._panic_complete() and self._read(0.2):
                    pass
                raise GuestCrashed("panic", self.last_lines, self.log_path, self.panic_line() or "")
            remaining = start + timeout - time.monotonic()
            if remaining <= 0:
                self._interrupt()
                raise CommandTimeout(cmd, timeout, self.last_lines, self.log_path)
            if not self._read(min(0.5, remaining)):
                self._finish_exit()
                raise GuestCrashed("qemu-exit", self.last_lines, self.log_path, self.exit_detail())
            before = len(self._pending)
            self._bound_pending(f"BEGIN-{nonce}")
            if len(self._pending) != before:
                checked = 0

    def _interrupt(self) -> None:
        """Ctrl-C the stuck command (the shell has a controlling tty: cttyhack)."""
        self._send("\x03")
        end = time.monotonic() + 2
        while time.monotonic() < end and self._read(0.2):
            pass
        self._pending = ""

    # -- stopping ---------------------------------------------------------------
    def poweroff(self, deadline: float = 30.0) -> int | None:
        """`poweroff -f` in the guest, wait for QEMU to exit, else kill it."""
        if self.alive:
            try:
                self._send("poweroff -f\n")
            except OSError:
                pass
            end = time.monotonic() + deadline
            while time.monotonic() < end and self._read(min(0.5, end - time.monotonic())):
                pass
            if not self.alive:
                self._finish_exit()
        self.close()
        return self.exit_status
