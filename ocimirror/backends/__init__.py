"""Storage backends: metadata (SQLAlchemy) and blobs (fsspec), each behind a small protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ocimirror.backends.blobs import BlobStore
    from ocimirror.backends.metadata import MetadataStore

__all__ = ["open_stores"]


async def open_stores(
    database_url: str, storage_url: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[MetadataStore, BlobStore]:
    """The metadata store (opened) and the blob store these URLs name.

    Every process that works on one registry (the CLI, server workers, sync workers) opens its
    stores here, so they all reach the same database and blob store the same way.
    """
    from ocimirror.backends.blobs import open_blob_store
    from ocimirror.backends.sql import SQLMetadataStore

    metadata = SQLMetadataStore(database_url)
    await metadata.open()
    return metadata, open_blob_store(storage_url, **dict(storage_options or {}))
