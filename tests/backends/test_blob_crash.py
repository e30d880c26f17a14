"""A writer killed with SIGKILL mid-write leaves nothing under its digest, only an upload that
``cleanup_uploads`` removes: a temp file on local disk, an unfinished multipart upload on S3."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fixtures.s3 import S3Server

from ocimirror.backends.blobs import open_blob_store
from ocimirror.core.digest import Digest
from ocimirror.errors import BlobNotFound

pytestmark = pytest.mark.anyio

CHUNK = 1 << 20

# Writes chunks() slowly, so the test can kill it mid-way:
# ``python -c WRITER <url> <storage options as JSON> <chunks> [<expected digest>]``.
WRITER = """
import asyncio, json, sys
from ocimirror.backends.blobs import open_blob_store
from ocimirror.core.digest import Digest

async def stream(chunks):
    for i in range(chunks):
        yield i.to_bytes(4, "big") * (CHUNK // 4)
        await asyncio.sleep(0.02)

async def main():
    url, options, chunks = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    expected = Digest.parse(sys.argv[4]) if len(sys.argv) > 4 else None
    async with open_blob_store(url, **options) as store:
        await store.put(stream(chunks), expected=expected, size=chunks * CHUNK)
    print("committed", flush=True)

asyncio.run(main())
""".replace("CHUNK", str(CHUNK))


def chunks(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield i.to_bytes(4, "big") * (CHUNK // 4)


async def achunks(n: int) -> AsyncIterator[bytes]:
    for chunk in chunks(n):
        yield chunk


def digest_of_chunks(n: int) -> Digest:
    h = hashlib.sha256()
    for chunk in chunks(n):
        h.update(chunk)
    return Digest("sha256", h.hexdigest())


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def kill_mid_write(
    url: str,
    options: dict[str, Any],
    n: int,
    mid_write: Callable[[], bool],
    expected: Digest | None = None,
) -> None:
    """Start the writer of ``n`` chunks, wait until ``mid_write()``, then SIGKILL it."""
    argv = [sys.executable, "-c", WRITER, url, json.dumps(options), str(n)]
    proc = subprocess.Popen(
        [*argv, str(expected)] if expected is not None else argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not mid_write():
            assert proc.poll() is None, (
                f"the writer ended before it was killed: {proc.returncode}\n"
                + proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
            )
            assert time.monotonic() < deadline, "the writer never got mid-way"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert b"committed" not in out, err.decode(errors="replace")


async def test_a_killed_writer_leaves_only_an_upload_that_cleanup_removes(
    tmp_path: Path,
) -> None:
    n = 200  # a 200 MiB blob
    root = tmp_path / "store"
    url = root.as_uri()
    uploads = root / "uploads"
    digest = digest_of_chunks(n)

    def temp_file_has_grown() -> bool:
        sizes = [p.stat().st_size for p in uploads.glob("*")] if uploads.exists() else []
        return bool(sizes) and max(sizes) >= 24 * CHUNK

    kill_mid_write(url, {}, n, temp_file_has_grown)

    leftovers = files_under(root)
    assert leftovers, "the killed writer left no temp upload"
    assert all(name.startswith("uploads" + os.sep) for name in leftovers), leftovers

    async with open_blob_store(url) as store:
        assert await store.stat(digest) is None
        with pytest.raises(BlobNotFound):
            await store.read(digest)
        assert [item async for item in store.list_blobs()] == []

        assert await store.cleanup_uploads(older_than=timedelta(0)) == len(leftovers)
        assert files_under(root) == []

        assert await store.put(achunks(n), expected=digest, size=n * CHUNK) == digest
        assert await store.stat(digest) == n * CHUNK
        again = hashlib.sha256()
        async for chunk in store.open(digest, chunk_size=8 * CHUNK):
            again.update(chunk)
        assert again.hexdigest() == digest.hex
        assert files_under(root) == [os.path.join("blobs", "sha256", digest.hex[:2], digest.hex)]


async def test_a_killed_s3_writer_leaves_only_a_multipart_upload_that_cleanup_aborts(
    s3_server: S3Server, s3_storage: tuple[str, dict[str, Any]]
) -> None:
    n = 100  # 5 MiB parts (the fixture's): the writer is killed once one is up
    url, options = s3_storage
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    client = s3_server.client()
    digest = digest_of_chunks(n)

    def uploads() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = client.list_multipart_uploads(Bucket=bucket).get(
            "Uploads", []
        )
        return found

    def a_part_is_up() -> bool:
        return any(
            client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts")
            for u in uploads()
        )

    kill_mid_write(url, options, n, a_part_is_up, expected=digest)

    # The upload went straight to the blob's key, and is still unfinished: nothing is visible.
    assert [u["Key"] for u in uploads()] == [f"{prefix}/blobs/sha256/{digest.hex[:2]}/{digest.hex}"]
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    async with open_blob_store(url, **options) as store:
        assert await store.stat(digest) is None
        with pytest.raises(BlobNotFound):
            await store.read(digest)
        assert [item async for item in store.list_blobs()] == []

        assert await store.cleanup_uploads(older_than=timedelta(0)) == 1
        assert uploads() == []
        assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
