"""Child processes that never outlive the orchestrator.

Every child is started in its own session/process group and registered; on
normal exit, exceptions, SIGTERM and SIGINT the whole group is ended
(SIGTERM, a grace period, then SIGKILL).  Commands are argument lists, never
shell strings built from user data.
"""
from __future__ import annotations

import atexit
import os
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from orchestrator.errors import UserError

_live: dict[int, subprocess.Popen] = {}
_live_lock = threading.Lock()
_handlers_installed = False


class CommandTimedOut(UserError, subprocess.TimeoutExpired):
    """A child ran past its time limit; its process group has been ended.

    A UserError (one message, exit status 2, a step error in run-matrix: the
    infrastructure, not the kernel under test, is at fault) that is also a
    subprocess.TimeoutExpired, so code written against subprocess still works.
    """

    def __init__(self, argv: Sequence[str], timeout: float, output: str | None = None) -> None:
        shown = shlex.join(str(a) for a in argv)
        if len(shown) > 200:
            shown = shown[:200] + " ..."
        # Both bases' __init__ chain to super(): set their attributes directly.
        Exception.__init__(self, f"command timed out after its limit of {timeout:g} s: {shown}")
        self.message = self.args[0]
        self.hint = ("the host may be overloaded or the command hung; see its log, "
                     "then rerun (run-matrix: --resume reruns error cells)")
        self.cmd, self.timeout, self.output, self.stderr = list(argv), timeout, output, None

    def __str__(self) -> str:
        return UserError.__str__(self)


def session_members(sid: int) -> list[int]:
    """PIDs whose session is `sid` (from /proc/PID/stat, field 6)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited while we looked
        # comm (field 2) may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        # A zombie has ended already (its parent reaps it); waiting on it would stall.
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != b"Z":
            members.append(int(entry.name))
    return members


def kill_session(sid: int, grace: float = 3.0) -> None:
    """End every process still in session `sid`: children that moved to a process
    group of their own (lava-worker runs each lava-run, and lava-run its QEMU,
    in a new group) escape killpg of the leader's group but not its session."""
    pids = [p for p in session_members(sid) if p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 0)
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = [p for p in pids if p in session_members(sid)]
        if not pids:
            return


def kill_group(pid: int, grace: float = 3.0) -> None:
    """SIGTERM the process group, wait up to `grace` s, then SIGKILL it; then
    whatever else is left in the session the child leads (popen starts every
    child as a session leader, so a grandchild that made its own group is found)."""
    try:
        _kill_group_only(pid, grace)
    finally:
        kill_session(pid, grace)


def _kill_group_only(pid: int, grace: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        # Reap the leader if it is ours so killpg(0) stops seeing a zombie.
        with _live_lock:
            proc = _live.get(pid)
        if proc is not None and proc.poll() is not None:
            try:
                os.killpg(pid, 0)
            except (ProcessLookupError, PermissionError):
                return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def end_all() -> None:
    """End every registered child process group (idempotent)."""
    with _live_lock:
        procs = list(_live.values())
        _live.clear()
    for proc in procs:
        kill_group(proc.pid)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass


def register(proc: subprocess.Popen) -> None:
    install_signal_handlers()
    with _live_lock:
        _live[proc.pid] = proc


def unregister(proc: subprocess.Popen) -> None:
    with _live_lock:
        _live.pop(proc.pid, None)


def _on_signal(signum: int, _frame) -> None:
    end_all()
    # Re-raise as the conventional exception/exit so callers unwind and write
    # what they have (partial results) on the way out.
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    _handlers_installed = True
    atexit.register(end_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)


def popen(argv: Sequence[str | os.PathLike], **kwargs) -> subprocess.Popen:
    """Start argv in a new session (own process group) and register it."""
    kwargs.setdefault("start_new_session", True)
    proc = subprocess.Popen([os.fspath(a) for a in argv], **kwargs)
    register(proc)
    return proc


@contextmanager
def managed(argv: Sequence[str | os.PathLike], **kwargs) -> Iterator[subprocess.Popen]:
    """Popen whose process group is ended when the block exits, whatever happens."""
    proc = popen(argv, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_group(proc.pid)
        else:
            # The leader is gone; grandchildren may still hold the group.
            kill_group(proc.pid, grace=1.0)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        unregister(proc)


def run(
    argv: Sequence[str | os.PathLike],
    *,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess:
    """Run to completion, capturing text output; the group is ended on timeout."""
    with managed(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    ) as proc:
        try:
            out, err = proc.communicate(input=input_text, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CommandTimedOut(proc.args, timeout or 0, exc.output) from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def stream(
    argv: Sequence[str | os.PathLike],
    *,
    on_line: Callable[[str], None],
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> int:
    """Run, calling on_line for every output line (stdout+stderr merged).

    The deadline holds whether or not the child prints: output is read with
    select(), so a child that hangs silently is ended at its limit too
    (CommandTimedOut), not waited for forever.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with managed(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        bufsize=0,
    ) as proc:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        pending = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise CommandTimedOut(proc.args, timeout or 0)
                if not sel.select(wait):
                    continue  # the loop head sees the deadline
                chunk = os.read(fd, 65536)
                if not chunk:  # EOF: every writer (grandchildren too) closed the pipe
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace"))
        if pending:
            on_line(pending.decode(errors="replace"))
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            raise CommandTimedOut(proc.args, timeout or 0) from None
