"""The local target: each job boots in qemu-system-aarch64 on this machine
(vm.session.start_guest), its scripts run one by one over GuestShell (SSH
when it is up, the serial console otherwise) and the evidence files come
back over SFTP or the console.  What the vm stage raises when the guest
misbehaves ends here: it becomes a TargetFault in the outcome, so nothing
above the target knows QEMU's, the console's or SSH's exception classes.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko

from orchestrator.datafiles import Document
from orchestrator.errors import UserError
from orchestrator.target.job import (EVIDENCE_SUBDIR, BootRecord, GuestJob, GuestOutcome, GuestScript, Progress,
                                     ScriptResult, TargetFault)
from orchestrator.vm.console import BootFailure, ConsoleError, GuestConsole, GuestCrashed
from orchestrator.vm.machine import QEMU, MachineShape
from orchestrator.vm.session import Guest, qemu_version, start_guest
from orchestrator.vm.shell import ConnectionLost, GuestShell
from orchestrator.vm.ssh import SshError

# What a command that did not come back raises (the guest stopped answering,
# or the command outlived its time limit): the script's result is "timeout".
_NO_ANSWER = (ConsoleError, SshError, paramiko.SSHException, EOFError, OSError)
FETCH_ATTEMPTS = 2  # once more: an SFTP transfer on a loaded host can fail once
EXCERPT_LINES = 40


def _tail(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "last_lines", [])[-EXCERPT_LINES:])


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


@dataclass
class LocalSession:
    """A booted local guest: what `orchestrator boot` drives by hand."""
    guest: Guest
    shell: GuestShell
    boot: BootRecord

    @property
    def console(self) -> GuestConsole:
        return self.guest.console


class LocalTarget:
    """kind: qemu.  targets/local.yaml is the default target."""
    FIELDS: dict = {}  # nothing to configure: the machine shape says how QEMU is started

    def __init__(self, name: str = "local") -> None:
        self.name = name

    @classmethod
    def from_data(cls, name: str, doc: Document) -> LocalTarget:
        return cls(name)

    def identity(self) -> dict[str, str]:
        # The accelerator (TCG or KVM) depends on the shape and is in the QEMU
        # command line each boot step records; the resume key hashes the shape.
        binary, _, version = qemu_version(QEMU).partition(": ")
        return {"kind": "qemu", "binary": binary, "qemu": version.removeprefix("QEMU emulator version ")}

    def preflight(self) -> None:
        """Nothing to check up front: a missing QEMU is the boot step's error in each cell."""

    # -- booting -------------------------------------------------------------------------

    @contextmanager
    def session(self, shape: MachineShape, kernel: Path, *, workdir: Path, files: dict[str, Path] | None = None,
                cmdline_extra: str = "", boot_silence_s: float = 90.0, boot_timeout_s: float = 300.0,
                ssh_timeout_s: float = 60.0) -> Iterator[LocalSession]:
        """Boot to the ready marker and connect; leaving the block powers the guest off.
        Raises what vm.session raises (run() turns it into a TargetFault)."""
        t0 = time.monotonic()
        with start_guest(shape, kernel, workdir=workdir, extra=files, cmdline_extra=cmdline_extra,
                         silence=boot_silence_s, overall=boot_timeout_s, ssh_timeout=ssh_timeout_s) as g:
            argv_file = workdir / "qemu-argv.txt"  # the emulator settings belong to every timing figure
            qemu = " ".join(argv_file.read_text().split()) if argv_file.is_file() else ""
            boot = BootRecord(True, time.monotonic() - t0, dict(g.boot.stages), f"guest uptime {g.boot.guest_uptime}",
                              f"qemu: {qemu}")
            yield LocalSession(g, GuestShell(g.console, g.ssh), boot)

    # -- running a job -------------------------------------------------------------------

    def run(self, job: GuestJob, cell_dir: Path, progress: Progress | None = None) -> GuestOutcome:
        t0 = time.monotonic()
        outcome = GuestOutcome(BootRecord(False, 0.0, {}, "", ""), [], None, cell_dir / "console.log")
        report = progress or (lambda _o: None)
        current = ""  # the script running when a fault happens ("" while booting)
        try:
            with self.session(job.shape, job.kernel_image, workdir=cell_dir, files=job.files,
                              boot_silence_s=job.boot_silence_s, boot_timeout_s=job.boot_timeout_s,
                              ssh_timeout_s=job.ssh_timeout_s) as s:
                outcome.boot = s.boot
                outcome.channel = s.shell.via
                if s.guest.ssh is None:
                    outcome.channel_note = (f"no SSH: {s.guest.ssh_error or 'the machine shape has no network'}; "
                                            "using the serial console")
                report(outcome)
                ended = ""  # a script the host gave up on: the rest is not run
                for script in job.scripts:
                    current = script.name
                    outcome.scripts.append(self._run_script(s.shell, script, outcome, ended, cell_dir))
                    outcome.channel, outcome.channel_lost = s.shell.via, s.shell.ssh_lost
                    if outcome.scripts[-1].status == "timeout":
                        ended = ended or script.name
                    report(outcome)
                current = ""  # powering off
        except BootFailure as exc:
            outcome.boot = BootRecord(False, time.monotonic() - t0, {}, exc.detail, _argv(cell_dir))
            outcome.fault = TargetFault("boot-failed", exc.reason, exc.detail, _tail(exc), exc.stage or "start")
        except GuestCrashed as exc:
            outcome.fault = TargetFault("guest-crashed", exc.reason, exc.detail, _tail(exc), script=current)
        except ConnectionLost as exc:
            outcome.fault = TargetFault("connection-lost", _first_line(exc), "", _tail(exc), script=current)
        except (ConsoleError, SshError) as exc:  # a command outside any script did not come back
            outcome.fault = TargetFault("timeout", _first_line(exc) if isinstance(exc, ConsoleError) else str(exc),
                                        "", _tail(exc), script=current)
        except UserError as exc:  # QEMU not installed, no kernel image, no space for the guest image
            outcome.fault = TargetFault("input", exc.one_line(), "", str(exc), script=current)
        if outcome.fault is not None:
            report(outcome)
        return outcome

    def _run_script(self, shell: GuestShell, script: GuestScript, outcome: GuestOutcome, ended: str,
                    cell_dir: Path) -> ScriptResult:
        if ended:
            return ScriptResult(script.name, "not-run", None, 0.0, "",
                                detail=f"{ended} did not finish: the guest stopped answering")
        if script.needs is not None:
            before = outcome.result(script.needs)
            if before is None or before.status != "pass":
                return ScriptResult(script.name, "not-run", None, 0.0, "", detail=f"{script.needs} did not pass")
        t = time.monotonic()
        try:
            status, output = shell.run(script.script, timeout=script.timeout_s)
        except GuestCrashed:
            raise  # the guest is gone: the job ends with a fault
        except ConnectionLost as exc:  # the guest lives on: later scripts use the serial console
            return self._with_evidence(shell, script, cell_dir, ScriptResult(
                script.name, "error", None, time.monotonic() - t, "", detail=exc.args[0]))
        except _NO_ANSWER as exc:  # the command's time limit: the guest stopped answering
            return ScriptResult(script.name, "timeout", None, time.monotonic() - t, f"{type(exc).__name__}: {exc}",
                                detail=f"{type(exc).__name__}: {_first_line(exc)}")
        result = ScriptResult(script.name, "pass" if status == 0 else "fail", status, time.monotonic() - t, output)
        return self._with_evidence(shell, script, cell_dir, result)

    @staticmethod
    def _with_evidence(shell: GuestShell, script: GuestScript, cell_dir: Path, result: ScriptResult) -> ScriptResult:
        """Copy the script's evidence files to CELL_DIR/evidence; one that cannot be
        copied is named in result.missing (a missing file is reported, not fatal)."""
        outdir = cell_dir / EVIDENCE_SUBDIR
        outdir.mkdir(parents=True, exist_ok=True)
        for remote in script.evidence:
            local = outdir / Path(remote).name
            for attempt in range(1, FETCH_ATTEMPTS + 1):
                try:
                    shell.fetch(remote, local)
                    result.evidence[remote] = local
                    break
                except GuestCrashed:
                    raise
                except Exception as exc:  # noqa: BLE001 - reported in the result
                    if attempt == FETCH_ATTEMPTS:
                        result.missing[remote] = f"{type(exc).__name__}: {exc}"
        return result


def _argv(cell_dir: Path) -> str:
    argv_file = cell_dir / "qemu-argv.txt"
    return "qemu: " + " ".join(argv_file.read_text().split()) if argv_file.is_file() else ""
