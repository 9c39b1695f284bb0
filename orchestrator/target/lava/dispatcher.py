"""Running one job with `lava-run`: LAVA's dispatcher alone on this machine
(what tuxrun calls its "null" runtime), with a rendered device dictionary.

lava-run must run as root; it writes the whole job log to stderr, one YAML
mapping per line (2023.01 writes no logs.yaml), which goes straight into
the cell directory as it is produced.  Its exit status says little (a job
with failed test cases exits 0): the log is read, not the status.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import UserError

LAVA_RUN = "lava-run"
# Its temporary files go here whatever --output-dir says (measured).
DISPATCHER_TMP = Path("/var/lib/lava/dispatcher/tmp")


@dataclass(frozen=True)
class RunResult:
    job_id: str
    exit_status: int | None  # None: killed at our deadline
    log: Path  # the job log (lava-run's stderr)
    seconds: float
    timed_out: bool


def preflight() -> None:
    if shutil.which(LAVA_RUN) is None:
        raise UserError("lava-run not found", hint="apt-get install -y --no-install-recommends lava-dispatcher "
                        "(or run ./scripts/bootstrap)")
    if os.geteuid() != 0:
        raise UserError("lava-run must run as root (it exits 1 for other users)",
                        hint="run the matrix as root, or use the local target")


def new_job_id() -> str:
    """A numeric id unlikely to meet another job's (a server's jobs count from 1),
    since the dispatcher's temporary directory is named by it."""
    return str(10**8 + (int(time.time() * 1000) + os.getpid()) % (9 * 10**8))


def run_job(job_yaml: str, device_yaml: str, workdir: Path, *, timeout_s: float) -> RunResult:
    """Run one job; at timeout_s its process group is ended (timed_out)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "job.yaml").write_text(job_yaml)
    (workdir / "device.yaml").write_text(device_yaml)
    # The dispatcher's address: without it validation looks up the default route
    # and crashes where there is none (shared/docs/lava/README.md).
    (workdir / "dispatcher.yaml").write_text("dispatcher_ip: 127.0.0.1\n")
    out = workdir / "output"
    out.mkdir(exist_ok=True)
    job_id = new_job_id()
    log = workdir / "job-log.yaml"
    argv = [LAVA_RUN, "--device", str(workdir / "device.yaml"), "--dispatcher", str(workdir / "dispatcher.yaml"),
            "--job-id", job_id, "--output-dir", str(out), str(workdir / "job.yaml")]
    t0 = time.monotonic()
    with open(log, "wb") as err, open(workdir / "lava-run.stdout", "wb") as stdout:
        with proc.managed(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err) as p:
            try:
                status: int | None = p.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                status, timed_out = None, True  # managed() ends the group on leaving
    shutil.rmtree(DISPATCHER_TMP / job_id, ignore_errors=True)
    return RunResult(job_id, status, log, time.monotonic() - t0, timed_out)
