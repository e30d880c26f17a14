"""Fixtures of the store tests: the async backend they run on, and an open metadata store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ocimirror.backends.metadata import MetadataStore
from ocimirror.backends.sql import SQLMetadataStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def metadata_store(database_url: str) -> AsyncIterator[MetadataStore]:
    """An open, empty metadata store over each engine (SQLite, PostgreSQL)."""
    metadata: MetadataStore = SQLMetadataStore(database_url)
    await metadata.open()
    try:
        yield metadata
    finally:
        await metadata.close()
