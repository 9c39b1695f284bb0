"""Ed25519 keys for the guest's SSH server and the orchestrator's client.

Both halves are generated on the host, so the client knows the guest's host
key before the guest boots and pins it (no trust-on-first-use).  The host key
is baked into the image in dropbear's own key-file format, which for Ed25519
is simply:  string "ssh-ed25519" | uint32 64 | 32-byte seed | 32-byte public
key  (dropbear 2022.83, ed25519.c buf_put_ed25519_priv_key; strings are
uint32-length-prefixed as everywhere in SSH).  Writing it ourselves avoids
running dropbearconvert, which Debian only ships as an arm64 binary here.
"""
from __future__ import annotations

import base64
import io
import struct
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_TYPE = "ssh-ed25519"


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


@dataclass(frozen=True)
class Ed25519Key:
    """A private key as its 32-byte seed plus the derived 32-byte public key."""

    seed: bytes
    public: bytes

    @classmethod
    def generate(cls) -> Ed25519Key:
        return cls.from_seed(
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        )

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Key:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(seed, public)

    def __repr__(self) -> str:  # never print the seed
        return f"Ed25519Key(public={self.public.hex()[:16]}...)"

    # -- public forms -------------------------------------------------------
    def public_blob(self) -> bytes:
        """The SSH wire encoding of the public key (what a server presents)."""
        return _ssh_string(KEY_TYPE.encode()) + _ssh_string(self.public)

    def openssh_public(self, comment: str = "orchestrator") -> str:
        """One authorized_keys / known_hosts style line."""
        return f"{KEY_TYPE} {base64.b64encode(self.public_blob()).decode()} {comment}"

    def paramiko_public(self) -> paramiko.PKey:
        return paramiko.Ed25519Key(data=self.public_blob())

    # -- private forms ------------------------------------------------------
    def dropbear_private(self) -> bytes:
        """dropbear's host key file content (see module docstring)."""
        return _ssh_string(KEY_TYPE.encode()) + struct.pack(">I", 64) + self.seed + self.public

    def openssh_private(self) -> str:
        return Ed25519PrivateKey.from_private_bytes(self.seed).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()

    def paramiko_private(self) -> paramiko.PKey:
        return paramiko.Ed25519Key(file_obj=io.StringIO(self.openssh_private()))

    def save(self, path: Path) -> None:
        """OpenSSH private key file, mode 0600 (usable with `ssh -i`)."""
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(self.openssh_private())

    @classmethod
    def load(cls, path: Path) -> Ed25519Key:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls.from_seed(key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        ))


def parse_dropbear_ed25519(data: bytes) -> Ed25519Key:
    """Inverse of dropbear_private (for tests and for keys made by dropbearkey)."""
    (n,) = struct.unpack_from(">I", data, 0)
    if data[4:4 + n] != KEY_TYPE.encode():
        raise ValueError("not a dropbear ssh-ed25519 key")
    (size,) = struct.unpack_from(">I", data, 4 + n)
    if size != 64 or len(data) < 8 + n + 64:
        raise ValueError("bad dropbear ssh-ed25519 key length")
    body = data[8 + n: 8 + n + 64]
    key = Ed25519Key.from_seed(body[:32])
    if key.public != body[32:]:
        raise ValueError("dropbear key: public half does not match the seed")
    return key


@dataclass(frozen=True)
class GuestKeys:
    """The pair a guest image is built with: who may log in, and who the guest is."""

    client: Ed25519Key
    host: Ed25519Key

    @classmethod
    def generate(cls) -> GuestKeys:
        return cls(Ed25519Key.generate(), Ed25519Key.generate())
