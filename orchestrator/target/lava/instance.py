"""A complete LAVA instance on 127.0.0.1, for tests and for trying the
server target without a lab: its own PostgreSQL cluster, the lava-server web
(gunicorn), lava-scheduler, lava-publisher (events, so a job is picked up in
a second instead of at the scheduler's next 20 s poll), one lava-worker and
one QEMU device.

No systemd and nothing written under /etc: everything lives in one instance
directory (database cluster, device and dispatcher configuration, job
logs, the services' logs) and lava-server reads its settings from
LAVA_JSON_SETTINGS.  Two instances with different ports and directories do
not share anything: each has its own PostgreSQL cluster on its own port, its
own MEDIA_ROOT (job logs are stored by job id, and every instance counts from
1) and its own dispatcher `prefix` (the worker keeps a job's files in
/var/lib/lava/dispatcher/tmp/PREFIX+ID and removes that directory when the
job ends).  Every service is started here and stopped here by its PID (its
process group) on every path.  Root only (lava-run, the worker's dispatcher,
needs it).

lava-server's daemons drop privileges to the `lavaserver` user: the instance
directory must be reachable by it (a directory under a 0700 parent, such as
pytest's tmp_path, is not: the scheduler then cannot read the device
dictionary, marks the device Bad "Invalid device configuration" and never
schedules a job; start_local_lab checks this first).

    python -m orchestrator.target.lava.instance [--port 8000] [--dir DIR]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import UserError
from orchestrator.target.lava.device import server_device_template
from orchestrator.vm.machine import MachineShape

SERVICE_USER = "lavaserver"  # lava-server's daemons switch to it (Debian's package creates it)
PG_USER = "postgres"  # runs the instance's own PostgreSQL cluster (it refuses to run as root)
PG_ROOT = Path("/usr/lib/postgresql")
ADMIN = "admin"
WORKER = "w1"
DEVICE = "qemu-01"
DEVICE_TYPE = "qemu"
START_TIMEOUT_S = 90
LOCAL_PORT = 8000  # targets/lava-server-local.yaml's url (ORCH_LAVA_URL overrides it)
TOOLS = {"lava-server": "lava-server", "gunicorn3": "gunicorn", "lava-worker": "lava-dispatcher",
         "lava-run": "lava-dispatcher", "setpriv": "util-linux"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pg_bindir() -> Path:
    """The newest installed PostgreSQL's programs (initdb, postgres, createdb)."""
    found = sorted((d for d in PG_ROOT.glob("*/bin") if (d / "initdb").is_file() and (d / "postgres").is_file()),
                   key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    if not found:
        raise UserError(f"no PostgreSQL server programs under {PG_ROOT}/*/bin",
                        hint="apt-get install -y postgresql (./scripts/bootstrap does)")
    return found[-1]


def check_tools() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise UserError(f"a local LAVA instance needs {', '.join(missing)}",
                        hint="run ./scripts/bootstrap (or: apt-get install -y --no-install-recommends "
                             "lava-server lava-dispatcher lavacli postgresql)")
    if os.geteuid() != 0:
        raise UserError("a local LAVA instance runs lava-run, which must run as root",
                        hint="run as root (e.g. in the CI container)")
    pg_bindir()
    for user in (SERVICE_USER, PG_USER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise UserError(f"a local LAVA instance needs the system user {user!r}",
                            hint="apt-get install -y --no-install-recommends lava-server postgresql "
                                 "(their packages create it)") from None


def _as_user(user: str) -> list[str]:
    """argv prefix running a command as user (setpriv execs: the PID is the command's)."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]


def _chown(path: Path, user: str, mode: int) -> None:
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, mode)


@dataclass
class LocalLab:
    """A running instance: what a client needs to talk to it."""
    url: str  # http://127.0.0.1:PORT
    token: str = field(repr=False)  # the admin user's API token (a secret: never written or shown)
    user: str
    device: str
    workdir: Path
    # the settings every lava-server command of this instance needs (the database password)
    env: dict[str, str] = field(repr=False)
    pids: dict[str, int] = field(default_factory=dict)  # service -> PID of its process group
    port: int = 0
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    # -- lava-server commands ---------------------------------------------------------

    def manage(self, *args: str, timeout: float = 120) -> str:
        res = proc.run(["lava-server", "manage", *args], env=self.env, timeout=timeout)
        if res.returncode != 0:
            raise UserError(f"lava-server manage {' '.join(args[:3])} failed (exit {res.returncode}): "
                            f"{(res.stderr.strip().splitlines() or ['no output'])[-1]}",
                            hint=f"see {self.workdir} for the services' logs")
        return res.stdout

    def set_device_health(self, health: str) -> None:
        """`lava-server manage devices update --health ...` (e.g. MAINTENANCE, RETIRED, GOOD)."""
        self.manage("devices", "update", "--health", health, self.device)

    # -- services -----------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed by the child's exit
        try:
            p = proc.popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self._procs[name] = p
        self.pids[name] = p.pid

    def stop_service(self, name: str) -> None:
        """Stop one service by its PID (SIGINT first: lava-publisher ignores SIGTERM
        while it waits on its socket, measured; PostgreSQL's fast shutdown; then
        the group is ended)."""
        p = self._procs.pop(name, None)
        self.pids.pop(name, None)
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGINT)
                p.wait(timeout=5)
            except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
                pass
        proc.kill_group(p.pid, grace=3.0)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        proc.unregister(p)

    def alive(self, name: str) -> bool:
        p = self._procs.get(name)
        return p is not None and p.poll() is None

    def close(self) -> None:
        """Every service in the reverse order of starting (PostgreSQL last), then
        the database cluster's files (the logs stay in the instance directory)."""
        for name in list(self._procs)[::-1]:
            self.stop_service(name)
        shutil.rmtree(self.workdir / "pg", ignore_errors=True)

    def __enter__(self) -> LocalLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_http(url: str, deadline: float, alive) -> None:
    while time.monotonic() < deadline:
        if not alive():
            raise UserError(f"the lava-server web process exited before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise UserError(f"lava-server did not answer {url} within {START_TIMEOUT_S} s")


def check_reachable(workdir: Path) -> None:
    """The services run as lavaserver: it must reach the instance directory."""
    res = proc.run([*_as_user(SERVICE_USER), "test", "-x", str(workdir)], timeout=30)
    if res.returncode != 0:
        blocking = next((p for p in [*reversed(workdir.parents), workdir]
                         if p.exists() and not (p.stat().st_mode & 0o001)), workdir)
        raise UserError(f"the LAVA instance directory {workdir} is not reachable by the {SERVICE_USER} user "
                        f"({blocking} has mode {blocking.stat().st_mode & 0o777:o}): its scheduler could not read "
                        "the device dictionary and would never schedule a job",
                        hint="use a directory under /tmp or /var/tmp (e.g. tempfile.mkdtemp(dir='/var/tmp')), "
                             "not one under pytest's or mkdtemp's 0700 directories")


def start_local_lab(workdir: Path, shape: MachineShape, *, events: bool = True, port: int | None = None) -> LocalLab:
    """Bring the instance up in workdir on 127.0.0.1:port (a free port if None);
    on any failure everything started so far is stopped."""
    check_tools()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    check_reachable(workdir)
    if port is not None and _port_in_use(port):
        raise UserError(f"127.0.0.1:{port} is already in use (another LAVA instance?)",
                        hint="stop it, or start this one with another port (--port)")
    lab = LocalLab("", "", ADMIN, DEVICE, workdir, {}, port=port or _free_port())
    try:
        _setup(lab, shape, events)
    except BaseException:
        lab.close()
        raise
    return lab


def _start_postgres(lab: LocalLab) -> dict:
    """An own cluster in workdir/pg, listening on 127.0.0.1 only, with a
    superuser named lavaserver and a random password; fsync off: a
    throwaway test database."""
    bindir = pg_bindir()
    pgdata, pgrun = lab.workdir / "pg", lab.workdir / "pg-run"
    shutil.rmtree(pgdata, ignore_errors=True)
    for d in (pgdata, pgrun):
        d.mkdir(exist_ok=True)
        _chown(d, PG_USER, 0o700)
    password = secrets.token_urlsafe(16)
    pwfile = pgrun / "pw"
    pwfile.write_text(password + "\n")
    _chown(pwfile, PG_USER, 0o600)
    try:
        res = proc.run([*_as_user(PG_USER), str(bindir / "initdb"), "-D", str(pgdata), "-U", SERVICE_USER,
                        f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                       timeout=180)
    finally:
        pwfile.unlink(missing_ok=True)
    if res.returncode != 0:
        raise UserError(f"initdb of the instance's PostgreSQL cluster failed: "
                        f"{(res.stderr.strip().splitlines() or ['no output'])[-1]}")
    pg_port = _free_port()
    lab.spawn("postgres", [*_as_user(PG_USER), str(bindir / "postgres"), "-D", str(pgdata), "-p", str(pg_port),
                           "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={pgrun}",
                           "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
    env = {**os.environ, "PGPASSWORD": password}
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        res = proc.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", SERVICE_USER,
                        "lava"], env=env, timeout=60)
        if res.returncode == 0:
            break
        if not lab.alive("postgres") or time.monotonic() > deadline:
            raise UserError(f"the instance's PostgreSQL did not start: {res.stderr.strip()}",
                            hint=f"see {lab.workdir / 'postgres.log'}")
        time.sleep(0.5)
    return {"ENGINE": "django.db.backends.postgresql", "NAME": "lava", "USER": SERVICE_USER,
            "PASSWORD": password, "HOST": "127.0.0.1", "PORT": pg_port}


def _setup(lab: LocalLab, shape: MachineShape, events: bool) -> None:
    w = lab.workdir
    devices, dispatchers, checks = w / "devices", w / "dispatcher.d", w / "health-checks"
    (dispatchers / WORKER).mkdir(parents=True, exist_ok=True)
    for d in (devices, checks):
        d.mkdir(exist_ok=True)
    (devices / f"{DEVICE}.jinja2").write_text(server_device_template(shape))
    # No default route is needed with the dispatcher's address set (shared/docs/lava README
    # section 1); the prefix keeps this instance's job directories apart from another's.
    (dispatchers / WORKER / "dispatcher.yaml").write_text(
        f"dispatcher_ip: 127.0.0.1\nprefix: orch-{lab.port}-\n")
    for d in (devices, dispatchers, dispatchers / WORKER, checks):
        os.chmod(d, 0o755)
    # Written by the services (as lavaserver): the publisher's socket, job logs, Django's log.
    for d in (w / "run", w / "media"):
        d.mkdir(exist_ok=True)
        _chown(d, SERVICE_USER, 0o755)
    (w / "django.log").touch()
    _chown(w / "django.log", SERVICE_USER, 0o644)
    database = _start_postgres(lab)
    event_port = _free_port()
    settings = {
        "DATABASES": {"default": database},
        "DEVICES_PATH": str(devices),
        "DISPATCHER_CONFIG_PATH": str(dispatchers),
        "HEALTH_CHECKS_PATH": str(checks),
        "MEDIA_ROOT": str(w / "media"),
        "DJANGO_LOGFILE": str(w / "django.log"),
        "ALLOWED_HOSTS": ["127.0.0.1", "localhost"],
        "EVENT_NOTIFICATION": events,
        "EVENT_SOCKET": f"tcp://127.0.0.1:{event_port}",
        "INTERNAL_EVENT_SOCKET": f"ipc://{w / 'run' / 'internal.ipc'}",
    }
    lab.env = {**os.environ, "LAVA_JSON_SETTINGS": base64.b64encode(json.dumps(settings).encode()).decode()}
    lab.url = f"http://127.0.0.1:{lab.port}"
    lab.manage("migrate", "--noinput", timeout=300)
    lab.manage("users", "add", ADMIN, "--superuser", "--staff", "--passwd", secrets.token_urlsafe(12))
    lab.token = lab.manage("tokens", "add", "--user", ADMIN).strip().splitlines()[-1].strip()
    lab.manage("workers", "add", WORKER)
    worker_token = _worker_token(lab.manage("workers", "details", WORKER))
    lab.manage("device-types", "add", DEVICE_TYPE)
    lab.manage("devices", "add", "--device-type", DEVICE_TYPE, "--worker", WORKER, DEVICE)

    lab.spawn("web", ["gunicorn3", "lava_server.wsgi", "-u", SERVICE_USER, "-g", SERVICE_USER,
                      "--worker-class", "eventlet", "--workers", "2", "--bind", f"127.0.0.1:{lab.port}"])
    # Logs in the instance directory, not the system's /var/log/lava-server (shared).
    if events:
        lab.spawn("publisher", ["lava-server", "manage", "lava-publisher", "--host", "127.0.0.1",
                                "--port", str(_free_port()), "--log-file", str(w / "lava-publisher.log")])
    lab.spawn("scheduler", ["lava-server", "manage", "lava-scheduler", "--event-url", settings["EVENT_SOCKET"],
                            "--log-file", str(w / "lava-scheduler.log"), "--level", "DEBUG"])
    deadline = time.monotonic() + START_TIMEOUT_S
    _wait_http(f"{lab.url}/api/v0.2/", deadline, lambda: lab.alive("web"))
    start_worker(lab, worker_token)
    _wait_worker_online(lab, deadline)


def start_worker(lab: LocalLab, token: str | None = None) -> None:
    """(Re)start the worker.  Its token goes to a 0600 file in the work
    directory, not onto a command line other users can read."""
    token_file = lab.workdir / "worker-token"
    if token is not None:
        token_file.touch(mode=0o600)
        token_file.write_text(token)
    (lab.workdir / "worker").mkdir(exist_ok=True)
    lab.spawn("worker", ["lava-worker", "--name", WORKER, "--url", lab.url + "/", "--token-file", str(token_file),
                         "--worker-dir", str(lab.workdir / "worker"), "--ping-interval", "2",
                         "--job-log-interval", "2", "--log-file", str(lab.workdir / "worker-daemon.log")])


def _worker_token(details: str) -> str:
    m = re.search(r"^\s*token\s*:\s*(\S+)", details, re.M | re.I)
    if not m:
        raise UserError("`lava-server manage workers details` printed no token")
    return m.group(1)


def _api(lab: LocalLab, path: str) -> dict:
    req = urllib.request.Request(f"{lab.url}/api/v0.2/{path}", headers={"Authorization": f"Token {lab.token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def _wait_worker_online(lab: LocalLab, deadline: float) -> None:
    """The worker is online and the device usable (jobs can be scheduled)."""
    last = ""
    while time.monotonic() < deadline:
        if not lab.alive("worker"):
            raise UserError(f"lava-worker exited: see {lab.workdir / 'worker-daemon.log'}")
        try:
            worker = _api(lab, f"workers/{WORKER}/")
            device = _api(lab, f"devices/{DEVICE}/")
            last = f"worker {worker.get('state')}/{worker.get('health')}, device {device.get('health')}"
            if device.get("health") in ("Bad", "Retired"):
                raise UserError(f"the LAVA device {DEVICE} is {device.get('health')}",
                                hint=f"see {lab.workdir / 'lava-scheduler.log'}")
            if worker.get("state") == "Online":
                return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise UserError(f"the LAVA worker did not come online within {START_TIMEOUT_S} s (last: {last})",
                    hint=f"see {lab.workdir / 'worker-daemon.log'}")


def main(argv: list[str] | None = None) -> int:
    import tempfile
    from orchestrator.vm.machine import shape_by_name
    ap = argparse.ArgumentParser(prog="python -m orchestrator.target.lava.instance",
                                 description="a local LAVA instance on 127.0.0.1 until Ctrl-C")
    ap.add_argument("--port", type=int, default=LOCAL_PORT,
                    help=f"the web server's port (default {LOCAL_PORT}: targets/lava-server-local.yaml)")
    ap.add_argument("--dir", type=Path, default=None,
                    help="the instance directory (default: a new /var/tmp/orch-lava-*; logs stay there)")
    ap.add_argument("--shape", default="default", help="the machine shape of the device's defaults")
    args = ap.parse_args(argv)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="orch-lava-", dir="/var/tmp"))
    try:
        lab = start_local_lab(workdir, shape_by_name(args.shape), port=args.port)
    except UserError as exc:
        print(f"error: {exc}")
        return 2
    with lab:
        print(f"LAVA on {lab.url}  user {lab.user}  device {lab.device}  instance directory {workdir}")
        print("in the shell that runs the matrix (the token is for this shell only, never written anywhere):")
        print(f"  export ORCH_LAVA_URL={lab.url} ORCH_LAVA_TOKEN={lab.token}")
        print("Ctrl-C (or SIGTERM: orchestrator.proc's handlers) stops every service", flush=True)
        try:
            while all(lab.alive(n) for n in list(lab.pids)):
                time.sleep(2)
            print("a service exited: stopping the instance (see its log in the instance directory)")
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
