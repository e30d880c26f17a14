"""The fsspec store's writer and reader, and the thread offloading they share."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from ocimirror.backends.blobs.sinks import _Sink
from ocimirror.core.digest import Digest, Hasher
from ocimirror.errors import BlobNotFound, DigestMismatch, IntegrityError, SizeMismatch


class _Host(Protocol):
    """What a writer needs of its store (:class:`~.fsspec_store.FsspecBlobStore`)."""

    url: str
    write_buffer_size: int

    def _open_sink(self, expected: Digest | None) -> _Sink: ...

    def _exists_sync(self, digest: Digest) -> bool: ...

    def _blob_path(self, digest: Digest) -> str: ...


__all__ = ["FsspecBlobReader", "FsspecBlobWriter"]

_log = logging.getLogger("ocimirror.blobs")

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# Thread offloading


class _Offloader:
    """Runs blocking calls in the loop's executor, one at a time, and survives cancellation.

    A cancelled ``await`` does not stop the thread; :meth:`settle` waits for it, so cleanup never
    races a write still in flight.
    """

    __slots__ = ("_inflight",)

    def __init__(self) -> None:
        self._inflight: asyncio.Future[Any] | None = None

    @property
    def busy(self) -> bool:
        return self._inflight is not None and not self._inflight.done()

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self.busy:
            raise RuntimeError("concurrent use: another operation is still running")
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, functools.partial(fn, *args))
        self._inflight = fut
        result: _T = await asyncio.shield(fut)
        return result

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
# Writer


class FsspecBlobWriter:
    """A :class:`BlobWriter` for :class:`FsspecBlobStore`; get one from
    :meth:`FsspecBlobStore.writer`.

    Bytes are buffered up to the store's ``write_buffer_size``, then hashed and written in a
    worker thread. One task at a time may use a writer.
    """

    def __init__(
        self,
        store: _Host,
        *,
        expected: Digest | None,
        size: int | None,
        algorithm: str,
    ) -> None:
        if size is not None and size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self._store = store
        self._expected = expected
        self._announced = size
        self._hasher = Hasher(expected.algorithm if expected is not None else algorithm)
        self._buf = bytearray()
        self._hashed = 0  # how much of _buf the hasher has seen
        self._size = 0
        self._sink: _Sink | None = None
        self._state = "open"  # open -> committed | aborted | failed
        self._digest: Digest | None = None
        self._offload = _Offloader()

    def __repr__(self) -> str:
        return f"<FsspecBlobWriter {self._state} size={self._size} store={self._store.url!r}>"

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    @property
    def hasher(self) -> Hasher:
        """The running hash of the bytes written so far (read it, don't feed it)."""
        if self._offload.busy:
            raise RuntimeError("the hasher is not available while a write is in flight")
        if self._hashed < len(self._buf):
            self._hasher.update(memoryview(self._buf)[self._hashed :])
            self._hashed = len(self._buf)
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
        self._buf += data
        self._size += n
        if len(self._buf) >= self._store.write_buffer_size:
            buf, start = self._take_buffer()
            try:
                await self._offload.run(self._flush_sync, buf, start)
            except BaseException:
                self._state = "failed"
                raise

    def _take_buffer(self) -> tuple[bytearray, int]:
        buf, start = self._buf, self._hashed
        self._buf, self._hashed = bytearray(), 0
        return buf, start

    def _flush_sync(self, buf: bytearray, start: int) -> None:
        self._hasher.update(memoryview(buf)[start:])
        if self._sink is None:
            self._sink = self._store._open_sink(self._expected)
        self._sink.write(buf)

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
        buf, start = self._take_buffer()
        try:
            digest, stored = await self._offload.run(self._commit_sync, buf, start)
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

    def _commit_sync(self, buf: bytearray, start: int) -> tuple[Digest, bool]:
        self._hasher.update(memoryview(buf)[start:])
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
            self._discard_sync()
            raise problem
        if self._sink is None:
            # Nothing reached storage yet: skip the write entirely if the blob is there.
            if self._store._exists_sync(digest):
                return digest, False
            self._sink = self._store._open_sink(digest)
        if buf:
            self._sink.write(buf)
        stored = self._sink.publish(self._store._blob_path(digest))
        self._sink = None
        return digest, stored

    def _discard_sync(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.discard()

    async def abort(self) -> None:
        """Discard everything written; idempotent, and a no-op after a commit.

        Best effort: a failure to remove the temp copy is logged, and
        :meth:`FsspecBlobStore.cleanup_uploads` removes it later.
        """
        await self._offload.settle()
        if self._state == "committed":
            return
        if self._state == "open":
            self._state = "aborted"
        self._buf = bytearray()
        if self._sink is None:
            return
        try:
            await asyncio.shield(asyncio.to_thread(self._discard_sync))
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


# --------------------------------------------------------------------------------------------
# Reader


class FsspecBlobReader:
    """A :class:`BlobReader` for :class:`FsspecBlobStore`; get one from
    :meth:`FsspecBlobStore.reader`. Also an async context manager that closes it."""

    def __init__(
        self,
        *,
        digest: Digest,
        size: int,
        offset: int,
        length: int,
        chunk_size: int,
        fetch: Callable[[int, int], bytes],
        close: Callable[[], None] | None = None,
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
            data = await self._offload.run(self._fetch, self._pos, n)
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
            await asyncio.to_thread(self._close)

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
