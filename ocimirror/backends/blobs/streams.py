"""Writers and the reader: what every store's streams do the same way, and the fsspec writer.

:class:`BufferedBlobWriter` buffers, hashes, checks sizes, verifies at the commit and keeps the
writer's state; a store's writer only moves bytes (:class:`FsspecBlobWriter` through blocking
sinks in worker threads, :class:`~.s3_store.S3BlobWriter` on the event loop).
:class:`FsspecBlobReader` streams a byte range through whatever fetches a store gives it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from ocimirror.backends.blobs.sinks import Chunks, _Sink
from ocimirror.core.digest import Digest, Hasher
from ocimirror.errors import BlobNotFound, DigestMismatch, IntegrityError, SizeMismatch

__all__ = ["BufferedBlobWriter", "Chunks", "FsspecBlobReader", "FsspecBlobWriter"]

_log = logging.getLogger("ocimirror.blobs")

_T = TypeVar("_T")


class _Store(Protocol):
    """What every writer needs of its store."""

    url: str


_S = TypeVar("_S", bound=_Store)

#: Fetch ``n`` bytes of a blob from a position (a reader's source).
Fetch = Callable[[int, int], Coroutine[Any, Any, bytes]]
#: Release what a reader holds open.
Close = Callable[[], Coroutine[Any, Any, None]]

#: Buffers at least this large are hashed in a worker thread (hashlib releases the GIL there,
#: and the loop keeps serving); smaller ones cost less to hash than to hand over.
_THREAD_HASH_SIZE = 1 << 20

#: A writer keeps written ``bytes`` at least this large as they are; smaller pieces are gathered
#: into one buffer, so a stream of tiny writes cannot cost an object per byte or two.
_KEEP_AS_IS = 64 << 10


async def hash_into(hasher: Hasher, data: bytes | bytearray | memoryview) -> None:
    """Feed ``data`` to ``hasher``, in a worker thread when it is large."""
    if len(data) >= _THREAD_HASH_SIZE:
        await asyncio.to_thread(hasher.update, data)
    else:
        hasher.update(data)


def _feed(hasher: Hasher, chunks: Chunks) -> None:
    for chunk in chunks:
        hasher.update(chunk)


async def _hash_chunks(hasher: Hasher, chunks: Chunks) -> None:
    """Feed ``chunks`` to ``hasher``, in a worker thread when they add up to much."""
    if sum(map(len, chunks)) >= _THREAD_HASH_SIZE:
        await asyncio.to_thread(_feed, hasher, chunks)
    else:
        _feed(hasher, chunks)


async def _both(first: Coroutine[Any, Any, None], second: Coroutine[Any, Any, None]) -> None:
    """Run two operations at once and wait for both, even when one fails (a worker thread
    cannot be stopped, so neither may outlive this call); then raise the first error."""
    tasks = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
    await asyncio.wait(tasks)
    for task in tasks:
        task.result()


def in_thread(fetch: Callable[[int, int], bytes]) -> Fetch:
    """A blocking fetch, run in a worker thread."""

    async def fetch_in_thread(pos: int, n: int) -> bytes:
        return await asyncio.to_thread(fetch, pos, n)

    return fetch_in_thread


# --------------------------------------------------------------------------------------------
# One operation at a time


class _Offloader:
    """Runs one operation at a time as a task of its own, and survives cancellation.

    A cancelled ``await`` does not stop the operation (a worker thread cannot be stopped, and a
    multipart upload being created must not be forgotten); :meth:`settle` waits for it, so
    cleanup never races a write still in flight.
    """

    __slots__ = ("_inflight",)

    def __init__(self) -> None:
        self._inflight: asyncio.Future[Any] | None = None

    @property
    def busy(self) -> bool:
        return self._inflight is not None and not self._inflight.done()

    async def run(self, operation: Coroutine[Any, Any, _T]) -> _T:
        if self.busy:
            operation.close()
            raise RuntimeError("concurrent use: another operation is still running")
        task = asyncio.ensure_future(operation)
        self._inflight = task
        return await asyncio.shield(task)

    async def settle(self) -> None:
        fut = self._inflight
        if fut is None:
            return
        if not fut.done():
            await asyncio.wait([fut])
        if not fut.cancelled():
            fut.exception()  # mark retrieved: the caller already saw it, or was cancelled
        self._inflight = None


# --------------------------------------------------------------------------------------------
# Writers


class BufferedBlobWriter(ABC, Generic[_S]):
    """A :class:`BlobWriter` that buffers, hashes and verifies; a store's subclass moves bytes.

    Bytes are buffered until ``flush_size`` (as the chunks they came in: no copy into one growing
    buffer), then hashed and handed to :meth:`_flush` at the same time: the hash runs in a worker
    thread while the store moves the bytes. The commit hashes the rest, verifies size and
    digest, and only then calls :meth:`_publish` with the last bytes. Each of them runs as one
    operation that a cancellation does not interrupt (see :class:`_Offloader`). One task at a
    time may use a writer; get one from the store's ``writer()``.
    """

    def __init__(
        self,
        store: _S,
        *,
        expected: Digest | None,
        size: int | None,
        algorithm: str,
        flush_size: int,
    ) -> None:
        if size is not None and size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self._store = store
        self._expected = expected
        self._announced = size
        self._hasher = Hasher(expected.algorithm if expected is not None else algorithm)
        self._flush_size = flush_size
        self._chunks: Chunks = []
        self._tail: bytearray | None = None  # the last of _chunks, while small writes grow it
        self._buffered = 0  # bytes in _chunks
        self._hashed = 0  # how many of _chunks the hasher has seen
        self._size = 0
        self._state = "open"  # open -> committed | aborted | failed
        self._digest: Digest | None = None
        self._offload = _Offloader()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._state} size={self._size} store={self._store.url!r}>"

    # -- what a store's writer does

    @abstractmethod
    async def _flush(self, chunks: Chunks) -> None:
        """Send a full buffer's chunks on their way (they are being hashed meanwhile: read
        them, never change them); nothing becomes visible yet."""

    @abstractmethod
    async def _publish(self, digest: Digest, chunks: Chunks) -> bool:
        """Send the last bytes and make the verified blob visible at ``digest``; ``False`` if
        it was stored already and this copy was discarded."""

    @abstractmethod
    async def _discard(self) -> None:
        """Throw away whatever was sent; a no-op when nothing was."""

    # -- BlobWriter

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    @property
    def hasher(self) -> Hasher:
        """The running hash of the bytes written so far (read it, don't feed it)."""
        if self._offload.busy:
            raise RuntimeError("the hasher is not available while a write is in flight")
        _feed(self._hasher, self._chunks[self._hashed :])
        self._hashed = len(self._chunks)
        self._tail = None  # hashed: later writes start a new piece
        return self._hasher

    @property
    def digest(self) -> Digest | None:
        """The digest once committed, else ``None``."""
        return self._digest

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes; raise :class:`SizeMismatch` (after aborting) past the announced size."""
        if self._state != "open":
            raise RuntimeError(f"cannot write to a {self._state} blob writer")
        if isinstance(data, memoryview):
            data = data.cast("B")
        elif not isinstance(data, bytes | bytearray):
            raise TypeError(f"blob data must be bytes, got {type(data).__name__}")
        n = len(data)
        if not n:
            return
        if self._announced is not None and self._size + n > self._announced:
            await self.abort()
            raise SizeMismatch(
                f"blob is longer than the announced {self._announced} bytes",
                detail={"announced": self._announced, "received": self._size + n},
            )
        if n < _KEEP_AS_IS:
            if self._tail is None:
                self._tail = bytearray()
                self._chunks.append(self._tail)
            self._tail += data
        else:
            # bytes are kept as they are; anything else is copied, as its owner may change it.
            self._chunks.append(data if isinstance(data, bytes) else bytes(data))
            self._tail = None
        self._buffered += n
        self._size += n
        if self._buffered >= self._flush_size:
            chunks, start = self._take_buffer()
            try:
                await self._offload.run(self._hash_and_flush(chunks, start))
            except BaseException:
                self._state = "failed"
                raise

    def _take_buffer(self) -> tuple[Chunks, int]:
        chunks, start = self._chunks, self._hashed
        self._chunks, self._tail, self._buffered, self._hashed = [], None, 0, 0
        return chunks, start

    async def _hash_and_flush(self, chunks: Chunks, start: int) -> None:
        await _both(_hash_chunks(self._hasher, chunks[start:]), self._flush(chunks))

    async def commit(self) -> Digest:
        """Verify size and digest, publish atomically, and return the digest.

        Raise :class:`SizeMismatch` or :class:`DigestMismatch` after discarding the bytes. A
        digest already stored is kept as it is and the new copy discarded. Committing again
        returns the same digest.
        """
        if self._state == "committed" and self._digest is not None:
            return self._digest
        if self._state != "open":
            raise RuntimeError(f"cannot commit a {self._state} blob writer")
        chunks, start = self._take_buffer()
        try:
            digest, stored = await self._offload.run(self._verify_and_publish(chunks, start))
        except IntegrityError:
            self._state = "aborted"
            raise
        except BaseException:
            self._state = "failed"
            raise
        self._state = "committed"
        self._digest = digest
        _log.debug(
            "%s %s (%d bytes) in %s",
            "stored" if stored else "already had",
            digest,
            self._size,
            self._store.url,
        )
        return digest

    async def _verify_and_publish(self, chunks: Chunks, start: int) -> tuple[Digest, bool]:
        await _hash_chunks(self._hasher, chunks[start:])
        digest = self._hasher.digest()
        problem: IntegrityError | None = None
        if self._announced is not None and self._size != self._announced:
            problem = SizeMismatch(
                f"blob is {self._size} bytes, announced {self._announced}",
                detail={"announced": self._announced, "received": self._size},
            )
        elif self._expected is not None and digest != self._expected:
            problem = DigestMismatch(
                f"blob digest is {digest}, expected {self._expected}",
                detail={"expected": str(self._expected), "actual": str(digest)},
            )
        if problem is not None:
            await self._discard()
            raise problem
        return digest, await self._publish(digest, chunks)

    async def abort(self) -> None:
        """Discard everything written; idempotent, and a no-op after a commit.

        Best effort: a failure to remove what was sent is logged, and the store's
        ``cleanup_uploads`` removes it later.
        """
        await self._offload.settle()
        if self._state == "committed":
            return
        if self._state == "open":
            self._state = "aborted"
        self._take_buffer()
        try:
            await asyncio.shield(self._discard())
        except Exception:
            _log.warning("could not discard an upload in %s", self._store.url, exc_info=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != "committed":
            await self.abort()


class _Host(_Store, Protocol):
    """What an fsspec writer needs of its store (:class:`~.fsspec_store.FsspecBlobStore`)."""

    def _open_sink(self, expected: Digest | None) -> _Sink: ...

    def _exists_sync(self, digest: Digest) -> bool: ...

    def _blob_path(self, digest: Digest) -> str: ...


class FsspecBlobWriter(BufferedBlobWriter[_Host]):
    """A :class:`BlobWriter` for :class:`FsspecBlobStore`: bytes are buffered up to the store's
    ``write_buffer_size``, then written to a blocking sink in a worker thread."""

    _sink: _Sink | None = None

    async def _flush(self, chunks: Chunks) -> None:
        await asyncio.to_thread(self._write_sync, chunks)

    def _write_sync(self, chunks: Chunks) -> None:
        if self._sink is None:
            self._sink = self._store._open_sink(self._expected)
        self._sink.write(chunks)

    async def _publish(self, digest: Digest, chunks: Chunks) -> bool:
        return await asyncio.to_thread(self._publish_sync, digest, chunks)

    def _publish_sync(self, digest: Digest, chunks: Chunks) -> bool:
        if self._sink is None:
            # Nothing reached storage yet: skip the write entirely if the blob is there.
            if self._store._exists_sync(digest):
                return False
            self._sink = self._store._open_sink(digest)
        if chunks:
            self._sink.write(chunks)
        stored = self._sink.publish(self._store._blob_path(digest))
        self._sink = None
        return stored

    async def _discard(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            await asyncio.to_thread(sink.discard)


# --------------------------------------------------------------------------------------------
# Reader


class FsspecBlobReader:
    """A :class:`BlobReader` over a byte range, fetched chunk by chunk; get one from a store's
    ``reader()``. Also an async context manager that closes it."""

    def __init__(
        self,
        *,
        digest: Digest,
        size: int,
        offset: int,
        length: int,
        chunk_size: int,
        fetch: Fetch,
        close: Close | None = None,
    ) -> None:
        self._digest = digest
        self._size = size
        self._offset = offset
        self._length = length
        self._pos = offset
        self._end = offset + length
        self._chunk_size = chunk_size
        self._fetch = fetch
        self._close = close
        self._closed = False
        self._offload = _Offloader()

    def __repr__(self) -> str:
        return f"<FsspecBlobReader {self._digest} bytes {self._offset}-{self._end} of {self._size}>"

    @property
    def size(self) -> int:
        """The size of the whole blob."""
        return self._size

    @property
    def offset(self) -> int:
        """Where the range starts."""
        return self._offset

    @property
    def length(self) -> int:
        """How many bytes the range holds (what iterating yields in total)."""
        return self._length

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._closed or self._pos >= self._end:
            await self.aclose()
            raise StopAsyncIteration
        n = min(self._chunk_size, self._end - self._pos)
        try:
            data = await self._offload.run(self._fetch(self._pos, n))
        except FileNotFoundError:
            await self.aclose()
            raise BlobNotFound(f"blob {self._digest} was removed while being read") from None
        if not data:
            await self.aclose()
            raise IntegrityError(
                f"stored blob {self._digest} ends at byte {self._pos}, expected {self._size}"
            )
        self._pos += len(data)
        return data

    async def aclose(self) -> None:
        """Release the underlying file; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._offload.settle()
        if self._close is not None:
            await self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _pread_all(fd: int, pos: int, n: int) -> bytes:
    data = os.pread(fd, n, pos)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = os.pread(fd, n - got, pos + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
