"""A sync into S3 asks the database, not the bucket, whether a blob is stored: a new blob costs
one PutObject, and only blobs the database knows are looked for in the bucket."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from backends.test_s3_store import record
from fixtures.registry import Registry

from ocimirror.backends.blobs import S3BlobStore
from ocimirror.registry import AsyncRegistry
from ocimirror.testing import random_image, random_layer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_sync_into_s3_puts_new_blobs_without_looking_first(
    docker_registry: Registry,
    registry_name: str,
    s3_storage: tuple[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    base = random_layer(4096, seed=f"{registry_name}-base")
    first = [random_image(seed=f"{registry_name}-a{i}", layers=1, base=[base]) for i in range(3)]
    second = random_image(seed=f"{registry_name}-b", layers=1, base=[base])
    for i, image in enumerate(first):
        docker_registry.push(f"{registry_name}/a", image, f"v{i}")
    docker_registry.push(f"{registry_name}/b", second, "v0")

    url, options = s3_storage
    registry = await AsyncRegistry.open(
        database_url=f"sqlite:///{tmp_path / 'm.db'}", storage_url=url, storage_options=options
    )
    async with registry:
        assert isinstance(registry.blobs, S3BlobStore)
        for name in ("a", "b"):
            await registry.create_remote(
                name=name, url=docker_registry.url, upstream_name=f"{registry_name}/{name}"
            )
            await registry.create_repository(name, remote=name)
        requests = await record(registry.blobs)

        result = await (await registry.repository("a")).sync()
        blobs = {str(b.digest) for image in first for b in image.blobs()}
        assert result.ok and result.blobs_downloaded == len(blobs) == 7
        sent = Counter(requests.operations())
        assert sent == {"PutObject": 7}, sent

        # The second repository shares the base layer, which the database knows: that one
        # is looked for (and found) in the bucket, the new ones are put straight away.
        requests.sent.clear()
        result = await (await registry.repository("b")).sync()
        assert result.ok and (result.blobs_reused, result.blobs_downloaded) == (1, 2)
        assert Counter(requests.operations()) == {"HeadObject": 1, "PutObject": 2}
        assert (await registry.repair()).ok
