"""The S3 blob store: :class:`S3BlobStore`, s3fs's async API on the event loop.

A blob is a round trip or a few, and no worker thread waits on one: every call is a coroutine of
an asynchronous s3fs filesystem, so a sync's concurrency reaches S3 as concurrent requests (the
connection pool allows 64 unless configured otherwise). Writes are content-addressed, hence
idempotent: no HEAD before a PUT (writing the same bytes again is harmless) and none after (a
PUT that succeeded stored them). What a writer sends is verified before anything becomes
visible:

* smaller than a part (``default_block_size``, 8 MiB unless set): hashed in memory, verified, then
  one ``PutObject`` of the whole body at the blob's key, with the blob's SHA-256 as the request's
  checksum (``x-amz-checksum-sha256``): S3 checks the bytes it received against the digest the
  writer verified, and refuses them (``BadDigest``) if they differ on the way (unless checksums
  are turned off, ``request_checksum_calculation="when_required"``, for a store without them);
* larger: a multipart upload in parts of that size, completed only once size and digest are
  verified, and aborted otherwise; at the blob's key when the digest is known in advance, else
  under ``uploads/`` and then copied into place server-side.

A crash leaves at most an unfinished multipart upload or a staged object under ``uploads/``;
:meth:`S3BlobStore.cleanup_uploads` removes both. An asynchronous s3fs filesystem is bound to
the loop it was created on, so the store keeps one per event loop and closes them in
:meth:`~S3BlobStore.close`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from ocimirror._version import __version__
from ocimirror.backends.blobs.base import (
    BlobStoreBase,
    as_datetime,
    check_size,
    digest_at,
    expiry_seconds,
    not_found,
)
from ocimirror.backends.blobs.streams import BufferedBlobWriter, Chunks, Close, Fetch
from ocimirror.core.digest import Digest

__all__ = ["S3_PROTOCOLS", "S3BlobStore", "S3BlobWriter", "abort_multipart_uploads"]

_log = logging.getLogger("ocimirror.blobs")

#: URL schemes :class:`S3BlobStore` serves.
S3_PROTOCOLS: frozenset[str] = frozenset({"s3", "s3a"})

_PART_SIZE = 8 << 20
_MIN_PART_SIZE = 5 << 20  # S3's smallest part (but for the last one)
#: Parts grow by one part size every this many, so a blob stays under S3's 10,000 parts up to
#: 55,000 part sizes (430 GiB with 8 MiB parts).
_PARTS_PER_STEP = 1000
_POOL_CONNECTIONS = 64
#: The User-Agent sent to S3 unless ``config_kwargs`` names one. Given one, botocore sends it as
#: it is; without, it assembles its own from a dozen sanitized parts on every request (a tenth of
#: the client's CPU per small PUT, docs/performance.md, "Sync into S3").
_USER_AGENT = f"ocimirror/{__version__}"


def _where(path: str) -> dict[str, str]:
    """``Bucket`` and ``Key`` of a ``bucket/key`` path."""
    bucket, _, key = path.partition("/")
    return {"Bucket": bucket, "Key": key}


def _checksum(digest: Digest) -> dict[str, str]:
    """A ``PutObject``'s checksum argument for a verified blob: its own SHA-256, which S3 checks
    the body against (and botocore then computes no CRC32 of its own); none for other
    algorithms."""
    if digest.algorithm != "sha256":
        return {}
    return {"ChecksumSHA256": base64.b64encode(bytes.fromhex(digest.hex)).decode("ascii")}


async def _objects(fs: Any, prefix: str) -> AsyncIterator[dict[str, Any]]:
    """Every object whose path starts with ``prefix`` (``bucket/key-prefix``), in key order,
    a thousand a request."""
    where = _where(prefix)
    page_token: dict[str, str] = {}
    while True:
        page = await fs._call_s3(
            "list_objects_v2", Bucket=where["Bucket"], Prefix=where["Key"], **page_token
        )
        for entry in page.get("Contents") or []:
            yield entry
        if not page.get("IsTruncated"):
            return
        page_token = {"ContinuationToken": page["NextContinuationToken"]}


async def abort_multipart_uploads(fs: Any, root: str, cutoff: datetime) -> int:
    """Abort the multipart uploads under ``root`` initiated before ``cutoff``; how many.

    ``fs`` is an s3fs filesystem; the calls run on its loop.
    """
    where = _where(root)
    prefix = f"{where['Key']}/" if where["Key"] else ""
    removed = 0
    marker: dict[str, str] = {}
    while True:
        page = await fs._call_s3(
            "list_multipart_uploads", Bucket=where["Bucket"], Prefix=prefix, **marker
        )
        for upload in page.get("Uploads") or []:
            when = as_datetime(upload.get("Initiated"))
            if when is not None and when > cutoff:
                continue
            try:
                await fs._call_s3(
                    "abort_multipart_upload",
                    Bucket=where["Bucket"],
                    Key=upload["Key"],
                    UploadId=upload["UploadId"],
                )
            except FileNotFoundError:  # finished or aborted meanwhile
                continue
            removed += 1
        if not page.get("IsTruncated"):
            return removed
        marker = {
            "KeyMarker": page.get("NextKeyMarker", ""),
            "UploadIdMarker": page.get("NextUploadIdMarker", ""),
        }


class S3BlobStore(BlobStoreBase):
    """A :class:`BlobStore` on S3 (``s3://bucket/prefix`` or ``s3a://``) through s3fs's async API.

    Also a :class:`BlobLister`, a :class:`BlobPresigner` and a :class:`BlobLocalPath` (whose
    blobs are never on local disk).

    Args:
        url: The root: a bucket and an optional prefix.
        storage_options: Passed to ``s3fs.S3FileSystem`` (credentials, ``client_kwargs``,
            ``config_kwargs``, ...). ``default_block_size`` is the multipart threshold and part
            size (default 8 MiB, at least 5 MiB); ``config_kwargs`` gets
            ``max_pool_connections=64`` and ``user_agent="ocimirror/VERSION"`` unless it sets
            them.

    The constructor does no I/O. Calls run on the caller's event loop, with that loop's own
    s3fs filesystem; :meth:`close` closes their connections.
    """

    def __init__(self, url: str, **storage_options: Any) -> None:
        super().__init__(url, storage_options)
        part_size = int(storage_options.get("default_block_size") or _PART_SIZE)
        if part_size < _MIN_PART_SIZE:
            raise ValueError(f"default_block_size must be >= 5 MiB for S3, got {part_size}")
        self.part_size = part_size
        self._bucket = _where(self._root)["Bucket"]
        self._filesystems: dict[asyncio.AbstractEventLoop, Any] = {}

    # -- the filesystem of each event loop

    def _loop_fs(self) -> Any:
        """The running loop's asynchronous s3fs filesystem (one is bound to its loop)."""
        loop = asyncio.get_running_loop()
        fs = self._filesystems.get(loop)
        if fs is None:
            for ended in [other for other in list(self._filesystems) if other.is_closed()]:
                self._filesystems.pop(ended, None)  # its connections ended with it
            fs = self._filesystems.setdefault(loop, self._new_fs())
        return fs

    def _new_fs(self) -> Any:
        config = {
            "max_pool_connections": _POOL_CONNECTIONS,
            "user_agent": _USER_AGENT,
            **(self._storage_options.get("config_kwargs") or {}),
        }
        options = {**self._storage_options, "config_kwargs": config}
        return self._fs_class(asynchronous=True, skip_instance_cache=True, **options)

    async def _sends_checksums(self) -> bool:
        """Whether botocore adds checksums where S3 does not require them (its default). Not
        when ``request_checksum_calculation`` is ``"when_required"`` (in ``config_kwargs``,
        ``AWS_REQUEST_CHECKSUM_CALCULATION`` or the AWS config file), which is how a store
        without checksum support is reached: then a blob's own SHA-256 is not sent either."""
        client = await self._loop_fs().set_session()
        return getattr(client.meta.config, "request_checksum_calculation", None) != (
            "when_required"
        )

    async def _call(self, method: str, **kwargs: Any) -> Any:
        """One S3 API call (with s3fs's retries and its errors: ``FileNotFoundError``, ...)."""
        return await self._loop_fs()._call_s3(method, **kwargs)

    async def _release(self) -> None:
        filesystems, self._filesystems = self._filesystems, {}
        here = asyncio.get_running_loop()
        for loop, fs in filesystems.items():
            try:
                client = fs.s3
            except RuntimeError:  # never connected
                continue
            if loop is here:
                await client.close()
            elif loop.is_running():  # another thread's loop: close it there
                asyncio.run_coroutine_threadsafe(client.close(), loop)
            # A closed loop cannot close them any more: the garbage collector closes the
            # sockets (aiohttp warns about the session, with a ResourceWarning).

    async def _head(self, path: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = await self._call("head_object", **_where(path))
        except FileNotFoundError:
            return None
        return head

    # -- BlobStore

    async def stat(self, digest: Digest) -> int | None:
        """The blob's size, or ``None`` when it is absent (one HEAD)."""
        self._check_open()
        head = await self._head(self._blob_path(digest))
        return None if head is None else int(head["ContentLength"])

    async def _source(self, digest: Digest) -> tuple[int, Fetch, Close | None]:
        path = self._blob_path(digest)
        head = await self._head(path)
        if head is None:
            raise not_found(digest)

        async def fetch(pos: int, n: int) -> bytes:
            return bytes(await self._loop_fs()._cat_file(path, start=pos, end=pos + n))

        return int(head["ContentLength"]), fetch, None

    async def _read_all(self, digest: Digest, max_size: int | None) -> bytes:
        # One GET: its headers tell the size before a byte of the body is read.
        try:
            response = await self._call("get_object", **_where(self._blob_path(digest)))
        except FileNotFoundError:
            raise not_found(digest) from None
        body = response["Body"]
        try:
            check_size(digest, int(response["ContentLength"]), max_size)
            return bytes(await body.read())
        finally:
            body.close()

    def _new_writer(
        self, expected: Digest | None, size: int | None, algorithm: str
    ) -> S3BlobWriter:
        return S3BlobWriter(
            self, expected=expected, size=size, algorithm=algorithm, flush_size=self.part_size
        )

    async def delete(self, digest: Digest) -> bool:
        """Remove the blob; ``True`` if something was removed."""
        self._check_open()
        path = self._blob_path(digest)
        # S3 deletes missing keys without complaint: look first.
        if await self._head(path) is None:
            return False
        await self._call("delete_object", **_where(path))
        _log.debug("deleted %s from %s", digest, self.url)
        return True

    # -- BlobLister

    async def list_blobs(self) -> AsyncIterator[tuple[Digest, datetime | None]]:
        """Every stored digest with its modification time, a thousand a request.

        Objects whose keys are not digests in the right place are skipped.
        """
        self._check_open()
        blobs = f"{self._root}/blobs/"
        skip = len(_where(blobs)["Key"])
        async for entry in _objects(self._loop_fs(), blobs):
            parts = entry["Key"][skip:].split("/")
            digest = digest_at(*parts) if len(parts) == 3 else None
            if digest is not None:
                yield digest, as_datetime(entry.get("LastModified"))

    async def cleanup_uploads(self, *, older_than: timedelta) -> int:
        """Remove uploads untouched for longer than ``older_than``; return how many.

        Covers staged objects under ``uploads/`` and incomplete multipart uploads under the
        root. Choose ``older_than`` longer than the slowest upload: a live one is removed too.
        """
        self._check_open()
        fs = self._loop_fs()
        cutoff = datetime.now(UTC) - older_than
        removed = 0
        async for entry in _objects(fs, f"{self._uploads}/"):
            when = as_datetime(entry.get("LastModified"))
            if when is not None and when > cutoff:
                continue
            await self._call("delete_object", Bucket=self._bucket, Key=entry["Key"])
            removed += 1
        removed += await abort_multipart_uploads(fs, self._root, cutoff)
        if removed:
            _log.info("removed %d abandoned uploads from %s", removed, self.url)
        return removed

    # -- BlobPresigner

    async def presigned_url(
        self, digest: Digest, *, expires: timedelta = timedelta(minutes=10)
    ) -> str:
        """A URL serving the blob until ``expires`` from now (signed locally, no request).
        Does not check that the blob exists."""
        self._check_open()
        fs = self._loop_fs()
        return str(await fs._url(self._blob_path(digest), expires=expiry_seconds(expires)))


class _MultipartUpload:
    """One S3 multipart upload: parts go up as they come; only :meth:`complete` makes the
    object visible, :meth:`abort` throws the parts away."""

    def __init__(self, store: S3BlobStore, path: str, upload_id: str) -> None:
        self.path = path
        self._store = store
        self._where = {**_where(path), "UploadId": upload_id}
        self._parts: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, store: S3BlobStore, path: str) -> _MultipartUpload:
        created = await store._call("create_multipart_upload", **_where(path))
        return cls(store, path, created["UploadId"])

    @property
    def parts(self) -> int:
        return len(self._parts)

    async def add(self, data: bytes) -> None:
        number = len(self._parts) + 1
        sent = await self._store._call("upload_part", PartNumber=number, Body=data, **self._where)
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    async def complete(self) -> None:
        await self._store._call(
            "complete_multipart_upload", MultipartUpload={"Parts": self._parts}, **self._where
        )

    async def abort(self) -> None:
        with contextlib.suppress(FileNotFoundError):  # aborted already, by a cleanup
            await self._store._call("abort_multipart_upload", **self._where)


class S3BlobWriter(BufferedBlobWriter[S3BlobStore]):
    """A :class:`BlobWriter` for :class:`S3BlobStore`: a blob smaller than a part is sent in one
    ``PutObject`` after it is verified; a larger one goes up as a multipart upload, completed
    only after verification (see the module)."""

    _upload: _MultipartUpload | None = None

    async def _flush(self, chunks: Chunks) -> None:
        if self._upload is None:
            # Straight to the blob's key when its digest is known, else staged: the key is
            # unknown until the end.
            store = self._store
            path = (
                store._blob_path(self._expected)
                if self._expected is not None
                else f"{store._uploads}/{uuid.uuid4().hex}"
            )
            self._upload = await _MultipartUpload.start(store, path)
        await self._upload.add(b"".join(chunks))
        if self._upload.parts % _PARTS_PER_STEP == 0:
            self._flush_size += self._store.part_size

    async def _publish(self, digest: Digest, chunks: Chunks) -> bool:
        store, final = self._store, self._store._blob_path(digest)
        upload = self._upload
        if upload is None:
            # A bytearray, not bytes: botocore turns a bytes body into a file object and sends
            # any file object with "Expect: 100-continue", which costs a round trip per blob
            # before the body may go (at most one part here: nothing big to hold back).
            checksum = _checksum(digest) if await store._sends_checksums() else {}
            await store._call(
                "put_object", Body=bytearray().join(chunks), **_where(final), **checksum
            )
            return True
        if chunks:
            await upload.add(b"".join(chunks))
        await upload.complete()
        self._upload = None
        if upload.path != final:
            try:
                await store._loop_fs()._cp_file(upload.path, final)
            finally:
                await self._remove_staged(upload.path)
        return True

    async def _remove_staged(self, path: str) -> None:
        try:
            await self._store._call("delete_object", **_where(path))
        except Exception:
            _log.warning("could not remove the staged upload %s", path, exc_info=True)

    async def _discard(self) -> None:
        upload, self._upload = self._upload, None
        if upload is not None:
            await upload.abort()
