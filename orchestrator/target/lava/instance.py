"""A complete LAVA instance on 127.0.0.1, for tests and for trying the
server target without a lab: PostgreSQL, the lava-server web (gunicorn),
lava-scheduler, lava-publisher (events, so a job finishes in seconds instead
of waiting for 20 s polls), one lava-worker and one QEMU device.

No systemd and nothing written under /etc: the instance has its own database
(created, migrated, dropped again) and its own device and dispatcher
directories under a work directory; lava-server reads these settings from
LAVA_JSON_SETTINGS.  Every service is started here and stopped here by its
PID (its process group) on every path, and PostgreSQL is stopped again if
it was started here.  Steps and timings: shared/docs/lava/README.md and
docs/lava.md.  Root only (lava-run, the worker's dispatcher, needs it).

    python -m orchestrator.target.lava.instance   # up until Ctrl-C; prints URL and token
"""
from __future__ import annotations

import base64
import json
import os
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

import yaml

from orchestrator import proc
from orchestrator.errors import UserError
from orchestrator.target.lava.device import server_device_template
from orchestrator.vm.machine import MachineShape

DB_SETTINGS = Path("/etc/lava-server/settings.d/00-database.yaml")
POSTINST = Path("/usr/share/lava-server/postinst.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # lava-server's interpreter (Debian's python3-django etc.)
ADMIN = "admin"
WORKER = "w1"
DEVICE = "qemu-01"
DEVICE_TYPE = "qemu"
START_TIMEOUT_S = 60
LOCAL_PORT = 8000  # `python -m orchestrator.target.lava.instance` (targets/lava-server-local.yaml)
TOOLS = {"lava-server": "lava-server", "gunicorn3": "gunicorn", "lava-worker": "lava-dispatcher",
         "lava-run": "lava-dispatcher", "pg_ctlcluster": "postgresql-common", "psql": "postgresql"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    version: str
    name: str
    port: int
    online: bool


def pg_cluster() -> Cluster:
    """The first PostgreSQL cluster (Debian's pg_lsclusters)."""
    res = proc.run(["pg_lsclusters", "--no-header"], timeout=30)
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            return Cluster(parts[0], parts[1], int(parts[2]), parts[3].startswith("online"))
    raise UserError("no PostgreSQL cluster (pg_lsclusters lists none)",
                    hint="apt-get install postgresql (it creates the 'main' cluster)")


def check_tools() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise UserError(f"a local LAVA instance needs {', '.join(missing)}",
                        hint="run ./scripts/bootstrap (or: apt-get install -y --no-install-recommends "
                             "lava-server lava-dispatcher lavacli postgresql)")
    if os.geteuid() != 0:
        raise UserError("a local LAVA instance runs lava-run, which must run as root",
                        hint="run as root (e.g. in the CI container)")


@dataclass
class LocalLab:
    """A running instance: what a client needs to talk to it."""
    url: str  # http://127.0.0.1:PORT
    token: str  # the admin user's API token (a secret: never written into results)
    user: str
    device: str
    workdir: Path
    env: dict[str, str]  # the settings every lava-server command of this instance needs
    pids: dict[str, int] = field(default_factory=dict)  # service -> PID of its process group
    db: str = ""
    started_postgres: Cluster | None = None
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
        """`lava-server manage devices update --health ...` (e.g. MAINTENANCE, RETIRED, UNKNOWN)."""
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
        while it waits on its socket, measured; then the group is ended)."""
        p = self._procs.pop(name, None)
        self.pids.pop(name, None)
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGINT)
                p.wait(timeout=3)
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
        """Every service, then the database, then PostgreSQL if it was started here."""
        for name in list(self._procs)[::-1]:
            self.stop_service(name)
        if self.db:
            proc.run(["runuser", "-u", "postgres", "--", "dropdb", "--if-exists", "--force", self.db], timeout=60)
            self.db = ""
        if self.started_postgres is not None:
            c = self.started_postgres
            proc.run(["pg_ctlcluster", c.version, c.name, "stop"], timeout=60)
            self.started_postgres = None

    def __enter__(self) -> LocalLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _db_credentials() -> dict:
    """The lavaserver role made by lava-server's postinst (it runs the postinst
    again when PostgreSQL was down at install time, which skips the database)."""
    if not DB_SETTINGS.is_file():
        res = proc.run([SYSTEM_PYTHON, str(POSTINST)], timeout=300)
        if res.returncode != 0 or not DB_SETTINGS.is_file():
            raise UserError(f"{POSTINST} could not create lava-server's database role: "
                            f"{(res.stderr.strip().splitlines() or ['no output'])[-1]}",
                            hint="check that PostgreSQL runs (pg_lsclusters), then dpkg-reconfigure lava-server")
    data = yaml.safe_load(DB_SETTINGS.read_text())
    return data["DATABASES"]["default"]


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


def start_local_lab(workdir: Path, shape: MachineShape, *, events: bool = True, port: int | None = None) -> LocalLab:
    """Bring the instance up; on any failure everything started so far is stopped."""
    check_tools()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)  # gunicorn runs as lavaserver and reads the device directory
    cluster = pg_cluster()
    started = None
    if not cluster.online:
        res = proc.run(["pg_ctlcluster", cluster.version, cluster.name, "start"], timeout=120)
        if res.returncode != 0:
            raise UserError(f"pg_ctlcluster {cluster.version} {cluster.name} start failed: {res.stderr.strip()}")
        started = cluster
    lab = LocalLab("", "", ADMIN, DEVICE, workdir, {}, started_postgres=started)
    try:
        _setup(lab, cluster, shape, events, port)
    except BaseException:
        lab.close()
        raise
    return lab


def _setup(lab: LocalLab, cluster: Cluster, shape: MachineShape, events: bool, port: int | None) -> None:
    creds = _db_credentials()
    lab.db = f"orch_lava_{os.getpid()}_{secrets.token_hex(3)}"
    res = proc.run(["runuser", "-u", "postgres", "--", "createdb", "-O", creds["USER"], lab.db], timeout=60)
    if res.returncode != 0:
        lab.db = ""
        raise UserError(f"createdb failed: {res.stderr.strip()}")
    devices = lab.workdir / "devices"
    dispatchers = lab.workdir / "dispatcher.d"
    (dispatchers / WORKER).mkdir(parents=True, exist_ok=True)
    devices.mkdir(exist_ok=True)
    (devices / f"{DEVICE}.jinja2").write_text(server_device_template(shape))
    # No default route is needed with the dispatcher's address set (README section 1).
    (dispatchers / WORKER / "dispatcher.yaml").write_text("dispatcher_ip: 127.0.0.1\n")
    for d in (devices, dispatchers, dispatchers / WORKER):
        os.chmod(d, 0o755)
    port = port or _free_port()
    event_port = _free_port()
    settings = {
        "DATABASES": {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": lab.db,
                                  "USER": creds["USER"], "PASSWORD": creds["PASSWORD"],
                                  "HOST": "127.0.0.1", "PORT": cluster.port}},
        "DEVICES_PATH": str(devices),
        "DISPATCHER_CONFIG_PATH": str(dispatchers),
        "ALLOWED_HOSTS": ["127.0.0.1", "localhost"],
        "EVENT_NOTIFICATION": events,
        "EVENT_SOCKET": f"tcp://127.0.0.1:{event_port}",
        "INTERNAL_EVENT_SOCKET": f"ipc://{lab.workdir}/internal.ipc",
    }
    lab.env = {**os.environ, "LAVA_JSON_SETTINGS": base64.b64encode(json.dumps(settings).encode()).decode()}
    lab.url = f"http://127.0.0.1:{port}"
    lab.manage("migrate", "--noinput", timeout=300)
    password = secrets.token_urlsafe(12)
    lab.manage("users", "add", ADMIN, "--superuser", "--staff", "--passwd", password)
    lab.token = lab.manage("tokens", "add", "--user", ADMIN).strip().splitlines()[-1].strip()
    lab.manage("workers", "add", WORKER)
    worker_token = _worker_token(lab.manage("workers", "details", WORKER))
    lab.manage("device-types", "add", DEVICE_TYPE)
    lab.manage("devices", "add", "--device-type", DEVICE_TYPE, "--worker", WORKER, DEVICE)

    lab.spawn("web", ["gunicorn3", "lava_server.wsgi", "-u", "lavaserver", "-g", "lavaserver",
                      "--worker-class", "eventlet", "--workers", "2", "--bind", f"127.0.0.1:{port}"])
    event_url = settings["EVENT_SOCKET"]
    if events:
        lab.spawn("publisher", ["lava-server", "manage", "lava-publisher", "--host", "127.0.0.1",
                                "--port", str(_free_port())])
        lab.spawn("scheduler", ["lava-server", "manage", "lava-scheduler", "--event-url", event_url])
    else:
        lab.spawn("scheduler", ["lava-server", "manage", "lava-scheduler"])
    deadline = time.monotonic() + START_TIMEOUT_S
    _wait_http(f"{lab.url}/api/v0.2/", deadline, lambda: lab.alive("web"))
    start_worker(lab, worker_token)
    _wait_device_idle(lab, deadline)


def start_worker(lab: LocalLab, token: str | None = None) -> None:
    """(Re)start the worker.  Its token goes to a 0600 file in the work
    directory (removed with it), not onto a command line other users can read."""
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


def _wait_device_idle(lab: LocalLab, deadline: float) -> None:
    """The worker is online and the device has a known state (jobs can be scheduled)."""
    req = urllib.request.Request(f"{lab.url}/api/v0.2/workers/{WORKER}/",
                                 headers={"Authorization": f"Token {lab.token}"})
    last = ""
    while time.monotonic() < deadline:
        if not lab.alive("worker"):
            raise UserError(f"lava-worker exited: see {lab.workdir / 'worker.log'}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                data = json.load(r)
            last = f"{data.get('state')}/{data.get('health')}"
            if data.get("state") == "Online":
                return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise UserError(f"the LAVA worker did not come online within {START_TIMEOUT_S} s (last: {last})",
                    hint=f"see {lab.workdir / 'worker.log'}")


def main() -> int:
    import tempfile
    from orchestrator.vm.machine import shape_by_name
    workdir = Path(tempfile.mkdtemp(prefix="orch-lava-"))
    # targets/lava-server-local.yaml points at this port
    with start_local_lab(workdir, shape_by_name("default"), port=LOCAL_PORT) as lab:
        print(f"LAVA on {lab.url}  user {lab.user}  device {lab.device}  work dir {workdir}")
        print("token in ORCH_LAVA_TOKEN of this shell only: export ORCH_LAVA_TOKEN=" + lab.token)
        print("Ctrl-C stops every service")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
