"""Content-addressed blob storage: a small protocol, optional capabilities, and an fsspec store.

:class:`BlobStore` is all a registry needs: stat, stream, read, write, delete. Stores may offer
more, each as its own protocol checked at run time with ``isinstance``:

* :class:`BlobLister`: list every stored digest and remove abandoned uploads (garbage collection);
* :class:`BlobPresigner`: a time-limited URL the client can fetch the bytes from directly;
* :class:`BlobLocalPath`: a real file for ``sendfile``.

:class:`FsspecBlobStore` implements all of them over any fsspec URL. Under its root::

    blobs/<algorithm>/<first 2 hex>/<hex>    one file per digest, never partial or corrupt
    uploads/<uuid>                           uploads in progress (or abandoned)

Every write is verified (size and digest) as the stream ends, and published atomically:

* local files: temp file under ``uploads/``, ``fsync``, then ``os.replace`` into place;
* object stores (s3, gcs, azure): bytes go straight to the final key when the digest is known in
  advance, otherwise to ``uploads/`` and then a server-side copy; an object is invisible until its
  upload completes, and a failed verification aborts the upload instead of completing it;
* anything else (``memory://``, sftp, ...): temp file under ``uploads/``, then a move.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import uuid
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

import fsspec
import fsspec.core
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile

from ocimirror.core.digest import ALGORITHMS, Digest, Hasher
from ocimirror.errors import BlobNotFound, DigestMismatch, IntegrityError, SizeMismatch

__all__ = [
    "OBJECT_STORE_PROTOCOLS",
    "BlobLister",
    "BlobLocalPath",
    "BlobPresigner",
    "BlobReader",
    "BlobStore",
    "BlobWriter",
    "FsspecBlobReader",
    "FsspecBlobStore",
    "FsspecBlobWriter",
    "open_blob_store",
]

_log = logging.getLogger("ocimirror.blobs")

_T = TypeVar("_T")

#: fsspec protocols whose objects stay invisible until their upload completes.
OBJECT_STORE_PROTOCOLS: frozenset[str] = frozenset(
    {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az"}
)

_HEX_PREFIX = frozenset(f"{i:02x}" for i in range(256))


# --------------------------------------------------------------------------------------------
# Protocols


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
# Sinks: where a writer's bytes go (all methods are blocking and run in a thread)


class _Sink(Protocol):
    def write(self, data: bytearray) -> None: ...

    def publish(self, final: str) -> bool: ...

    def discard(self) -> None: ...


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


class _LocalSink:
    """A temp file in ``uploads/``: fsync, then ``os.replace`` into place (same filesystem)."""

    def __init__(self, uploads: str) -> None:
        os.makedirs(uploads, exist_ok=True)
        self._tmp = os.path.join(uploads, uuid.uuid4().hex)
        self._f = open(self._tmp, "xb")  # noqa: SIM115 - closed by publish() or discard()
        # A writer dropped without abort() leaves its temp file for cleanup_uploads(); close
        # the descriptor quietly at least.
        weakref.finalize(self, self._f.close)

    def write(self, data: bytearray) -> None:
        self._f.write(data)

    def publish(self, final: str) -> bool:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        if os.path.exists(final):
            os.unlink(self._tmp)
            return False
        parent = os.path.dirname(final)
        os.makedirs(parent, exist_ok=True)
        os.replace(self._tmp, final)
        _fsync_dir(parent)
        return True

    def discard(self) -> None:
        try:
            self._f.close()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)


def _disarm(f: Any) -> None:
    # An fsspec buffered file closed by the garbage collector completes its upload. Mark it
    # closed instead, so a writer dropped without abort() never publishes anything.
    with contextlib.suppress(AttributeError):
        f.closed = True


class _FsspecSink:
    """An fsspec file opened ``wb``, either at the final key (direct) or at a temp path (staged).

    On an object store an upload stays invisible until the file is closed; :meth:`discard`
    aborts it instead (``f.discard()``), so a failed write never publishes anything. A staged
    file is moved into place after closing (a server-side copy on object stores).
    """

    def __init__(self, fs: Any, path: str, *, staged: bool, object_store: bool) -> None:
        self._fs = fs
        self._path = path
        self._staged = staged
        self._object_store = object_store
        self._f = fs.open(path, "wb")
        self._file_closed = False
        self._finalizer = (
            weakref.finalize(self, _disarm, self._f)
            if isinstance(self._f, AbstractBufferedFile)
            else None
        )

    def write(self, data: bytearray) -> None:
        self._f.write(data)

    def _exists(self, path: str) -> bool:
        self._fs.invalidate_cache(path)
        return bool(self._fs.exists(path))

    def _close(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        self._file_closed = True
        self._f.close()

    def publish(self, final: str) -> bool:
        if not self._staged:
            assert self._path == final, "a direct upload is published under its own key"
            if self._exists(final):
                self.discard()
                return False
            self._close()
            return True
        self._close()
        if self._exists(final):
            self._fs.rm_file(self._path)
            return False
        if not self._object_store:
            self._fs.makedirs(self._fs._parent(final), exist_ok=True)
        self._fs.mv(self._path, final)
        return True

    def discard(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        if not self._file_closed:
            self._file_closed = True
            try:
                with contextlib.suppress(FileNotFoundError):  # already aborted by a cleanup
                    self._f.discard()
            finally:
                _disarm(self._f)
            if self._object_store:
                return  # an aborted upload leaves nothing behind
        if self._staged:  # never remove a final key: another writer may have published it
            with contextlib.suppress(FileNotFoundError):
                self._fs.rm_file(self._path)


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
        store: FsspecBlobStore,
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


# --------------------------------------------------------------------------------------------
# Store


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        try:
            return _as_datetime(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _mtime(info: dict[str, Any]) -> datetime | None:
    """The modification time in an fsspec info dict, whatever the backend calls it."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        when = _as_datetime(info.get(key))
        if when is not None:
            return when
    return None


