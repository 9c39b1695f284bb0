"""Boot the real kernel: console, SSH, SFTP, nested KVM, and no QEMU left behind.

Kernel: the pipeline's baseline build (cached), or $ORCH_TEST_KERNEL.  Each QEMU of a
test carries a unique token on its kernel command line (orch.test=...), so
"left behind" is checked by scanning /proc for exactly our processes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from orchestrator.vm import image as guest_image
from orchestrator.vm.console import BootFailure, CommandTimeout, GuestConsole, GuestCrashed
from orchestrator.vm.session import start_guest
from orchestrator.vm.machine import render_qemu_argv, shape_by_name
from orchestrator.vm.nested_kvm import PROBE_GUEST_PATH, build_kvm_probe, check_nested_kvm

pytestmark = pytest.mark.integration

KERNEL = Path(os.environ.get("ORCH_TEST_KERNEL", "/nonexistent"))


@pytest.fixture(scope="module", autouse=True)
def _kernel(request) -> None:
    global KERNEL
    if not KERNEL.is_file():
        KERNEL = request.getfixturevalue("baseline_build").kernel.image


def _token() -> str:
    return f"orch.test={uuid.uuid4().hex[:12]}"


def qemu_pids(token: str) -> list[int]:
    """PIDs of live qemu-system-aarch64 processes whose argv contains token."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-system-aarch64") and state != "Z" \
                and any(token.encode() in a for a in argv):
            pids.append(int(entry.name))
    return pids


def _wait_gone(token: str, seconds: float) -> list[int]:
    end = time.monotonic() + seconds
    while (left := qemu_pids(token)) and time.monotonic() < end:
        time.sleep(0.1)
    return left


def _console_argv(shape: str, extra: str) -> list[str]:
    image = guest_image.build_image(extra={PROBE_GUEST_PATH: build_kvm_probe()})
    return render_qemu_argv(shape_by_name(shape), KERNEL, image.path, extra, None)


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory):
    token = _token()
    workdir = tmp_path_factory.mktemp("guest")
    with start_guest(shape_by_name("default"), KERNEL, workdir=workdir,
                     cmdline_extra=f"orch.zram=256M {token}") as g:
        assert qemu_pids(token) == [g.console.pid]
        yield g
    assert _wait_gone(token, 10) == [], "QEMU survived start_guest's block"


def test_reaches_ready(guest) -> None:
    assert list(guest.boot.stages) == ["banner", "init", "ready"]
    assert guest.boot.guest_uptime is not None and guest.boot.guest_uptime > 0


def test_serial_exit_codes(guest) -> None:
    ok = guest.console.run("echo hello; uname -m")
    assert (ok.exit_status, ok.output) == (0, "hello\naarch64\n")
    failed = guest.console.run("echo before; exit 3")
    assert (failed.exit_status, failed.output) == (3, "before\n")


def test_serial_timeout_recovers(guest) -> None:
    with pytest.raises(CommandTimeout):
        guest.console.run("sleep 30", timeout=2)
    assert guest.console.run("echo still-here").output == "still-here\n"


def test_ssh_exit_code_and_streams(guest) -> None:
    result = guest.ssh.run("echo out; echo err >&2; exit 7")
    assert (result.status, result.stdout, result.stderr) == (7, "out\n", "err\n")
    chunks: list[tuple[str, str]] = []
    status = guest.ssh.stream("for i in 1 2 3; do echo $i; done", lambda s, t: chunks.append((s, t)))
    assert status == 0 and "".join(t for s, t in chunks if s == "stdout") == "1\n2\n3\n"


def test_sftp_fetch(guest, tmp_path: Path) -> None:
    local = guest.ssh.fetch("/proc/version", tmp_path / "version")
    assert local.read_text().startswith("Linux version ")
    assert local.read_text() == guest.ssh.run("cat /proc/version").stdout


def test_host_key_is_pinned(guest) -> None:
    import paramiko
    from orchestrator.vm.ssh import connect
    from orchestrator.vm.sshkeys import Ed25519Key
    with pytest.raises(paramiko.BadHostKeyException):
        connect(guest.ssh_port, guest.keys.client, Ed25519Key.generate())


