"""Where the client puts the bytes it downloads: a small protocol that the upstream package owns.

A blob download writes into a :class:`SinkWriter` that a :class:`BlobSink` opens for one
expected digest and size. The writer hashes what it is given; :meth:`SinkWriter.commit`
verifies digest and size and only then makes the bytes visible, :meth:`SinkWriter.abort`
throws them away. A resumed download keeps writing to the same writer, so ``size`` says where
to resume. Any blob store of :mod:`ocimirror.backends.blobs` is a sink; so is a test's list.
"""

from __future__ import annotations

from typing import Protocol

from ocimirror.core.digest import Digest

__all__ = ["BlobSink", "SinkWriter"]


class SinkWriter(Protocol):
    """One blob being received."""

    @property
    def size(self) -> int:
        """How many bytes were written so far."""
        ...

    async def write(self, data: bytes) -> None:
        """Append bytes (hashed as they come)."""
        ...

    async def commit(self) -> Digest:
        """Verify digest and size, then make the blob visible; the error says what differs."""
        ...

    async def abort(self) -> None:
        """Throw away what was written."""
        ...


class BlobSink(Protocol):
    """Something that takes verified blobs."""

    def writer(self, *, expected: Digest | None = None, size: int | None = None) -> SinkWriter:
        """A writer for one blob, checked against ``expected`` and ``size`` at commit."""
        ...
