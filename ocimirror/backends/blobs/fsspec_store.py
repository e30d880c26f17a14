"""The fsspec blob store (:class:`FsspecBlobStore`), and :func:`open_blob_store`."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fsspec.asyn
import fsspec.core
from fsspec.implementations.local import LocalFileSystem

from ocimirror.backends.blobs.base import (
    BlobStoreBase,
    as_datetime,
    check_size,
    digest_at,
    expiry_seconds,
    not_found,
)
from ocimirror.backends.blobs.s3_store import S3_PROTOCOLS, S3BlobStore, abort_multipart_uploads
from ocimirror.backends.blobs.sinks import _FsspecSink, _fsync_dir, _LocalSink, _Sink
from ocimirror.backends.blobs.streams import Close, Fetch, FsspecBlobWriter, _pread_all, in_thread
from ocimirror.core.digest import ALGORITHMS, Digest
from ocimirror.errors import SizeMismatch

__all__ = ["OBJECT_STORE_PROTOCOLS", "FsspecBlobStore", "open_blob_store"]

_log = logging.getLogger("ocimirror.blobs")

#: fsspec protocols whose objects stay invisible until their upload completes.
OBJECT_STORE_PROTOCOLS: frozenset[str] = frozenset(
    {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az"}
)


def _mtime(info: dict[str, Any]) -> datetime | None:
    """The modification time in an fsspec info dict, whatever the backend calls it."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        when = as_datetime(info.get(key))
        if when is not None:
            return when
    return None