def _basename(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


class FsspecBlobStore:
    """A :class:`BlobStore` over any fsspec URL (``file://``, ``memory://``, ``s3://``, ...).

    Also a :class:`BlobLister`, a :class:`BlobPresigner` (returning ``None`` where the
    filesystem cannot sign) and a :class:`BlobLocalPath` (returning ``None`` off local disk).

    Args:
        url: The root; a plain path means a local directory.
        direct_upload: Write straight to the final key when the digest is known in advance.
            Safe only where an object is invisible until its upload completes; by default on for
            the protocols in :data:`OBJECT_STORE_PROTOCOLS`, and always off for local files.
        write_buffer_size: Bytes a writer gathers before handing them to a worker thread
            (default 4 MiB).
        storage_options: Passed to fsspec (credentials, ``client_kwargs``, ...).

    The constructor does no I/O; the fsspec filesystem is created on first use. Blocking
    filesystem calls run in the event loop's default executor.
    """

    def __init__(
        self,
        url: str,
        *,
        direct_upload: bool | None = None,
        write_buffer_size: int = 4 << 20,
        **storage_options: Any,
    ) -> None:
        if write_buffer_size <= 0:
            raise ValueError(f"write_buffer_size must be > 0, got {write_buffer_size}")
        self.url = url
        self.write_buffer_size = write_buffer_size
        self._storage_options = storage_options
        protocol, _ = fsspec.core.split_protocol(url)
        fs_cls = fsspec.get_filesystem_class(protocol or "file")
        protocols = {fs_cls.protocol} if isinstance(fs_cls.protocol, str) else set(fs_cls.protocol)
        self._local = issubclass(fs_cls, LocalFileSystem)
        self._object_store = bool(protocols & OBJECT_STORE_PROTOCOLS)
        self._direct = not self._local and (
            self._object_store if direct_upload is None else direct_upload
        )
        self._root = str(fs_cls._strip_protocol(url)).rstrip("/")
        self._fs_obj: Any = None
        self._fs_lock = threading.Lock()
        self._writers: weakref.WeakSet[FsspecBlobWriter] = weakref.WeakSet()
        self._closed = False

    def __repr__(self) -> str:
        return f"<FsspecBlobStore {self.url!r}>"

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (created on first use; blocking: call it from a thread)."""
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

    # -- blocking helpers (run in a thread)

    def _open_sink(self, expected: Digest | None) -> _Sink:
        if self._local:
            return _LocalSink(self._uploads)
        if expected is not None and self._direct:
            return _FsspecSink(self.fs, self._blob_path(expected), staged=False, object_store=True)
        # Without an expected digest the final key is unknown until the end: stage the bytes.
        if not self._object_store:
            self.fs.makedirs(self._uploads, exist_ok=True)
        return _FsspecSink(
            self.fs,
            f"{self._uploads}/{uuid.uuid4().hex}",
            staged=True,
            object_store=self._object_store,
        )

    def _info_sync(self, path: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = self.fs.info(path)
        except FileNotFoundError:
            return None
        return info if info.get("type", "file") == "file" else None

    def _exists_sync(self, digest: Digest) -> bool:
        path = self._blob_path(digest)
        if self._local:
            return os.path.isfile(path)
        return self._info_sync(path) is not None

    def _ls_sync(self, path: str) -> list[dict[str, Any]]:
        try:
            entries: list[dict[str, Any]] = self.fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        finally:
            # Listings are cached by some filesystems (s3fs); a stale one would hide blobs
            # written by other processes from stat().
            self.fs.invalidate_cache(path)
        return sorted(entries, key=lambda e: str(e["name"]))

    # -- BlobStore

    async def stat(self, digest: Digest) -> int | None:
        """The blob's size, or ``None`` when it is absent."""
        self._check_open()
        path = self._blob_path(digest)
        if self._local:

            def local() -> int | None:
                try:
                    return os.stat(path).st_size
                except FileNotFoundError:
                    return None

            return await asyncio.to_thread(local)
        info = await asyncio.to_thread(self._info_sync, path)
        return None if info is None else int(info["size"])

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
        path = self._blob_path(digest)
        fetch: Callable[[int, int], bytes]
        close: Callable[[], None] | None = None
        if self._local:

            def open_local() -> tuple[Any, int]:
                f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the reader
                return f, os.fstat(f.fileno()).st_size

            try:
                f, size = await asyncio.to_thread(open_local)
            except FileNotFoundError:
                raise BlobNotFound(f"blob {digest} not found", detail=str(digest)) from None
            fetch = functools.partial(_pread_all, f.fileno())
            close = f.close
        else:
            info = await asyncio.to_thread(self._info_sync, path)
            if info is None:
                raise BlobNotFound(f"blob {digest} not found", detail=str(digest))
            size = int(info["size"])
            fs = self.fs

            def fetch(pos: int, n: int) -> bytes:
                return bytes(fs.cat_file(path, start=pos, end=pos + n))

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
        path = self._blob_path(digest)

        def too_large(size: int) -> IntegrityError:
            return IntegrityError(
                f"blob {digest} is {size} bytes, over the limit of {max_size}",
                detail={"size": size, "max_size": max_size},
            )

        def read_sync() -> bytes:
            if self._local:
                try:
                    f = open(path, "rb")  # noqa: SIM115 - closed just below
                except FileNotFoundError:
                    raise BlobNotFound(f"blob {digest} not found", detail=str(digest)) from None
                with f:
                    size = os.fstat(f.fileno()).st_size
                    if max_size is not None and size > max_size:
                        raise too_large(size)
                    data = f.read()
            else:
                info = self._info_sync(path)
                if info is None:
                    raise BlobNotFound(f"blob {digest} not found", detail=str(digest))
                size = int(info["size"])
                if max_size is not None and size > max_size:
                    raise too_large(size)
                try:
                    data = bytes(self.fs.cat_file(path))
                except FileNotFoundError:
                    raise BlobNotFound(f"blob {digest} not found", detail=str(digest)) from None
            if verify and Digest.of(data, digest.algorithm) != digest:
                _log.error("stored blob %s in %s is corrupt", digest, self.url)
                raise DigestMismatch(
                    f"stored blob {digest} is corrupt: its bytes hash to another digest",
                    detail=str(digest),
                )
            return data

        return await asyncio.to_thread(read_sync)

    def writer(
        self, *, expected: Digest | None = None, size: int | None = None, algorithm: str = "sha256"
    ) -> FsspecBlobWriter:
        """A writer for one new blob; does no I/O until the first write or the commit.

        ``expected`` and ``size``, when given, are verified at the commit (and ``size`` as soon
        as more bytes arrive). The hash algorithm is ``expected``'s when given, else
        ``algorithm``.
        """
        self._check_open()
        w = FsspecBlobWriter(self, expected=expected, size=size, algorithm=algorithm)
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
        async with self.writer(expected=expected, size=size) as w:
            if isinstance(data, bytes | bytearray | memoryview):
                await w.write(data)
            elif isinstance(data, AsyncIterable):
                async for chunk in data:
                    await w.write(chunk)
            elif isinstance(data, Iterable) and not isinstance(data, str):
                for chunk in data:
                    await w.write(chunk)
            else:
                raise TypeError(f"cannot store a {type(data).__name__} as a blob")
            return await w.commit()

    async def delete(self, digest: Digest) -> bool:
        """Remove the blob; ``True`` if something was removed."""
        self._check_open()
        path = self._blob_path(digest)

        def delete_sync() -> bool:
            if self._local:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    return False
                return True
            # Object stores delete missing keys without complaint: look first.
            if self._info_sync(path) is None:
                return False
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                return False
            return True

        removed = await asyncio.to_thread(delete_sync)
        if removed:
            _log.debug("deleted %s from %s", digest, self.url)
        return removed

    async def close(self) -> None:
        """Abort unfinished writers; further use raises ``RuntimeError``. Idempotent.

        The fsspec filesystem is shared through fsspec's instance cache, so it stays open.
        """
        if self._closed:
            return
        self._closed = True
        for w in list(self._writers):
            await w.abort()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- BlobLister

    async def list_blobs(self) -> AsyncIterator[tuple[Digest, datetime | None]]:
        """Every stored digest with its modification time, one directory listing at a time.

        Files whose names are not digests in the right place are skipped.
        """
        self._check_open()
        blobs = f"{self._root}/blobs"
        for algo_entry in await asyncio.to_thread(self._ls_sync, blobs):
            algorithm = _basename(algo_entry["name"])
            if algo_entry.get("type") != "directory" or algorithm not in ALGORITHMS:
                continue
            for prefix_entry in await asyncio.to_thread(self._ls_sync, f"{blobs}/{algorithm}"):
                prefix = _basename(prefix_entry["name"])
                if prefix_entry.get("type") != "directory" or prefix not in _HEX_PREFIX:
                    continue
                listing = await asyncio.to_thread(self._ls_sync, f"{blobs}/{algorithm}/{prefix}")
                for entry in listing:
                    hexpart = _basename(entry["name"])
                    if entry.get("type") != "file" or not hexpart.startswith(prefix):
                        continue
                    try:
                        digest = Digest(algorithm, hexpart)
                    except ValueError:
                        _log.debug("skipping %s: not a digest", entry["name"])
                        continue
                    yield digest, _mtime(entry)

    async def cleanup_uploads(self, *, older_than: timedelta) -> int:
        """Remove uploads untouched for longer than ``older_than``; return how many.

        Covers temp files under ``uploads/`` and, on S3, incomplete multipart uploads under the
        root. Choose ``older_than`` longer than the slowest upload: a live one is removed too.
        """
        self._check_open()
        cutoff = datetime.now(UTC) - older_than

        def cleanup_sync() -> int:
            removed = 0
            for entry in self._ls_sync(self._uploads):
                when = _mtime(entry)
                if entry.get("type") != "file" or (when is not None and when > cutoff):
                    continue
                try:
                    self.fs.rm_file(entry["name"])
                except FileNotFoundError:
                    continue
                removed += 1
            if self._object_store and hasattr(self.fs, "call_s3"):
                removed += self._abort_s3_uploads(cutoff)
            return removed

        removed = await asyncio.to_thread(cleanup_sync)
        if removed:
            _log.info("removed %d abandoned uploads from %s", removed, self.url)
        return removed

    def _abort_s3_uploads(self, cutoff: datetime) -> int:
        bucket, _, key = self._root.partition("/")
        prefix = f"{key}/" if key else ""
        removed = 0
        marker: dict[str, str] = {}
        while True:
            page = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **marker)
            for upload in page.get("Uploads") or []:
                when = _as_datetime(upload.get("Initiated"))
                if when is not None and when > cutoff:
                    continue
                self.fs.call_s3(
                    "abort_multipart_upload",
                    Bucket=bucket,
                    Key=upload["Key"],
                    UploadId=upload["UploadId"],
                )
                removed += 1
            if not page.get("IsTruncated"):
                return removed
            marker = {
                "KeyMarker": page.get("NextKeyMarker", ""),
                "UploadIdMarker": page.get("NextUploadIdMarker", ""),
            }

    # -- BlobPresigner

    async def presigned_url(
        self, digest: Digest, *, expires: timedelta = timedelta(minutes=10)
    ) -> str | None:
        """A URL serving the blob until ``expires`` from now, on object stores that can sign
        (S3); ``None`` elsewhere. Does not check that the blob exists."""
        self._check_open()
        if not self._object_store:
            return None
        seconds = max(1, int(expires.total_seconds()))
        try:
            url = await asyncio.to_thread(self.fs.sign, self._blob_path(digest), expiration=seconds)
        except NotImplementedError:
            return None
        return str(url)

    # -- BlobLocalPath

    def local_path(self, digest: Digest) -> str | None:
        """The blob's file path on local disk (which may not exist), or ``None`` elsewhere."""
        return self._blob_path(digest) if self._local else None


def open_blob_store(url: str, **storage_options: Any) -> FsspecBlobStore:
    """A blob store for ``url``; see :class:`FsspecBlobStore` for the options."""
    return FsspecBlobStore(url, **storage_options)
