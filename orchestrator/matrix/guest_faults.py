"""What a fault during a cell's guest phases means as a verdict.  A boot that
never reached the prompt or a guest that stopped is the kernel failing; a
lost connection or bad input is an error of the infrastructure; a command
that timed out is a failure of the phase it ran in."""
from __future__ import annotations

from orchestrator.errors import UserError
from orchestrator.reports.results import ERROR, FAILED, Step
from orchestrator.vm.console import BootFailure, ConsoleError, GuestCrashed
from orchestrator.vm.shell import ConnectionLost
from orchestrator.vm.ssh import SshError


def _tail(exc: Exception) -> str:
    return "\n".join(getattr(exc, "last_lines", [])[-40:])


def fault_step(exc: Exception, phase: str, seconds: float) -> Step | None:
    """The step that reports `exc` raised during `phase`; None if it is not a guest fault."""
    if isinstance(exc, BootFailure):
        return Step("boot", FAILED, seconds, f"boot failed ({exc.reason}) at stage {exc.stage or 'start'}"
                    + (f": {exc.detail}" if exc.detail else ""), excerpt=_tail(exc))
    if isinstance(exc, GuestCrashed):
        return Step(phase, FAILED, seconds,
                    f"the guest stopped during {phase} ({exc.reason})" + (f": {exc.detail}" if exc.detail else ""),
                    excerpt=_tail(exc))
    if isinstance(exc, ConnectionLost):
        return Step(phase, ERROR, seconds, str(exc).splitlines()[0], excerpt=_tail(exc))
    if isinstance(exc, ConsoleError):  # a command timed out on the serial console
        return Step(phase, FAILED, seconds, str(exc).splitlines()[0], excerpt=_tail(exc))
    if isinstance(exc, SshError):  # a command timed out over SSH
        return Step(phase, FAILED, seconds, str(exc))
    if isinstance(exc, UserError):
        return Step(phase, ERROR, seconds, exc.one_line(), excerpt=str(exc))
    return None
