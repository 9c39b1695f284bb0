"""The lava-server target file and the local instance's checks, without a
server: url_env points the target at another instance, a bad value is a
clear error naming the variable, the token is stripped and never shown, and
an instance directory the lavaserver user cannot reach is refused before
anything starts (the cause of jobs that stayed Submitted: docs/lava.md)."""
from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import missing_prerequisite
from orchestrator.errors import UserError
from orchestrator.target import base
from orchestrator.target.lava.instance import SERVICE_USER, check_reachable

ROOT = Path(__file__).resolve().parents[1]
TARGET_FILE = ROOT / "targets" / "lava-server-local.yaml"


def test_url_env_replaces_the_files_url(monkeypatch) -> None:
    monkeypatch.delenv("ORCH_LAVA_URL", raising=False)
    assert base.load_target_file(TARGET_FILE).identity()["lab"] == "http://127.0.0.1:8000"
    monkeypatch.setenv("ORCH_LAVA_URL", "http://127.0.0.1:8010/")
    t = base.load_target_file(TARGET_FILE)
    assert t.identity()["lab"] == "http://127.0.0.1:8010"


def test_a_bad_url_env_names_the_variable_and_the_fix(monkeypatch) -> None:
    monkeypatch.setenv("ORCH_LAVA_URL", "127.0.0.1:8010")
    with pytest.raises(UserError) as exc:
        base.load_target_file(TARGET_FILE)
    text = str(exc.value)
    assert "ORCH_LAVA_URL" in text and "'127.0.0.1:8010'" in text and "http://127.0.0.1:PORT" in text


def test_the_token_is_stripped_and_never_shown(monkeypatch) -> None:
    monkeypatch.delenv("ORCH_LAVA_URL", raising=False)
    monkeypatch.setenv("ORCH_LAVA_TOKEN", "s3cret-token\n")
    server = base.load_target_file(TARGET_FILE).server()
    assert server._token == "s3cret-token" and "s3cret" not in repr(server)


def test_an_instance_directory_lavaserver_cannot_reach_is_refused() -> None:
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        missing_prerequisite(f"no {SERVICE_USER} user: apt-get install --no-install-recommends lava-server")
    if os.geteuid() != 0:
        missing_prerequisite("setpriv to another user needs root")
    closed = Path(tempfile.mkdtemp(prefix="orch-lava-unit-", dir="/var/tmp"))  # 0700, as mkdtemp makes it
    try:
        (closed / "lab").mkdir()
        with pytest.raises(UserError) as exc:
            check_reachable(closed / "lab")
        assert f"({closed} has mode 700)" in str(exc.value) and "/var/tmp" in str(exc.value)
        os.chmod(closed, 0o755)
        check_reachable(closed / "lab")
    finally:
        shutil.rmtree(closed)
