"""The two LAVA targets: `kind: lava-run` (the dispatcher alone on this
machine, a QEMU device at EL2: the local target's nested setup, through
LAVA) and `kind: lava-server` (a LAVA server: the local instance or a lab).

Both render one job per cell (render.py), hand it to LAVA, and read the
outcome back from the job log (joblog.py, outcome.py).  Lab faults come back
as GuestOutcome.fault (lab-cancelled, lab-error, lab-timeout,
lab-unreachable, truncated-log), never raised.  See docs/lava.md.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator import proc
from orchestrator.datafiles import Bool, Document, Field, Int, List, Str
from orchestrator.errors import UserError
from orchestrator.target.job import BootRecord, GuestJob, GuestOutcome, Progress, TargetFault
from orchestrator.target.lava import artifacts, dispatcher
from orchestrator.target.lava.device import device_dictionary
from orchestrator.target.lava.joblog import parse_job_log
from orchestrator.target.lava.outcome import LabEnd, build_outcome, lab_end_from_log
from orchestrator.target.lava.render import JobSettings, job_yaml, qemu_context, render_job
from orchestrator.target.lava.server import LabRejected, LabUnreachable, LavaServer

WORKDIR = "lava"  # under the cell directory: job.yaml, device.yaml, job-log.yaml, steps/
KERNEL_MODES = ("nested", "host")
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_URL = r"https?://[^\s/]+(/[^\s]*)?"


def _dpkg_version(package: str) -> str:
    try:
        res = proc.run(["dpkg-query", "-W", "-f=${Version}", package], timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else "not installed"


def _job_seconds(definition: dict[str, Any]) -> int:
    return int(definition["timeouts"]["job"]["seconds"])


def _input_fault(exc: UserError) -> GuestOutcome:
    return GuestOutcome(BootRecord(False, 0.0, {}, exc.one_line(), ""), [],
                        TargetFault("input", exc.one_line(), "", str(exc)), None, channel="lava")


def _write_console(cell_dir: Path, lines: list[str]) -> Path:
    """The guest's console as the job log carries it (target lines), for crash matching."""
    path = cell_dir / "console.log"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return path


def _finish(job: GuestJob, cell_dir: Path, log_text: str, end: LabEnd, seconds: float,
            progress: Progress | None) -> GuestOutcome:
    log = parse_job_log(log_text)
    console = _write_console(cell_dir, log.target_lines)
    outcome = build_outcome(job, log, end, cell_dir, seconds=seconds, console_log=console)
    if progress is not None:
        progress(outcome)
    return outcome


# -- lava-run ---------------------------------------------------------------------------

class LavaRunTarget:
    """kind: lava-run.  The device dictionary is rendered from the cell's machine
    shape with the same QEMU options as the local target (device.py)."""
    FIELDS: dict[str, Field] = {}

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def from_data(cls, name: str, doc: Document) -> LavaRunTarget:
        return cls(name)

    def identity(self) -> dict[str, str]:
        from orchestrator.vm.session import qemu_version
        return {"kind": "lava", "runner": "lava-run", "lab": "lava-run (this machine)", "device_type": "qemu",
                "lava-dispatcher": _dpkg_version("lava-dispatcher"), "qemu": str(qemu_version()),
                "kernel_under_test": "nested"}

    def preflight(self) -> None:
        dispatcher.preflight()

    def run(self, job: GuestJob, cell_dir: Path, progress: Progress | None = None) -> GuestOutcome:
        work = cell_dir / WORKDIR
        try:
            arts = artifacts.prepare(job, work)
        except UserError as exc:
            return _input_fault(exc)
        definition = render_job(job, JobSettings("qemu", arts.kernel_url, arts.initramfs_url))
        device = yaml.safe_dump(device_dictionary(job.shape), sort_keys=False)
        res = dispatcher.run_job(job_yaml(definition), device, work, timeout_s=_job_seconds(definition) + 60)
        where = f"lava-run job {res.job_id} ({work})"
        text = res.log.read_text(errors="replace")
        if res.timed_out:
            end = LabEnd("Timeout", f"lava-run still running after the job timeout + 60 s: ended", where)
        else:
            end = lab_end_from_log(parse_job_log(text), where, res.exit_status)
        return _finish(job, cell_dir, text, end, res.seconds, progress)


