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

from ocimirror.core.digest import Digest
from ocimirror.core.manifest import MAX_MANIFEST_SIZE, Manifest, parse_manifest
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import InvalidLayout
from ocimirror.layout import LayoutReader, LayoutWriter
from ocimirror.versions import RepositoryVersion

if TYPE_CHECKING:
    from ocimirror.repository import AsyncRepository

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


async def _ingest(
    repo: AsyncRepository, reader: LayoutReader, digest: Digest, media_type: str, seen: set[str]
) -> Manifest | None:
    """Store a manifest from the layout and everything under it; None for schema 1."""
    registry = repo._registry
    if str(digest) in seen:
        return None
    seen.add(str(digest))
    raw = await asyncio.to_thread(reader.read_blob, digest, max_size=MAX_MANIFEST_SIZE)
    manifest = parse_manifest(raw, media_type, expected=digest)
    if manifest.is_schema1:
        log.warning("skipping schema 1 manifest %s: it is never converted", digest)
        return None
    for child in manifest.children():
        await _ingest(repo, reader, child.digest, child.media_type, seen)
    for blob in manifest.blobs():
        if await registry.reuse_blob(blob.digest, media_type=blob.media_type):
            continue
        if not MediaType.is_distributable(blob.media_type) and not reader.has_blob(blob.digest):
            continue  # foreign layers live at their URLs, not in the layout
        await registry.put_blob(
            _iter_file(reader, blob.digest),
            expected=blob.digest,
            size=blob.size,
            media_type=blob.media_type,
        )
    return await registry.put_manifest(raw, manifest.media_type, expected=digest)


async def import_layout(
    repo: AsyncRepository, path: str | os.PathLike[str], *, tags: Iterable[str] | None = None
) -> RepositoryVersion:
    """Import every entry of an OCI image layout (or only the ``tags`` named) into ``repo``.

    Blobs stream into storage, verified; the new version holds each tagged entry under its
    ref name and each untagged one as an untagged manifest.
    """
    wanted = None if tags is None else set(tags)
    reader = await asyncio.to_thread(LayoutReader.open, path)
    try:
        refs = reader.refs()
        tagged: dict[str, str] = {}
        untagged: list[str] = []
        seen: set[str] = set()
        for ref in refs:
            if wanted is not None and ref.name not in wanted:
                continue
            await _ingest(repo, reader, ref.digest, ref.media_type, seen)
            if await repo._registry.metadata.get_manifest(str(ref.digest)) is None:
                continue  # skipped (schema 1)
            if ref.name is None:
                untagged.append(str(ref.digest))
            else:
                tagged[ref.name] = str(ref.digest)
        if wanted is not None and (missing := wanted - set(tagged)):
            raise InvalidLayout(f"the layout has no tag {sorted(missing)[0]!r}")
    finally:
        await asyncio.to_thread(reader.close)
    return await repo.add(tags=tagged, manifests=untagged)


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
    repo: AsyncRepository,
    path: str | os.PathLike[str],
    *,
    version: int | RepositoryVersion | None = None,
    tags: Iterable[str] | None = None,
    tar: bool = False,
) -> ExportReport:
    """Write a version's tags (all, or ``tags``) and untagged top-level manifests to a layout.

    Digests are preserved: manifests are written byte for byte as stored.
    """
    registry = repo._registry
    number = (
        version.number
        if isinstance(version, RepositoryVersion)
        else (await repo.version(version)).number
    )
    all_tags = await repo.tags(number)
    if tags is None:
        chosen = all_tags
        roots = await _untagged_roots(repo, number, set(all_tags.values()))
    else:
        chosen = {}
        for name in tags:
            if name not in all_tags:
                raise InvalidLayout(f"{repo.name} version {number} has no tag {name!r}")
            chosen[name] = all_tags[name]
        roots = []
    loop = asyncio.get_running_loop()
    writer = await asyncio.to_thread(LayoutWriter, path, tar=tar)
    written_manifests: set[str] = set()
    written_blobs: set[str] = set()
    try:

        async def write_manifest(digest: str) -> dict[str, Any]:
            manifest = await registry.get_manifest(Digest.parse(digest))
            if digest not in written_manifests:
                for child in manifest.children():
                    await write_manifest(str(child.digest))
                for blob in manifest.blobs():
                    key = str(blob.digest)
                    if key in written_blobs or not await registry.has_blob(blob.digest):
                        continue  # foreign layers are not stored
                    chunks = _bridge(aiter(registry.blobs.open(blob.digest)), loop)
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
        await asyncio.to_thread(writer.close)
    except BaseException:
        await asyncio.to_thread(_abort, writer)
        raise
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


async def _untagged_roots(repo: AsyncRepository, number: int, tagged: set[str]) -> list[str]:
    """Manifests in the version that no tag and no other manifest in it reaches."""
    manifests = [str(d) for d in await repo.manifests(number)]
    referenced: set[str] = set(tagged)
    for digest in manifests:
        for child, kind in await repo._registry.metadata.manifest_references(digest):
            if kind == "manifest":
                referenced.add(child)
    return [d for d in manifests if d not in referenced]
