"""The token signing key: an EC P-256 private key (ES256) in a PEM file, made on first start.

Several worker processes start at once and must all sign with one key, so the first start is
race-safe: each process that finds no key writes a new one to a private temporary file (mode
0600) and publishes it with ``os.link``, which fails if the name exists; every process then
reads the one that won. A key is never overwritten.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ocimirror.errors import InvalidError

__all__ = ["KEY_FILE", "generate_key", "key_id", "load_key", "load_or_create_key"]

log = logging.getLogger("ocimirror.server")

#: The key file's name in the home directory.
KEY_FILE = "token-key.pem"


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def load_key(pem: bytes, *, where: str = "the key") -> ec.EllipticCurvePrivateKey:
    """An EC P-256 private key from PEM bytes (unencrypted); InvalidError for anything else.

    ``where`` names the source in the error, which never quotes the key.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise InvalidError(f"{where} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidError(f"{where} is not an EC P-256 private key (tokens are signed ES256)")
    return key


def load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The key in ``path``; when there is none, a new one written there (mode 0600) first.

    Safe when several processes start at once: one key wins and all of them use it.
    """
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = generate_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
            log.info("created the token signing key %s", path)
        except FileExistsError:
            pass  # another process was first: use its key
    finally:
        temporary.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> ec.EllipticCurvePrivateKey:
    pem = path.read_bytes()
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("the token signing key %s is readable by others: chmod 600 it", path)
    return load_key(pem, where=f"token signing key {str(path)!r}")


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """The key's ID in libtrust's format (the JWT ``kid`` docker/distribution expects): the
    SHA-256 of the DER public key, truncated to 240 bits, base32 in twelve groups of four."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))
