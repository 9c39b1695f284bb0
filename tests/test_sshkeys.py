"""Key formats: dropbear's host key file, OpenSSH lines, paramiko objects."""
from __future__ import annotations

import base64
import struct
from pathlib import Path

import paramiko
import pytest

from orchestrator.vm.sshkeys import Ed25519Key, GuestKeys, parse_dropbear_ed25519


def test_dropbear_host_key_layout() -> None:
    key = Ed25519Key.generate()
    blob = key.dropbear_private()
    # string "ssh-ed25519" | uint32 64 | seed | public  (dropbear ed25519.c)
    assert blob[:4] == struct.pack(">I", 11) and blob[4:15] == b"ssh-ed25519"
    assert blob[15:19] == struct.pack(">I", 64)
    assert blob[19:51] == key.seed and blob[51:83] == key.public
    assert len(blob) == 83
    assert parse_dropbear_ed25519(blob) == key


def test_dropbear_parse_rejects_mismatched_halves() -> None:
    a, b = Ed25519Key.generate(), Ed25519Key.generate()
    forged = a.dropbear_private()[:51] + b.public
    with pytest.raises(ValueError, match="does not match"):
        parse_dropbear_ed25519(forged)


def test_private_key_signs_what_public_line_verifies() -> None:
    key = Ed25519Key.generate()
    kind, b64, _comment = key.openssh_public().split()
    public = paramiko.Ed25519Key(data=base64.b64decode(b64))
    assert kind == "ssh-ed25519" and public == key.paramiko_public()
    msg = key.paramiko_private().sign_ssh_data(b"data")
    msg.rewind()
    assert public.verify_ssh_sig(b"data", msg)
    other = Ed25519Key.generate().paramiko_public()
    msg.rewind()
    assert not other.verify_ssh_sig(b"data", msg)


def test_save_load_and_repr(tmp_path: Path) -> None:
    key = Ed25519Key.generate()
    path = tmp_path / "id_ed25519"
    key.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Ed25519Key.load(path) == key
    assert key.seed.hex() not in repr(key)
    pair = GuestKeys.generate()
    assert pair.client != pair.host