# -- a LAVA server ------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerConfig:
    url: str
    token_env: str
    device_type: str
    qemu_context: bool  # send the shape as job context (cpu, machine, memory, extra_options)
    accel: str  # for that context: tcg | kvm (the worker's host)
    tags: tuple[str, ...]
    artifact_dir: Path | None
    artifact_url: str
    queue_timeout_s: int  # how long a job may wait for a device before we give up
    kernel_under_test: str  # nested | host (a board's own kernel: the inner guests are L1)
    config_set: str  # the config set that boots on this device ("" = the matrix's)
    priority: str
    max_job_timeout_s: int | None = None


class LavaServerTarget:
    """kind: lava-server.  Submits over the REST API v0.2, waits with a deadline,
    fetches the log; `--jobs N` cells at once means N jobs in flight."""
    FIELDS: dict[str, Field] = {
        "url": Field(Str(pattern=_URL, matching="http(s)://host[:port][/prefix]"),
                     required=True, help="the server's base URL"),
        "url_env": Field(Str(pattern=_ENV_NAME, matching="an environment variable name"), default="",
                         help="an environment variable that, when set, replaces url (a second local instance)"),
        "token_env": Field(Str(pattern=_ENV_NAME, matching="an environment variable name"), required=True,
                           help="the environment variable holding the API token (never the token itself)"),
        "device_type": Field(Str(), default="qemu", help="the lab's device type"),
        "qemu_context": Field(Bool(), default=True, help="send the machine shape as qemu job context"),
        "accel": Field(Str(choices=("tcg", "kvm")), default="tcg", help="accelerator of the qemu context"),
        "tags": Field(List(Str()), default=[], help="device tags the job asks for"),
        "artifact_dir": Field(Str(), default="", help="a directory served at artifact_url (remote labs)"),
        "artifact_url": Field(Str(), default="", help="the URL prefix artifact_dir is served under"),
        "queue_timeout_s": Field(Int(0, 7 * 86400), default=3600, help="longest wait for a device"),
        "kernel_under_test": Field(Str(choices=KERNEL_MODES), default="nested",
                                   help="nested: in QEMU on the device; host: the board's own kernel"),
        "config_set": Field(Str(), default="", help="the config set that boots on this device"),
        "priority": Field(Str(choices=("low", "medium", "high")), default="medium"),
        "max_job_timeout_s": Field(Int(60, 7 * 86400), default=None,
                                   help="the lab's ceiling on a job's time (jobs are cut to it)"),
    }

    def __init__(self, name: str, cfg: ServerConfig) -> None:
        self.name = name
        self.cfg = cfg

    @classmethod
    def from_data(cls, name: str, doc: Document) -> LavaServerTarget:
        d = doc.data
        if bool(d["artifact_dir"]) != bool(d["artifact_url"]):
            key = "artifact_url" if d["artifact_dir"] else "artifact_dir"
            raise doc.error((key,), "artifact_dir and artifact_url go together",
                            hint="set both (a remote lab downloads over HTTP) or neither (file:// URLs)")
        url = d["url"]
        if d["url_env"] and os.environ.get(d["url_env"]):
            url = os.environ[d["url_env"]]
            if not re.fullmatch(_URL, url):
                raise UserError(f"target {name}: the environment variable {d['url_env']} is {url!r}, "
                                "not an http(s)://host[:port][/prefix] URL",
                                hint=f"export {d['url_env']}=http://127.0.0.1:PORT, or unset it to use "
                                     f"{d['url']} from targets/{name}.yaml")
        cfg = ServerConfig(url.rstrip("/"), d["token_env"], d["device_type"], d["qemu_context"], d["accel"],
                           tuple(d["tags"]), Path(d["artifact_dir"]).expanduser() if d["artifact_dir"] else None,
                           d["artifact_url"], d["queue_timeout_s"], d["kernel_under_test"], d["config_set"],
                           d["priority"], d["max_job_timeout_s"])
        return cls(name, cfg)

    def identity(self) -> dict[str, str]:
        return {"kind": "lava", "runner": "lava-server", "lab": self.cfg.url, "device_type": self.cfg.device_type,
                "kernel_under_test": self.cfg.kernel_under_test}

    def _token(self) -> str:
        # stripped: a token pasted with its newline would be an invalid header (and
        # urllib's error message would quote it)
        token = os.environ.get(self.cfg.token_env, "").strip()
        if not token:
            raise UserError(f"target {self.name}: the environment variable {self.cfg.token_env} is not set",
                            hint=f"export {self.cfg.token_env}=<your API token for {self.cfg.url}> "
                                 "(lavacli: `lava-server manage tokens add --user USER` on the server, "
                                 "or the web UI's API tokens page)")
        return token

    def server(self) -> LavaServer:
        return LavaServer(self.cfg.url, self._token())

    def preflight(self) -> None:
        server = self.server()
        try:
            user = server.whoami()
        except LabUnreachable as exc:
            raise UserError(f"target {self.name}: the LAVA server does not answer: {exc}",
                            hint="check the URL in targets/" + self.name + ".yaml and that the server runs") from None
        except LabRejected as exc:
            raise UserError(f"target {self.name}: the server refused the token in {self.cfg.token_env} "
                            f"(HTTP {exc.status})", hint="create a new API token and export it") from None
        if not user:
            raise UserError(f"target {self.name}: the token in {self.cfg.token_env} is not accepted (anonymous)",
                            hint="create a new API token and export it")

    def settings(self, job: GuestJob, arts: artifacts.Artifacts) -> JobSettings:
        context = qemu_context(job.shape, self.cfg.accel) if self.cfg.qemu_context else {}
        return JobSettings(self.cfg.device_type, arts.kernel_url, arts.initramfs_url, priority=self.cfg.priority,
                           tags=self.cfg.tags, context=context, max_job_timeout_s=self.cfg.max_job_timeout_s)

    def run(self, job: GuestJob, cell_dir: Path, progress: Progress | None = None) -> GuestOutcome:
        work = cell_dir / WORKDIR
        try:
            server = self.server()
            publish = (artifacts.Publish(self.cfg.artifact_dir, self.cfg.artifact_url)
                       if self.cfg.artifact_dir else None)
            arts = artifacts.prepare(job, work, publish)
        except UserError as exc:
            return _input_fault(exc)
        definition = render_job(job, self.settings(job, arts))
        text = job_yaml(definition)
        (work / "job.yaml").write_text(text)
        t0 = time.monotonic()
        try:
            job_id = server.submit(text)
        except LabUnreachable as exc:
            return self._no_job(job, cell_dir, "lab-unreachable", str(exc), progress)
        except LabRejected as exc:
            return self._no_job(job, cell_dir, "lab-error", f"the server rejected the job: {exc}", progress)
        where = server.job_url(job_id)
        (work / "job-url.txt").write_text(where + "\n")
        # A job waits for a device at most queue_timeout_s, then has its own timeout.
        queue_deadline = t0 + self.cfg.queue_timeout_s
        deadline = queue_deadline + _job_seconds(definition)
        states: list[str] = []
        try:
            st = server.wait(job_id, deadline, queue_deadline=queue_deadline,
                             on_state=lambda s: states.append(f"{s.state}/{s.health}"))
        except LabUnreachable as exc:
            return _finish(job, cell_dir, "", LabEnd("Unreachable", f"{exc} (while waiting)", where),
                           time.monotonic() - t0, progress)
        if st is None:
            try:
                server.cancel(job_id)
            except (LabUnreachable, LabRejected):
                pass
            if states and states[-1].startswith("Submitted/"):
                what = (f"no device took the job within the queue timeout ({self.cfg.queue_timeout_s} s: "
                        f"device type {self.cfg.device_type!r} offline, retired or busy)")
            else:
                what = f"not finished by the deadline ({self.cfg.queue_timeout_s} s queue + job timeout)"
            end = LabEnd("Timeout", f"{what}; states seen: {', '.join(states) or 'none'}; cancelled", where)
        else:
            reason = st.failure_comment
            end = LabEnd({"Complete": "Complete", "Canceled": "Canceled"}.get(st.health, "Incomplete"),
                         reason, where)
        try:
            log_text = server.logs(job_id)
        except (LabUnreachable, LabRejected) as exc:
            log_text = ""
            if end.health == "Complete":
                end = LabEnd("Unreachable", f"the job finished but its log could not be fetched: {exc}", where)
        (work / "job-log.yaml").write_text(log_text)
        if end.health == "Incomplete":  # the log's job case has the error type; the comment may be empty
            from_log = lab_end_from_log(parse_job_log(log_text), where, None)
            reason = from_log.reason if from_log.health != "Complete" else ""
            if end.reason and end.reason not in reason:
                reason = f"{reason} ({end.reason})" if reason else end.reason
            end = LabEnd("Incomplete", reason, where)
        return _finish(job, cell_dir, log_text, end, time.monotonic() - t0, progress)

    def _no_job(self, job: GuestJob, cell_dir: Path, kind: str, reason: str,
                progress: Progress | None) -> GuestOutcome:
        outcome = GuestOutcome(BootRecord(False, 0.0, {}, reason, f"LAVA {self.cfg.url}"), [],
                               TargetFault(kind, reason, "", "", self.cfg.url), None, channel="lava")  # type: ignore[arg-type]
        if progress is not None:
            progress(outcome)
        return outcome

