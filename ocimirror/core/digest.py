"""Content digests (``sha256:<64 hex>``, ``sha512:<128 hex>``), as the OCI image-spec defines."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, ClassVar

import attrs

from ocimirror.errors import InvalidDigest

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["ALGORITHMS", "Digest", "Hasher"]

#: Supported algorithms and the length of their hex encoding.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}

_HEX = re.compile(r"[0-9a-f]+")


def _check_algorithm(instance: Digest, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ALGORITHMS:
        raise InvalidDigest(
            f"unsupported digest algorithm {value!r}: use one of {', '.join(ALGORITHMS)}"
        )


def _check_hex(instance: Digest, attribute: attrs.Attribute[str], value: str) -> None:
    want = ALGORITHMS[instance.algorithm]
    if len(value) != want or not _HEX.fullmatch(value):
        raise InvalidDigest(
            f"{instance.algorithm} digest must be {want} lowercase hex characters, "
            f"got {value[:140]!r}"
        )


@attrs.frozen(order=True)
class Digest:
    """A validated content digest; ``str(d)`` gives back ``algorithm:hex``.

    Build one with :meth:`parse` from a string or :meth:`of` from bytes.
    """

    algorithm: str = attrs.field(validator=_check_algorithm)
    hex: str = attrs.field(validator=_check_hex)

    separator: ClassVar[str] = ":"

    @classmethod
    def parse(cls, value: str | Digest) -> Digest:
        """Parse ``algorithm:hex``; raise :class:`InvalidDigest` saying what is wrong."""
        if isinstance(value, Digest):
            return value
        if not isinstance(value, str):
            raise InvalidDigest(f"a digest must be a string, got {type(value).__name__}")
        algorithm, sep, hexpart = value.partition(":")
        if not sep:
            raise InvalidDigest(f"digest {value[:140]!r} has no ':' (expected 'sha256:<hex>')")
        return cls(algorithm, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``data``."""
        h = Hasher(algorithm)
        h.update(data)
        return h.digest()

    @property
    def encoded(self) -> str:
        """The hex part, as the OCI image-spec calls it."""
        return self.hex

    @property
    def short(self) -> str:
        """The first 12 hex characters, for display."""
        return self.hex[:12]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


class Hasher:
    """Incremental hashing that ends in a :class:`Digest`, and counts bytes on the way."""

    __slots__ = ("_h", "algorithm", "size")

    def __init__(self, algorithm: str = "sha256") -> None:
        if algorithm not in ALGORITHMS:
            raise InvalidDigest(f"unsupported digest algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._h: _Hash = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed more bytes."""
        self._h.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        """The digest of everything fed so far."""
        return Digest(self.algorithm, self._h.hexdigest())

    def copy(self) -> Hasher:
        """An independent copy of the current state (used to resume interrupted downloads)."""
        other = Hasher.__new__(Hasher)
        other.algorithm = self.algorithm
        other._h = self._h.copy()
        other.size = self.size
        return other
