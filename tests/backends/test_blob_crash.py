"""A writer killed with SIGKILL mid-write leaves nothing under its digest, only a temp upload."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ocimirror.backends.blobs import open_blob_store
from ocimirror.core.digest import Digest
from ocimirror.errors import BlobNotFound

pytestmark = pytest.mark.anyio

CHUNK = 1 << 20
CHUNKS = 200  # a 200 MiB blob

# Writes the same 200 MiB as chunks() below, slowly, so the test can kill it mid-way.
WRITER = """
import asyncio, sys
from ocimirror.backends.blobs import open_blob_store

async def stream():
    for i in range(CHUNKS):
        yield i.to_bytes(4, "big") * (CHUNK // 4)
        await asyncio.sleep(0.02)

async def main():
    async with open_blob_store(sys.argv[1]) as store:
        await store.put(stream(), size=CHUNKS * CHUNK)
    print("committed", flush=True)

asyncio.run(main())
""".replace("CHUNKS", str(CHUNKS)).replace("CHUNK", str(CHUNK))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def chunks() -> Iterator[bytes]:
    for i in range(CHUNKS):
        yield i.to_bytes(4, "big") * (CHUNK // 4)


async def achunks() -> AsyncIterator[bytes]:
    for chunk in chunks():
        yield chunk


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def kill_mid_write(url: str, uploads: Path, *, min_bytes: int = 24 * CHUNK) -> None:
    """Start the writer, wait until its temp file has grown past ``min_bytes``, SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (
                f"the writer ended before it was killed: {proc.returncode}\n"
                + proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
            )
            assert time.monotonic() < deadline, "the writer's temp file never grew"
            sizes = [p.stat().st_size for p in uploads.glob("*")] if uploads.exists() else []
            if sizes and max(sizes) >= min_bytes:
                break
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
    root = tmp_path / "store"
    url = root.as_uri()
    h = hashlib.sha256()
    for chunk in chunks():
        h.update(chunk)
    digest = Digest("sha256", h.hexdigest())

    kill_mid_write(url, root / "uploads")

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

        assert await store.put(achunks(), expected=digest, size=CHUNKS * CHUNK) == digest
        assert await store.stat(digest) == CHUNKS * CHUNK
        again = hashlib.sha256()
        async for chunk in store.open(digest, chunk_size=8 * CHUNK):
            again.update(chunk)
        assert again.hexdigest() == digest.hex
        assert files_under(root) == [os.path.join("blobs", "sha256", digest.hex[:2], digest.hex)]