def _basename(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


class FsspecBlobStore(BlobStoreBase):
    """A :class:`BlobStore` over any fsspec URL (``file://``, ``memory://``, ``s3://``, ...).

    Also a :class:`BlobLister`, a :class:`BlobPresigner` (returning ``None`` where the
    filesystem cannot sign) and a :class:`BlobLocalPath` (returning ``None`` off local disk).
    :func:`open_blob_store` takes :class:`S3BlobStore` for S3 instead, unless told otherwise.

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
        super().__init__(url, storage_options)
        self.write_buffer_size = write_buffer_size
        fs_cls = self._fs_class
        protocols = {fs_cls.protocol} if isinstance(fs_cls.protocol, str) else set(fs_cls.protocol)
        self._local = issubclass(fs_cls, LocalFileSystem)
        self._object_store = bool(protocols & OBJECT_STORE_PROTOCOLS)
        self._direct = not self._local and (
            self._object_store if direct_upload is None else direct_upload
        )

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

    async def _source(self, digest: Digest) -> tuple[int, Fetch, Close | None]:
        path = self._blob_path(digest)
        if self._local:

            def open_local() -> tuple[Any, int]:
                f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the reader
                return f, os.fstat(f.fileno()).st_size

            try:
                f, size = await asyncio.to_thread(open_local)
            except FileNotFoundError:
                raise not_found(digest) from None

            def pread(pos: int, n: int) -> bytes:
                return _pread_all(f.fileno(), pos, n)

            async def close() -> None:
                await asyncio.to_thread(f.close)

            return size, in_thread(pread), close
        info = await asyncio.to_thread(self._info_sync, path)
        if info is None:
            raise not_found(digest)
        fs = self.fs

        def cat(pos: int, n: int) -> bytes:
            return bytes(fs.cat_file(path, start=pos, end=pos + n))

        return int(info["size"]), in_thread(cat), None

    async def _read_all(self, digest: Digest, max_size: int | None) -> bytes:
        path = self._blob_path(digest)

        def read_sync() -> bytes:
            if self._local:
                try:
                    f = open(path, "rb")  # noqa: SIM115 - closed just below
                except FileNotFoundError:
                    raise not_found(digest) from None
                with f:
                    check_size(digest, os.fstat(f.fileno()).st_size, max_size)
                    return f.read()
            info = self._info_sync(path)
            if info is None:
                raise not_found(digest)
            check_size(digest, int(info["size"]), max_size)
            try:
                return bytes(self.fs.cat_file(path))
            except FileNotFoundError:
                raise not_found(digest) from None

        return await asyncio.to_thread(read_sync)

    def _new_writer(
        self, expected: Digest | None, size: int | None, algorithm: str
    ) -> FsspecBlobWriter:
        return FsspecBlobWriter(
            self,
            expected=expected,
            size=size,
            algorithm=algorithm,
            flush_size=self.write_buffer_size,
        )

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

    async def _release(self) -> None:
        """Nothing to release: the fsspec filesystem is shared through fsspec's instance cache,
        so it stays open."""

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
                if prefix_entry.get("type") != "directory":
                    continue
                listing = await asyncio.to_thread(self._ls_sync, f"{blobs}/{algorithm}/{prefix}")
                for entry in listing:
                    if entry.get("type") != "file":
                        continue
                    digest = digest_at(algorithm, prefix, _basename(entry["name"]))
                    if digest is not None:
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
                # s3fs's blocking calls run on its own loop: so does the shared async cleanup.
                fs = self.fs
                removed += fsspec.asyn.sync(
                    fs.loop, abort_multipart_uploads, fs, self._root, cutoff
                )
            return removed

        removed = await asyncio.to_thread(cleanup_sync)
        if removed:
            _log.info("removed %d abandoned uploads from %s", removed, self.url)
        return removed

    # -- BlobPresigner

    async def presigned_url(
        self, digest: Digest, *, expires: timedelta = timedelta(minutes=10)
    ) -> str | None:
        """A URL serving the blob until ``expires`` from now, on object stores that can sign
        (S3); ``None`` elsewhere. Does not check that the blob exists."""
        self._check_open()
        if not self._object_store:
            return None
        seconds = expiry_seconds(expires)
        try:
            url = await asyncio.to_thread(self.fs.sign, self._blob_path(digest), expiration=seconds)
        except NotImplementedError:
            return None
        return str(url)

    # -- BlobLocalPath

    def local_path(self, digest: Digest) -> str | None:
        """The blob's file path on local disk (which may not exist), or ``None`` elsewhere."""
        return self._blob_path(digest) if self._local else None

    async def adopt(self, path: str, digest: Digest, size: int) -> bool:
        """Link a verified local file into place, as a writer publishes: a hard link in
        ``uploads/`` (the file itself stays where it is), fsynced, then ``os.replace``. False
        on another filesystem, or when this store is not on local disk."""
        if not self._local:
            return False
        return await asyncio.to_thread(self._adopt_sync, path, digest, size)

    def _adopt_sync(self, path: str, digest: Digest, size: int) -> bool:
        if os.path.getsize(path) != size:
            raise SizeMismatch(f"blob {digest}: the file to adopt is not {size} bytes")
        final = self._blob_path(digest)
        if os.path.exists(final):
            return True
        os.makedirs(self._uploads, exist_ok=True)
        staged = os.path.join(self._uploads, uuid.uuid4().hex)
        try:
            os.link(path, staged)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                return False  # another filesystem, or no hard links there
            raise
        try:
            os.chmod(staged, 0o644)  # as a writer's file (the spool's was private)
            fd = os.open(staged, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            parent = os.path.dirname(final)
            os.makedirs(parent, exist_ok=True)
            os.replace(staged, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
            raise
        _fsync_dir(parent)
        return True


def open_blob_store(
    url: str, *, threaded: bool = False, **storage_options: Any
) -> FsspecBlobStore | S3BlobStore:
    """A blob store for ``url``: :class:`S3BlobStore` for ``s3://`` and ``s3a://`` (s3fs's async
    API on the event loop), :class:`FsspecBlobStore` for everything else.

    ``threaded=True`` takes :class:`FsspecBlobStore` for S3 too (s3fs's blocking API in worker
    threads, the path before :class:`S3BlobStore`): to compare with, or to fall back on. The
    other options go to the store; see each class.
    """
    protocol, _ = fsspec.core.split_protocol(url)
    if protocol in S3_PROTOCOLS and not threaded:
        return S3BlobStore(url, **storage_options)
    return FsspecBlobStore(url, **storage_options)
