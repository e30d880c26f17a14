"""The fsspec blob store: :class:`FsspecBlobStore` and :func:`open_blob_store`."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import uuid
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import fsspec
import fsspec.core
from fsspec.implementations.local import LocalFileSystem

from ocimirror.backends.blobs.sinks import _FsspecSink, _LocalSink, _Sink
from ocimirror.backends.blobs.streams import FsspecBlobReader, FsspecBlobWriter, _pread_all
from ocimirror.core.digest import ALGORITHMS, Digest
from ocimirror.errors import BlobNotFound, DigestMismatch, IntegrityError

__all__ = ["OBJECT_STORE_PROTOCOLS", "FsspecBlobStore", "open_blob_store"]

_log = logging.getLogger("ocimirror.blobs")

#: fsspec protocols whose objects stay invisible until their upload completes.
OBJECT_STORE_PROTOCOLS: frozenset[str] = frozenset(
    {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az"}
)

_HEX_PREFIX = frozenset(f"{i:02x}" for i in range(256))


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
