"""What every blob store here does the same way: :class:`BlobStoreBase`.

It lays the blobs out under a root (``blobs/<algorithm>/<2 hex>/<hex>``, uploads in progress
under ``uploads/``), builds :meth:`~BlobStoreBase.put`, :meth:`~BlobStoreBase.open` and
:meth:`~BlobStoreBase.exists` on a store's own writer and reader, checks ranges, ``max_size``
and the digest of what :meth:`~BlobStoreBase.read` returns, and aborts unfinished writers on
close. A store brings the I/O: :class:`~.fsspec_store.FsspecBlobStore` in worker threads,
:class:`~.s3_store.S3BlobStore` on the event loop.
"""

from __future__ import annotations

import logging
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import fsspec
import fsspec.core

from ocimirror.backends.blobs.streams import (
    BufferedBlobWriter,
    Close,
    Fetch,
    FsspecBlobReader,
    hash_into,
)
from ocimirror.core.digest import ALGORITHMS, Digest, Hasher
from ocimirror.errors import BlobNotFound, DigestMismatch, IntegrityError, InvalidError

__all__ = ["BlobStoreBase"]

_log = logging.getLogger("ocimirror.blobs")

_HEX_PREFIX = frozenset(f"{i:02x}" for i in range(256))


def as_datetime(value: Any) -> datetime | None:
    """A timestamp as a backend gives it (datetime, epoch seconds, ISO text) in UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        try:
            return as_datetime(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def digest_at(algorithm: str, prefix: str, name: str) -> Digest | None:
    """The digest of the blob file ``blobs/<algorithm>/<prefix>/<name>``, or ``None`` when the
    file is not one (a stray file, a name that is no digest, a digest in the wrong place)."""
    if algorithm not in ALGORITHMS or prefix not in _HEX_PREFIX or not name.startswith(prefix):
        return None
    try:
        return Digest(algorithm, name)
    except ValueError:
        _log.debug("skipping blobs/%s/%s/%s: not a digest", algorithm, prefix, name)
        return None


def not_found(digest: Digest) -> BlobNotFound:
    """The error for a blob that is not stored."""
    return BlobNotFound(f"blob {digest} not found", detail=str(digest))


def check_size(digest: Digest, size: int, max_size: int | None) -> None:
    """Raise :class:`IntegrityError` when a blob of ``size`` bytes is over ``max_size``."""
    if max_size is not None and size > max_size:
        raise IntegrityError(
            f"blob {digest} is {size} bytes, over the limit of {max_size}",
            detail={"size": size, "max_size": max_size},
        )


def expiry_seconds(expires: timedelta) -> int:
    """A presigned URL's lifetime in whole seconds (at least one)."""
    return max(1, int(expires.total_seconds()))


