"""S3BlobStore on moto: the requests a write makes, and nothing visible before it is verified.

The conformance suite (test_blob_store.py) runs over S3 too; these tests look at what only the
S3 store promises: one PutObject for a small blob and no HEAD around it, multipart past the part
size, completed only after verification, and one s3fs filesystem per event loop.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest

from ocimirror._version import __version__
from ocimirror.backends.blobs import (
    FsspecBlobStore,
    S3BlobStore,
    open_blob_store,
)
from ocimirror.core.digest import Digest
from ocimirror.errors import BlobNotFound, DigestMismatch

pytestmark = pytest.mark.anyio

MiB = 1 << 20
PART = 5 * MiB  # the fixture's default_block_size


@pytest.fixture
async def store(s3_storage: tuple[str, dict[str, Any]]) -> AsyncIterator[S3BlobStore]:
    url, options = s3_storage
    async with open_blob_store(url, **options) as opened:
        assert isinstance(opened, S3BlobStore)
        yield opened


def data_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def chunked(data: bytes, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]


def key_of(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


class RequestLog:
    """Every HTTP request the store's client sends on this loop, retries included, as
    ``(operation, key under the store's root)``."""

    def __init__(self, root: str) -> None:
        self._root = f"/{root}/"
        self.sent: list[tuple[str, str]] = []
        #: Operations sent with "Expect: 100-continue" (a round trip before the body goes).
        self.waited: list[str] = []
        #: The headers of each request, names in lower case, values as text.
        self.headers: list[dict[str, str]] = []

    def hook(self, request: Any, event_name: str, **_: Any) -> None:
        path = urlsplit(request.url).path
        operation = event_name.rsplit(".", 1)[-1]
        self.sent.append((operation, path.removeprefix(self._root)))
        self.headers.append(
            {
                name.lower(): value.decode() if isinstance(value, bytes) else value
                for name, value in request.headers.items()
            }
        )
        if request.headers.get("Expect", b"") in (b"100-continue", "100-continue"):
            self.waited.append(operation)

    def operations(self) -> list[str]:
        return [op for op, _ in self.sent]


async def record(store: S3BlobStore) -> RequestLog:
    """Start logging the requests of ``store``'s client on the running loop."""
    client = await store._loop_fs().set_session()
    log = RequestLog(store._root)
    client.meta.events.register("before-send.s3", log.hook)
    return log


async def stored_keys(store: S3BlobStore) -> list[str]:
    bucket, _, prefix = store._root.partition("/")
    page = await store._call("list_objects_v2", Bucket=bucket, Prefix=f"{prefix}/")
    return sorted(o["Key"].removeprefix(f"{prefix}/") for o in page.get("Contents") or [])


async def pending_uploads(store: S3BlobStore) -> list[str]:
    bucket = store._root.partition("/")[0]
    page = await store._call("list_multipart_uploads", Bucket=bucket)
    return [u["Key"] for u in page.get("Uploads") or []]


# -- how a blob is written


@pytest.mark.parametrize("announce", [True, False], ids=["expected", "unexpected"])
async def test_a_small_blob_is_one_put_at_its_key_and_nothing_else(
    store: S3BlobStore, announce: bool
) -> None:
    data = data_of(100_000)
    digest = Digest.of(data)
    log = await record(store)
    assert await store.put(chunked(data), expected=digest if announce else None) == digest
    assert log.sent == [("PutObject", key_of(digest))]
    assert log.waited == []  # the body goes with the headers: no 100-continue round trip
    assert await store.read(digest) == data


async def test_a_small_blob_goes_with_its_own_sha256_for_s3_to_check(store: S3BlobStore) -> None:
    data = data_of(10_000)
    digest = Digest.of(data)
    log = await record(store)
    await store.put(data)
    [headers] = log.headers
    assert headers["x-amz-checksum-sha256"] == base64.b64encode(bytes.fromhex(digest.hex)).decode()
    assert not [name for name in headers if name.startswith("x-amz-checksum-crc")]


async def test_a_store_without_checksums_gets_none(s3_storage: tuple[str, dict[str, Any]]) -> None:
    """``request_checksum_calculation="when_required"`` is how S3-compatible stores without
    checksum support are reached: then not even the blob's own SHA-256 is sent."""
    url, options = s3_storage
    mine = {**options, "config_kwargs": {"request_checksum_calculation": "when_required"}}
    async with S3BlobStore(url, **mine) as store:
        log = await record(store)
        digest = await store.put(data_of(10_000))
        [headers] = log.headers
        assert not [name for name in headers if name.startswith("x-amz-checksum")]
        assert await store.stat(digest) == 10_000


async def test_a_sha512_blob_is_put_with_the_sdks_checksum(store: S3BlobStore) -> None:
    data = data_of(10_000)
    digest = Digest.of(data, "sha512")
    log = await record(store)
    assert await store.put(data, expected=digest) == digest
    [headers] = log.headers
    assert "x-amz-checksum-sha256" not in headers
    assert await store.read(digest) == data


async def test_requests_name_ocimirror_as_their_user_agent_unless_configured(
    s3_storage: tuple[str, dict[str, Any]],
) -> None:
    url, options = s3_storage
    async with S3BlobStore(url, **options) as store:
        log = await record(store)
        await store.put(b"agent")
        # botocore adds its own name and version after a configured agent
        assert [h["user-agent"].split()[0] for h in log.headers] == [f"ocimirror/{__version__}"]
    mine = {**options, "config_kwargs": {"user_agent": "my-mirror/2"}}
    async with S3BlobStore(url, **mine) as store:
        log = await record(store)
        await store.stat(Digest.of(b"agent"))
        assert [h["user-agent"].split()[0] for h in log.headers] == ["my-mirror/2"]


async def test_a_blob_of_exactly_one_part_is_still_one_put(store: S3BlobStore) -> None:
    data = data_of(PART - 1)
    log = await record(store)
    digest = await store.put(data)
    assert log.sent == [("PutObject", key_of(digest))]
    assert log.waited == []


async def test_a_blob_past_the_part_size_is_one_multipart_upload_at_its_key(
    store: S3BlobStore,
) -> None:
    data = data_of(2 * PART + 123)
    digest = Digest.of(data)
    log = await record(store)
    assert await store.put(chunked(data), expected=digest, size=len(data)) == digest
    assert log.operations() == [
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPart",
        "UploadPart",
        "CompleteMultipartUpload",
    ]
    assert {key for _, key in log.sent} == {key_of(digest)}
    assert await stored_keys(store) == [key_of(digest)]
    assert await pending_uploads(store) == []
    assert await store.read(digest) == data


async def test_a_large_blob_of_unknown_digest_is_staged_then_copied_into_place(
    store: S3BlobStore,
) -> None:
    data = data_of(PART + 1)
    log = await record(store)
    digest = await store.put(chunked(data))
    assert digest == Digest.of(data)
    written_at_key = [op for op, key in log.sent if key == key_of(digest)]
    assert written_at_key == ["CopyObject"]  # the blob's key only ever sees verified bytes
    assert log.operations()[:1] == ["CreateMultipartUpload"]
    assert log.sent[0][1].startswith("uploads/")
    assert await stored_keys(store) == [key_of(digest)]
    assert await pending_uploads(store) == []


async def test_the_part_size_follows_default_block_size(
    s3_storage: tuple[str, dict[str, Any]],
) -> None:
    url, options = s3_storage
    async with S3BlobStore(url, **{**options, "default_block_size": 6 * MiB}) as store:
        log = await record(store)
        await store.put(data_of(6 * MiB - 1))
        assert log.operations() == ["PutObject"]
    with pytest.raises(ValueError):
        S3BlobStore(url, **{**options, "default_block_size": MiB})


async def test_reads_stats_and_deletes_take_one_request_each(store: S3BlobStore) -> None:
    data = data_of(3000)
    digest = await store.put(data)
    log = await record(store)
    assert await store.stat(digest) == len(data)
    assert await store.read(digest) == data
    assert log.operations() == ["HeadObject", "GetObject"]
    assert await store.delete(digest) is True
    assert log.operations()[2:] == ["HeadObject", "DeleteObject"]


async def test_a_missing_blob_reads_as_not_found_after_one_request(store: S3BlobStore) -> None:
    missing = Digest.of(b"never stored")
    log = await record(store)
    assert await store.stat(missing) is None
    with pytest.raises(BlobNotFound):
        await store.read(missing)
    with pytest.raises(BlobNotFound):
        await store.reader(missing)
    assert log.operations() == ["HeadObject", "GetObject", "HeadObject"]


# -- verification before visibility


async def test_a_small_blob_with_the_wrong_digest_sends_nothing(store: S3BlobStore) -> None:
    log = await record(store)
    with pytest.raises(DigestMismatch):
        await store.put(data_of(1000), expected=Digest.of(b"something else"))
    assert log.sent == []
    assert await stored_keys(store) == []


async def test_a_large_blob_with_the_wrong_digest_is_aborted_not_completed(
    store: S3BlobStore,
) -> None:
    wrong = Digest.of(b"something else")
    log = await record(store)
    with pytest.raises(DigestMismatch):
        await store.put(chunked(data_of(PART + 10)), expected=wrong)
    assert log.operations() == [
        "CreateMultipartUpload",
        "UploadPart",
        "AbortMultipartUpload",
    ]
    assert await stored_keys(store) == []
    assert await pending_uploads(store) == []
    assert await store.stat(wrong) is None


# -- concurrency


@pytest.mark.parametrize("size", [1000, 2 * PART + 1], ids=["small", "multipart"])
async def test_concurrent_writes_of_the_same_blob_all_succeed(
    store: S3BlobStore, size: int
) -> None:
    data = data_of(size)
    digest = Digest.of(data)
    results = await asyncio.gather(
        *(store.put(chunked(data), expected=digest, size=size) for _ in range(4)),
        store.put(chunked(data)),
    )
    assert set(results) == {digest}
    assert await stored_keys(store) == [key_of(digest)]
    assert await pending_uploads(store) == []
    assert await store.read(digest) == data


async def test_the_connection_pool_allows_a_syncs_concurrency(
    s3_storage: tuple[str, dict[str, Any]],
) -> None:
    url, options = s3_storage
    async with S3BlobStore(url, **options) as store:
        assert store._loop_fs().config_kwargs["max_pool_connections"] == 64
    mine = {**options, "config_kwargs": {"max_pool_connections": 5}}
    async with S3BlobStore(url, **mine) as store:
        assert store._loop_fs().config_kwargs["max_pool_connections"] == 5


# -- event loops


def test_a_store_serves_one_event_loop_after_another(
    s3_storage: tuple[str, dict[str, Any]],
) -> None:
    url, options = s3_storage
    store = open_blob_store(url, **options)
    data = data_of(PART + 1)

    async def write() -> Digest:
        return await store.put(data)

    async def read(digest: Digest) -> bytes:
        return b"".join([chunk async for chunk in store.open(digest, chunk_size=MiB)])

    digest = asyncio.run(write())
    assert asyncio.run(read(digest)) == data
    assert asyncio.run(store.stat(digest)) == len(data)
    asyncio.run(store.close())
    with pytest.raises(RuntimeError):
        asyncio.run(store.stat(digest))


def test_a_store_serves_loops_in_two_threads_at_once(
    s3_storage: tuple[str, dict[str, Any]],
) -> None:
    url, options = s3_storage
    store = open_blob_store(url, **options)

    def in_own_loop(seed: int) -> Digest:
        async def work() -> Digest:
            digests = [await store.put(data_of(1000, seed * 10 + i)) for i in range(5)]
            return digests[-1]

        return asyncio.run(work())

    with ThreadPoolExecutor(2) as pool:
        digests = list(pool.map(in_own_loop, [1, 2]))
    assert asyncio.run(store.read(digests[0])) == data_of(1000, 14)
    asyncio.run(store.close())


# -- choosing the store


def test_open_blob_store_takes_the_s3_store_unless_told_threaded(
    s3_storage: tuple[str, dict[str, Any]],
) -> None:
    url, options = s3_storage
    assert isinstance(open_blob_store(url, **options), S3BlobStore)
    assert isinstance(open_blob_store(url.replace("s3://", "s3a://"), **options), S3BlobStore)
    assert isinstance(open_blob_store(url, threaded=True, **options), FsspecBlobStore)
