"""The blob-store protocols: :class:`BlobStore`, its writer and reader, and the optional
capabilities (:class:`BlobLister`, :class:`BlobPresigner`, :class:`BlobLocalPath`)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from ocimirror.core.digest import Digest, Hasher

__all__ = [
    "BlobLister",
    "BlobLocalPath",
    "BlobPresigner",
    "BlobReader",
    "BlobStore",
    "BlobWriter",
]


@runtime_checkable
class BlobWriter(Protocol):
    """A blob being written: bytes go in, and only :meth:`commit` makes it visible by digest.

    An async context manager: leaving the block without a commit (or with an exception) aborts.
    """

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    @property
    def hasher(self) -> Hasher:
        """The running hash of the bytes written so far (read it, don't feed it)."""
        ...

    async def write(self, data: bytes) -> None:
        """Append bytes; raise :class:`SizeMismatch` (after aborting) past the announced size."""
        ...

    async def commit(self) -> Digest:
        """Verify size and digest, publish atomically, and return the digest.

        Raise :class:`SizeMismatch` or :class:`DigestMismatch` after discarding the bytes. A
        digest already stored is kept as it is and the new copy discarded.
        """
        ...

    async def abort(self) -> None:
        """Discard everything written; idempotent, and a no-op after a commit."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class BlobReader(Protocol):
    """An open byte range of a stored blob, streamed in chunks; close it with :meth:`aclose`."""

    @property
    def size(self) -> int:
        """The size of the whole blob."""
        ...

    @property
    def offset(self) -> int:
        """Where the range starts."""
        ...

    @property
    def length(self) -> int:
        """How many bytes the range holds (what iterating yields in total)."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None:
        """Release the underlying file; idempotent."""
        ...


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed storage of blobs, each stored once under its digest."""

    #: Where the blobs live (never includes credentials).
    url: str

    async def stat(self, digest: Digest) -> int | None:
        """The blob's size, or ``None`` when it is absent."""
        ...

    async def exists(self, digest: Digest) -> bool:
        """Whether the blob is stored."""
        ...

    async def reader(
        self,
        digest: Digest,
        *,
        offset: int = 0,
        length: int | None = None,
        chunk_size: int = 1 << 20,
    ) -> BlobReader:
        """Open a byte range for streaming; raise :class:`BlobNotFound` right away if absent."""
        ...

    def open(
        self,
        digest: Digest,
        *,
        offset: int = 0,
        length: int | None = None,
        chunk_size: int = 1 << 20,
    ) -> AsyncIterator[bytes]:
        """Stream a byte range; raises :class:`BlobNotFound` on the first iteration if absent."""
        ...

    async def read(self, digest: Digest, *, max_size: int | None = None) -> bytes:
        """The whole (small) blob; raise :class:`BlobNotFound`, or :class:`IntegrityError`
        when it is larger than ``max_size``."""
        ...

    def writer(
        self, *, expected: Digest | None = None, size: int | None = None, algorithm: str = "sha256"
    ) -> BlobWriter:
        """A writer for one new blob; does no I/O until the first write or the commit."""
        ...

    async def put(
        self,
        data: bytes | AsyncIterable[bytes] | Iterable[bytes],
        *,
        expected: Digest | None = None,
        size: int | None = None,
    ) -> Digest:
        """Store bytes or a stream of chunks, verified; return the digest."""
        ...

    async def delete(self, digest: Digest) -> bool:
        """Remove the blob; ``True`` if something was removed."""
        ...

    async def close(self) -> None:
        """Abort unfinished writers and release resources."""
        ...


@runtime_checkable
class BlobLister(Protocol):
    """A store that can enumerate its content, for garbage collection."""

    def list_blobs(self) -> AsyncIterator[tuple[Digest, datetime | None]]:
        """Every stored digest with its modification time (``None`` if unknown)."""
        ...

    async def cleanup_uploads(self, *, older_than: timedelta) -> int:
        """Remove uploads abandoned for longer than ``older_than``; return how many."""
        ...


@runtime_checkable
class BlobPresigner(Protocol):
    """A store that can hand out time-limited URLs to its blobs."""

    async def presigned_url(
        self, digest: Digest, *, expires: timedelta = timedelta(minutes=10)
    ) -> str | None:
        """A URL serving the blob's bytes until ``expires`` from now, or ``None`` if the store
        cannot sign. Does not check that the blob exists."""
        ...


@runtime_checkable
class BlobLocalPath(Protocol):
    """A store whose blobs are files on a local disk."""

    def local_path(self, digest: Digest) -> str | None:
        """The blob's file path (which may not exist), or ``None`` if not on local disk."""
        ...

    async def adopt(self, path: str, digest: Digest, size: int) -> bool:
        """Store the local file ``path``, whose bytes the caller verified against ``digest``
        and ``size``, by linking it into place (no copy, no second hash; the file must stay
        unchanged). False when the store cannot (not on this filesystem): then ``put`` it."""
        ...