def test_nested_kvm_default_shape(guest) -> None:
    check = check_nested_kvm(lambda cmd: (lambda r: (r.status, r.stdout + r.stderr))(
        guest.ssh.run(cmd)))
    assert check.ok, check.reason
    assert check.mode == "vhe"


def test_guest_environment(guest) -> None:
    listed = set(guest.console.run("busybox --list").output.split())
    assert set(guest_image.APPLETS) <= listed
    mounts = guest.console.run("cat /proc/mounts").output
    for fs in ("debugfs /sys/kernel/debug", "tracefs /sys/kernel/tracing",
               "cgroup2 /sys/fs/cgroup", "devtmpfs /dev"):
        assert fs in mounts
    assert "memory" in guest.console.run("cat /sys/fs/cgroup/cgroup.subtree_control").output
    assert "/dev/zram0" in guest.console.run("cat /proc/swaps").output


def test_nvhe_shape(tmp_path: Path) -> None:
    token = _token()
    with GuestConsole(_console_argv("nvhe", f"orch.printk=5 {token}"),
                      tmp_path / "console.log") as con:
        con.wait_ready()
        assert con.run("cat /proc/sys/kernel/printk").output.split()[0] == "5"
        check = check_nested_kvm(lambda c: (lambda r: (r.exit_status, r.output))(con.run(c)))
        assert check.ok and check.mode == "nvhe", check.reason
        assert con.poweroff(20) == 0
    assert qemu_pids(token) == []


def test_hang_is_detected(tmp_path: Path) -> None:
    token = _token()
    with pytest.raises(BootFailure) as err:
        with GuestConsole(_console_argv("default", f"orch.hang=1 {token}"),
                          tmp_path / "console.log") as con:
            con.wait_ready(silence=8, overall=120)
    assert (err.value.stage, err.value.reason) == ("init", "hang")
    assert _wait_gone(token, 10) == []


def test_panic_during_command(tmp_path: Path) -> None:
    token = _token()
    with GuestConsole(_console_argv("default", token), tmp_path / "console.log") as con:
        con.wait_ready()
        with pytest.raises(GuestCrashed) as err:
            con.run("echo c > /proc/sysrq-trigger", timeout=60)
    assert err.value.reason == "panic"
    assert "sysrq triggered crash" in "\n".join(err.value.last_lines)
    assert _wait_gone(token, 10) == []


CHILD = """
import sys, time
from pathlib import Path
from orchestrator.vm.console import GuestConsole
con = GuestConsole(sys.argv[2:], Path(sys.argv[1]))
con.start()
print("QEMU-PID", con.pid, flush=True)
con.wait_ready()
print("READY", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_qemu_dies_with_its_parent(tmp_path: Path, sig: signal.Signals) -> None:
    """Kill the orchestrating process mid-boot: QEMU must not survive it."""
    token = _token()
    argv = _console_argv("default", token)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "c.log"), *argv],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = child.stdout.readline()
        assert line.startswith("QEMU-PID"), line
        qemu_pid = int(line.split()[1])
        # Mid-boot: wait for the kernel banner in the log, not for ready.
        end = time.monotonic() + 60
        while b"Booting Linux" not in (tmp_path / "c.log").read_bytes():
            assert time.monotonic() < end, "no kernel banner"
            time.sleep(0.1)
        assert b"ORCH-READY" not in (tmp_path / "c.log").read_bytes()
        assert qemu_pids(token) == [qemu_pid]
        child.send_signal(sig)
        child.wait(timeout=30)
        assert _wait_gone(token, 10) == [], f"QEMU outlived its parent ({sig.name})"
    finally:
        if child.poll() is None:
            child.kill()
        for pid in qemu_pids(token):  # never leave one behind, even on failure
            os.kill(pid, signal.SIGKILL)


def test_start_guest_retries_a_taken_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The port picked was taken before QEMU could bind it: start_guest tries another."""
    import socket

    import orchestrator.vm.session as guest_mod
    from orchestrator.vm.ssh import free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1]])
        monkeypatch.setattr(guest_mod, "free_port", lambda: next(ports, None) or free_port())
        with start_guest(shape_by_name("default"), KERNEL, workdir=tmp_path) as g:
            assert g.ssh_port != taken.getsockname()[1]
            assert g.ssh.run("echo ok").stdout == "ok\n"