class BlobStoreBase(ABC):
    """The layout, the writers' lifecycle and the checks shared by the stores of this package.

    A store implements :meth:`stat`, :meth:`delete`, :meth:`_source`, :meth:`_read_all`,
    :meth:`_new_writer` and :meth:`_release`.
    """

    #: Where the blobs live (never includes credentials).
    url: str

    def __init__(self, url: str, storage_options: dict[str, Any]) -> None:
        self.url = url
        self._storage_options = storage_options
        protocol, _ = fsspec.core.split_protocol(url)
        self._fs_class: Any = fsspec.get_filesystem_class(protocol or "file")
        self._root = str(self._fs_class._strip_protocol(url)).rstrip("/")
        self._fs_obj: Any = None
        self._fs_lock = threading.Lock()
        self._writers: weakref.WeakSet[BufferedBlobWriter[Any]] = weakref.WeakSet()
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url!r}>"

    @property
    def fs(self) -> Any:
        """A blocking fsspec filesystem over the store's root, created on first use (fsspec's
        shared instance for these options); call it from a thread."""
        if self._fs_obj is None:
            with self._fs_lock:
                if self._fs_obj is None:
                    self._fs_obj = fsspec.core.url_to_fs(self.url, **self._storage_options)[0]
        return self._fs_obj

    # -- paths

    def _blob_path(self, digest: Digest) -> str:
        return f"{self._root}/blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"

    @property
    def _uploads(self) -> str:
        return f"{self._root}/uploads"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    # -- what a store brings

    @abstractmethod
    async def stat(self, digest: Digest) -> int | None:
        """The blob's size, or ``None`` when it is absent."""

    @abstractmethod
    async def delete(self, digest: Digest) -> bool:
        """Remove the blob; ``True`` if something was removed."""

    @abstractmethod
    async def _source(self, digest: Digest) -> tuple[int, Fetch, Close | None]:
        """The blob's size, a fetch of its ranges and what closes them; raise
        :class:`BlobNotFound` when it is absent."""

    @abstractmethod
    async def _read_all(self, digest: Digest, max_size: int | None) -> bytes:
        """The blob's bytes (unverified); raise :class:`BlobNotFound`, or
        :class:`IntegrityError` (reading nothing) when it is over ``max_size``."""

    @abstractmethod
    def _new_writer(
        self, expected: Digest | None, size: int | None, algorithm: str
    ) -> BufferedBlobWriter[Any]:
        """A writer of this store; does no I/O."""

    @abstractmethod
    async def _release(self) -> None:
        """Release connections when the store closes (after its writers were aborted)."""

    # -- BlobStore

    async def exists(self, digest: Digest) -> bool:
        """Whether the blob is stored."""
        return await self.stat(digest) is not None

    async def reader(
        self,
        digest: Digest,
        *,
        offset: int = 0,
        length: int | None = None,
        chunk_size: int = 1 << 20,
    ) -> FsspecBlobReader:
        """Open ``length`` bytes (default: to the end) from ``offset`` for streaming.

        Raises :class:`BlobNotFound` right away when the blob is absent, so a server can answer
        404 before it starts a response. The range is clipped to the blob: an offset at or past
        the end yields nothing. Close the reader (``aclose`` or ``async with``) when not
        iterating to the end.
        """
        self._check_open()
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"offset and length must be >= 0, got {offset} and {length}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
        size, fetch, close = await self._source(digest)
        start = min(offset, size)
        end = size if length is None else min(size, start + length)
        return FsspecBlobReader(
            digest=digest,
            size=size,
            offset=start,
            length=end - start,
            chunk_size=chunk_size,
            fetch=fetch,
            close=close,
        )

    async def open(
        self,
        digest: Digest,
        *,
        offset: int = 0,
        length: int | None = None,
        chunk_size: int = 1 << 20,
    ) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes from ``offset``, clipped to the blob, in ``chunk_size`` chunks.

        An async generator: it raises :class:`BlobNotFound` on the first iteration when the
        blob is absent. Use :meth:`reader` to find out before iterating.
        """
        reader = await self.reader(digest, offset=offset, length=length, chunk_size=chunk_size)
        async with reader:
            async for chunk in reader:
                yield chunk

    async def read(
        self, digest: Digest, *, max_size: int | None = None, verify: bool = True
    ) -> bytes:
        """The whole blob, for small ones (manifests, configs).

        Raises :class:`BlobNotFound` when absent, :class:`IntegrityError` when larger than
        ``max_size`` (nothing is read then), and :class:`DigestMismatch` when ``verify`` is on
        and the stored bytes do not hash to ``digest`` (a corrupt store).
        """
        self._check_open()
        data = await self._read_all(digest, max_size)
        if verify:
            hasher = Hasher(digest.algorithm)
            await hash_into(hasher, data)
            if hasher.digest() != digest:
                _log.error("stored blob %s in %s is corrupt", digest, self.url)
                raise DigestMismatch(
                    f"stored blob {digest} is corrupt: its bytes hash to another digest",
                    detail=str(digest),
                )
        return data

    def writer(
        self, *, expected: Digest | None = None, size: int | None = None, algorithm: str = "sha256"
    ) -> BufferedBlobWriter[Any]:
        """A writer for one new blob; does no I/O until the first write or the commit.

        ``expected`` and ``size``, when given, are verified at the commit (and ``size`` as soon
        as more bytes arrive). The hash algorithm is ``expected``'s when given, else
        ``algorithm``.
        """
        self._check_open()
        w = self._new_writer(expected, size, algorithm)
        self._writers.add(w)
        return w

    async def put(
        self,
        data: bytes | bytearray | memoryview | AsyncIterable[bytes] | Iterable[bytes],
        *,
        expected: Digest | None = None,
        size: int | None = None,
    ) -> Digest:
        """Store bytes or a stream of chunks, verified as the stream ends; return the digest.

        A synchronous iterable is consumed on the event loop: pass in-memory chunks only, not a
        file. Raises :class:`SizeMismatch` or :class:`DigestMismatch` (nothing is stored then).
        """
        whole = isinstance(data, bytes | bytearray | memoryview)
        if not (whole or isinstance(data, AsyncIterable | Iterable)) or isinstance(data, str):
            raise InvalidError(
                f"a blob must be bytes or an iterable of bytes chunks, not {type(data).__name__}"
            )
        async with self.writer(expected=expected, size=size) as w:
            if isinstance(data, bytes | bytearray | memoryview):
                await w.write(data)
            elif isinstance(data, AsyncIterable):
                async for chunk in data:
                    await w.write(chunk)
            else:
                for chunk in data:
                    await w.write(chunk)
            return await w.commit()

    async def close(self) -> None:
        """Abort unfinished writers and release connections; further use raises
        ``RuntimeError``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for w in list(self._writers):
            await w.abort()
        await self._release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- BlobLocalPath

    def local_path(self, digest: Digest) -> str | None:
        """The blob's file path on local disk (which may not exist), or ``None`` elsewhere."""
        return None

    async def adopt(self, path: str, digest: Digest, size: int) -> bool:
        """Link a verified local file into place; this store cannot (see
        :class:`~ocimirror.backends.blobs.BlobLocalPath`)."""
        return False
