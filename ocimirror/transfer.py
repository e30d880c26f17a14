"""Content in and out without a registry: OCI image layouts (directories or tar files).

This is the air-gap path: export a repository version on one side, carry the tar across,
import it on the other; digests are preserved byte for byte.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from ocimirror.backends.blobs import BlobStore
from ocimirror.backends.metadata import ContentBatch
from ocimirror.core.digest import Digest
from ocimirror.core.manifest import MAX_MANIFEST_SIZE, parse_manifest
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import BlobNotFound, IncompleteContent, InvalidLayout
from ocimirror.ingest import Ingest, IngestStore, manifest_entry
from ocimirror.layout import LayoutReader, LayoutWriter
from ocimirror.versions import RepositoryVersion

if TYPE_CHECKING:
    from ocimirror.ondemand import ClosingChunks, OnDemand

__all__ = ["ExportReport", "export_layout", "import_layout"]

log = logging.getLogger("ocimirror.transfer")

_CHUNK = 1 << 20


@attrs.frozen(kw_only=True)
class ExportReport:
    """What an export wrote."""

    path: str
    tags: dict[str, str]
    manifests: int
    blobs: int


async def _iter_file(reader: LayoutReader, digest: Digest) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(reader.open_blob, digest)
    try:
        while chunk := await asyncio.to_thread(f.read, _CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


async def _gather(
    ingest: Ingest,
    reader: LayoutReader,
    digest: Digest,
    media_type: str,
    batch: ContentBatch,
    seen: set[str],
) -> bool:
    """Put a manifest from the layout and everything under it into ``batch`` (blobs stream
    into storage, verified); False for a schema 1 manifest, which is skipped."""
    key = str(digest)
    if key in seen:
        return key in batch.manifests or key in batch.touch_manifests
    seen.add(key)
    if await ingest.metadata.existing_manifests([key]):
        batch.touch_manifests.add(key)  # recorded, so is everything under it
        return True
    raw = await asyncio.to_thread(reader.read_blob, digest, max_size=MAX_MANIFEST_SIZE)
    manifest = parse_manifest(raw, media_type, expected=digest)
    if manifest.is_schema1:
        log.warning("skipping schema 1 manifest %s: it is never converted", digest)
        return False
    for child in manifest.children():
        await _gather(ingest, reader, child.digest, child.media_type, batch, seen)
    kept: set[str] = set()
    for blob in manifest.blobs():
        blob_key = str(blob.digest)
        if blob_key in batch.blobs or await ingest.reuse_blob(
            blob.digest, media_type=blob.media_type
        ):
            kept.add(blob_key)
            continue
        if not MediaType.is_distributable(blob.media_type) and not reader.has_blob(blob.digest):
            continue  # foreign layers live at their URLs, not in the layout
        stored_digest, size = await ingest.store_blob(
            _iter_file(reader, blob.digest), expected=blob.digest, size=blob.size
        )
        batch.add_blob(str(stored_digest), size, blob.media_type)
        kept.add(blob_key)
    batch.add_manifest(*manifest_entry(manifest, keeps=lambda b: str(b.digest) in kept))
    return True


async def import_layout(
    metadata: IngestStore,
    blobs: BlobStore,
    repository: str,
    path: str | os.PathLike[str],
    *,
    tags: Iterable[str] | None = None,
) -> RepositoryVersion:
    """Import every entry of an OCI image layout (or only the ``tags`` named) into
    ``repository``, through :meth:`~ocimirror.ingest.Ingest.publish`.

    Blobs stream into storage, verified; the new version holds each tagged entry under its
    ref name and each untagged one as an untagged manifest. All or nothing: a layout that
    misses content publishes nothing (InvalidLayout or IncompleteContent).
    """
    wanted = None if tags is None else set(tags)
    ingest = Ingest(metadata, blobs)
    reader = await asyncio.to_thread(LayoutReader.open, path)
    batch = ContentBatch()
    try:
        refs = reader.refs()
        tagged: dict[str, str] = {}
        untagged: list[str] = []
        seen: set[str] = set()
        for ref in refs:
            if wanted is not None and ref.name not in wanted:
                continue
            if not await _gather(ingest, reader, ref.digest, ref.media_type, batch, seen):
                continue  # skipped (schema 1)
            if ref.name is None:
                untagged.append(str(ref.digest))
            else:
                tagged[ref.name] = str(ref.digest)
        if wanted is not None and (missing := wanted - set(tagged)):
            raise InvalidLayout(f"the layout has no tag {sorted(missing)[0]!r}")
    finally:
        await asyncio.to_thread(reader.close)
    published = await ingest.publish(
        repository, batch, tags=tagged, untagged=untagged, partial=False
    )
    return RepositoryVersion.from_record(published.version)


def _bridge(agen: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
    """Pull an async iterator from a worker thread, one chunk at a time."""

    async def step() -> bytes:
        return await anext(agen)

    while True:
        try:
            yield asyncio.run_coroutine_threadsafe(step(), loop).result()
        except StopAsyncIteration:
            return


async def export_layout(
    metadata: IngestStore,
    blobs: BlobStore,
    repository: str,
    path: str | os.PathLike[str],
    *,
    version: int | None = None,
    tags: Iterable[str] | None = None,
    tar: bool = False,
    fetch: bool = True,
) -> ExportReport:
    """Write a version's tags (all, or ``tags``) and untagged top-level manifests to a layout.

    Digests are preserved: manifests are written byte for byte as stored. On-demand content
    (layers a sync left with their remote) is fetched from the remote; with ``fetch=False``
    the export fails instead, naming those blobs (``IncompleteContent``, detail ``remote``).
    """
    content = Ingest(metadata, blobs)
    number = (await metadata.get_version(repository, version)).number
    all_tags = dict(await metadata.list_tags(repository, number))
    if tags is None:
        chosen = all_tags
        roots = await _untagged_roots(metadata, repository, number, set(all_tags.values()))
    else:
        chosen = {}
        for name in tags:
            if name not in all_tags:
                raise InvalidLayout(f"{repository} version {number} has no tag {name!r}")
            chosen[name] = all_tags[name]
        roots = []
    loop = asyncio.get_running_loop()
    on_demand: OnDemand | None = None
    remote: list[str] = []

    async def _blob_source(
        digest: Digest, size: int
    ) -> AsyncIterator[bytes] | ClosingChunks | None:
        """The blob's bytes: stored, or fetched from its remote (on-demand content); None
        for a foreign layer that is not kept, or remote content left out (``fetch=False``)."""
        nonlocal on_demand
        if await content.has_blob(digest):
            return blobs.open(digest)
        key = str(digest)
        if await metadata.get_blob(key) is None:
            return None  # a foreign layer
        if not await metadata.blob_sources(key):
            raise BlobNotFound(f"blob {key} is missing from storage", detail={"digest": key})
        if not fetch:
            remote.append(key)
            return None
        if on_demand is None:
            from ocimirror.ondemand import OnDemand

            on_demand = OnDemand(metadata, blobs)  # type: ignore[arg-type]
        return await on_demand.read(digest, size)

    writer = await asyncio.to_thread(LayoutWriter, path, tar=tar)
    written_manifests: set[str] = set()
    written_blobs: set[str] = set()
    try:

        async def write_manifest(digest: str) -> dict[str, Any]:
            manifest = await content.get_manifest(Digest.parse(digest))
            if digest not in written_manifests:
                for child in manifest.children():
                    await write_manifest(str(child.digest))
                for blob in manifest.blobs():
                    key = str(blob.digest)
                    if key in written_blobs:
                        continue
                    source = await _blob_source(blob.digest, blob.size)
                    if source is None:
                        continue
                    chunks = _bridge(aiter(source), loop)
                    await asyncio.to_thread(writer.write_blob, blob.digest, chunks, size=blob.size)
                    written_blobs.add(key)
                await asyncio.to_thread(writer.write_blob, manifest.digest, [manifest.raw])
                written_manifests.add(digest)
            return {
                "mediaType": manifest.media_type,
                "digest": digest,
                "size": manifest.size,
            }

        for name, digest in chosen.items():
            writer.add_ref(await write_manifest(digest), name)
        for digest in roots:
            writer.add_ref(await write_manifest(digest), None)
        if remote:
            raise IncompleteContent(
                f"{len(remote)} blobs of {repository} version {number} are on-demand content "
                "that is not stored here; export with fetching on to fetch them from their "
                "remote",
                detail={"remote": remote},
            )
        await asyncio.to_thread(writer.close)
    except BaseException:
        await asyncio.to_thread(_abort, writer)
        raise
    finally:
        if on_demand is not None:
            await on_demand.close()
    return ExportReport(
        path=os.fspath(path),
        tags=dict(chosen),
        manifests=len(written_manifests),
        blobs=len(written_blobs),
    )


def _abort(writer: LayoutWriter) -> None:
    abort = getattr(writer, "abort", None)
    if abort is not None:
        abort()


async def _untagged_roots(
    metadata: IngestStore, repository: str, number: int, tagged: set[str]
) -> list[str]:
    """Manifests in the version that no tag and no other manifest in it reaches."""
    keys = metadata.iter_content(repository, number, "container.manifest")
    manifests = [k async for k in keys]
    referenced: set[str] = set(tagged)
    for children in (await metadata.references_many(manifests)).values():
        referenced.update(child for child, kind in children if kind == "manifest")
    return [d for d in manifests if d not in referenced]
