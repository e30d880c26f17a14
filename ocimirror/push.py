"""Push: blob uploads, manifests, tags and deletes from registry clients, into push repositories.

A push records content through :class:`~ocimirror.ingest.Ingest`, the one way content comes in,
and publishes it in a repository version like a sync does; the store's two rules (a manifest is
recorded only with everything it references, a version is closed under references) hold for
pushes too.

**Where a push goes.** A push names a distribution's base path. A path with no distribution
gets a new *push repository* of the same name, served by a new private distribution of the same
base path. A distribution whose repository mirrors a remote (it has a remote, or a sync has
published into it), or that serves one pinned version, is read-only: the push is refused with
:class:`~ocimirror.errors.Denied`, as in Pulp.

**Uploads.** An upload's bytes are stored as *parts*, each an unrecorded blob streamed into the
blob store (constant memory), and its state (the parts, in order, and the bytes so far) is a
row of the metadata store: an upload survives a restart, and its requests may reach different
server processes. The final ``PUT`` names the digest; a single part with that digest is the
blob as it is (the common case: one streamed ``PATCH``, then ``PUT``), several parts are
streamed into one new blob verified against the digest. A mismatch records nothing. Uploads
left unfinished are removed by :meth:`ocimirror.AsyncRegistry.orphan_cleanup`.

**Versions.** Each push publishes at once (the pushed content is pullable as soon as the
request is answered, from every process), and coalesces: a version made by a push squashes
the previous version into itself when that one belongs to the same burst
(:class:`~ocimirror.backends.metadata.Coalesce`), so pushing a 40-layer image, or 1,000 tags,
leaves one version rather than a thousand. ``docs/push.md`` has the design and its trade-off.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

from ocimirror.backends.blobs import BlobStore
from ocimirror.backends.metadata import (
    Coalesce,
    ContentBatch,
    DistributionStore,
    UploadRecord,
    UploadStore,
    VersionBuilder,
    VersionRecord,
)
from ocimirror.core.digest import Digest
from ocimirror.core.manifest import Manifest, parse_manifest
from ocimirror.core.mediatype import MediaType
from ocimirror.core.reference import validate_tag
from ocimirror.errors import (
    AlreadyExists,
    BlobNotFound,
    ChunkOutOfOrder,
    Conflict,
    Denied,
    DigestMismatch,
    DistributionNotFound,
    ManifestBlobUnknown,
    ManifestChildUnknown,
    ManifestNotFound,
    RepositoryNotFound,
    TagNotFound,
    UploadNotFound,
)
from ocimirror.ingest import Ingest, IngestStore, atomic_signature

__all__ = ["Push", "PushStore", "new_upload_id"]

log = logging.getLogger("ocimirror.push")

#: Random bytes in an upload ID (base64url-encoded): unguessable, so an upload URL is a secret.
UPLOAD_ID_BYTES = 24


#: Base paths a :class:`Push` remembers at most (forgotten all at once beyond that).
_MAX_TARGETS = 10_000


def new_upload_id() -> str:
    """A fresh, unguessable upload ID (192 random bits)."""
    return secrets.token_urlsafe(UPLOAD_ID_BYTES)


class PushStore(IngestStore, DistributionStore, UploadStore, Protocol):
    """What pushing needs of the metadata store."""


class Push:
    """Pushes into the repositories behind base paths; see the module docstring.

    Args:
        metadata: The metadata store.
        blobs: The blob store.
        coalesce: How a burst of pushes folds into one version.
        target_ttl: Seconds a base path's repository is remembered by this process (a push
            is many requests to one path). Whether that repository may be pushed to is
            checked again in every version's own transaction, so a repository that starts
            mirroring a remote is refused at once whatever was remembered.
    """

    def __init__(
        self,
        metadata: PushStore,
        blobs: BlobStore,
        *,
        coalesce: Coalesce | None = None,
        target_ttl: float = 1.0,
    ) -> None:
        self.metadata = metadata
        self.blobs = blobs
        self.coalesce = coalesce or Coalesce()
        self.target_ttl = target_ttl
        self._ingest = Ingest(metadata, blobs)
        self._targets: dict[str, tuple[float, str]] = {}

    # -- where a push goes ---------------------------------------------------------------------

    async def target(self, name: str, *, create: bool = True) -> str:
        """The repository a push to base path ``name`` changes, made (with its distribution)
        when ``create`` and the path is new; Denied when the distribution is read-only."""
        remembered = self._targets.get(name)
        now = time.monotonic()
        if remembered is not None and now < remembered[0]:
            return remembered[1]
        repository = await self._target(name, create=create)
        if len(self._targets) > _MAX_TARGETS:
            self._targets.clear()
        self._targets[name] = (now + self.target_ttl, repository)
        return repository

    async def _target(self, name: str, *, create: bool) -> str:
        try:
            dist, repo = await self.metadata.serving(name)
        except DistributionNotFound:
            if not create:
                raise
            return await self._create_target(name)
        if repo is None:
            raise Denied(f"{name!r} serves no repository, so nothing can be pushed to it")
        if dist.repository_version is not None:
            raise Denied(
                f"{name!r} serves version {dist.repository_version} of {dist.repository!r}, "
                "which is immutable; push to a distribution that follows its repository"
            )
        if repo.remote is not None or repo.mirror:
            raise _read_only(name, repo.name, repo.remote)
        return repo.name

    async def _create_target(self, name: str) -> str:
        meta = self.metadata
        try:
            await meta.create_repository(name, description="created by a push")
            log.info("push: created push repository %r", name)
        except AlreadyExists:
            repo = await meta.get_repository(name)
            if repo.remote is not None or repo.mirror:
                raise _read_only(name, repo.name, repo.remote) from None
        with contextlib.suppress(AlreadyExists):  # another request made it a moment ago
            await meta.create_distribution(name, name, repository=name, private=True)
        return await self._target(name, create=False)

    # -- uploads -------------------------------------------------------------------------------

    async def start_upload(self, name: str) -> UploadRecord:
        """Start a blob upload into ``name``'s repository."""
        await self.target(name)
        return await self.metadata.create_upload(new_upload_id(), name)

    async def upload(self, name: str, upload_id: str) -> UploadRecord:
        """An upload in progress on ``name``; UploadNotFound otherwise."""
        record = await self.metadata.get_upload(upload_id)
        if record.name != name:
            raise UploadNotFound(f"no blob upload {upload_id[:80]!r} is in progress on {name!r}")
        return record

    async def append(
        self,
        name: str,
        upload_id: str,
        data: AsyncIterable[bytes],
        *,
        start: int | None = None,
        length: int | None = None,
    ) -> UploadRecord:
        """Stream one chunk into the upload: at byte ``start`` when given (which must be the
        bytes received so far: ChunkOutOfOrder otherwise), of ``length`` bytes when given."""
        record = await self.upload(name, upload_id)
        return await self._append(record, data, start=start, length=length)

    async def _append(
        self,
        record: UploadRecord,
        data: AsyncIterable[bytes],
        *,
        start: int | None = None,
        length: int | None = None,
    ) -> UploadRecord:
        if start is not None and start != record.size:
            raise ChunkOutOfOrder(
                f"the chunk starts at byte {start}, but the upload has {record.size} bytes",
                detail={"received": record.size},
            )
        async with self.blobs.writer(size=length) as writer:
            async for chunk in data:
                if chunk:
                    await writer.write(chunk)
            if writer.size == 0:
                return record
            digest = await writer.commit()
        try:
            return await self.metadata.append_upload(
                record.id, offset=record.size, digest=str(digest), size=writer.size
            )
        except (ChunkOutOfOrder, UploadNotFound):
            await self._discard([str(digest)])
            raise

    async def cancel(self, name: str, upload_id: str) -> None:
        """Cancel an upload and discard its bytes."""
        await self.upload(name, upload_id)
        record = await self.metadata.delete_upload(upload_id)
        if record is not None:
            await self._discard([d for d, _ in record.parts])

    async def finish(
        self,
        name: str,
        upload_id: str,
        digest: Digest,
        data: AsyncIterable[bytes] | None = None,
        *,
        start: int | None = None,
        length: int | None = None,
    ) -> Digest:
        """Complete an upload (with a last chunk, if ``data`` has bytes): the bytes must hash
        to ``digest`` (DigestMismatch otherwise, and nothing is kept). Records the blob and
        adds it to the repository."""
        repository = await self.target(name)
        record = await self.upload(name, upload_id)
        if data is not None:
            record = await self._append(record, data, start=start, length=length)
        parts = [d for d, _ in record.parts]
        try:
            if parts == [str(digest)]:
                size = record.size
            elif not parts:
                _, size = await self._ingest.store_blob(b"", expected=digest)
            else:
                _, size = await self._ingest.store_blob(self._concatenated(parts), expected=digest)
        except DigestMismatch as exc:
            await self.metadata.delete_upload(upload_id)
            await self._discard(parts)
            raise DigestMismatch(
                f"the uploaded bytes do not match {digest}: {exc.message}; nothing was stored",
                detail={"digest": str(digest)},
            ) from None
        await self.metadata.complete_upload(upload_id, digest=str(digest), size=size)
        await self._discard([p for p in parts if p != str(digest)])
        await self._add_blob(name, repository, digest)
        return digest

    async def _concatenated(self, parts: list[str]) -> AsyncIterator[bytes]:
        for part in parts:
            async for chunk in self.blobs.open(Digest.parse(part)):
                yield chunk

    async def _discard(self, digests: list[str]) -> None:
        """Delete upload parts from the blob store, unless something else now uses their
        bytes (a recorded blob with the same digest, or a part of another upload)."""
        if not digests:
            return
        recorded = await self.metadata.known_blob_digests(digests)
        live = await self.metadata.upload_parts()
        for digest in set(digests) - recorded - live:
            await self.blobs.delete(Digest.parse(digest))

    async def mount(self, name: str, digest: Digest, source: str) -> bool:
        """Add blob ``digest`` from the repository base path ``source`` serves; False when that
        version does not hold it (the caller then starts an ordinary upload). The caller
        checks that the client may pull ``source``."""
        repository = await self.target(name)
        try:
            dist = await self.metadata.get_distribution(base_path=source)
        except DistributionNotFound:
            return False
        if dist.repository is None:
            return False
        try:
            repo = await self.metadata.get_repository(dist.repository)
        except RepositoryNotFound:
            return False
        number = dist.repository_version
        number = repo.latest_version if number is None else number
        if not await self.metadata.has_content(repo.name, number, "container.blob", str(digest)):
            return False
        if not await self._ingest.has_blob(digest):
            return False
        await self._add_blob(name, repository, digest)
        return True

    @contextlib.asynccontextmanager
    async def _version(self, name: str, repository: str) -> AsyncIterator[VersionBuilder]:
        """The next (coalesced) version of ``repository``, refused when, as of its own locked
        transaction, the repository mirrors a remote."""
        async with self.metadata.new_version(repository, coalesce=self.coalesce) as builder:
            if builder.mirrors:
                self._targets.pop(name, None)
                raise _read_only(name, repository, None)
            yield builder

    async def _add_blob(self, name: str, repository: str, digest: Digest) -> VersionRecord:
        async with self._version(name, repository) as builder:
            await builder.add("container.blob", str(digest))
        assert builder.result is not None
        return builder.result

    # -- manifests and tags ----------------------------------------------------------------------

    async def put_manifest(
        self, name: str, reference: str, raw: bytes, media_type: str | None
    ) -> Manifest:
        """Store a manifest byte for byte under a tag or its digest, in ``name``'s repository.

        Its config, layers and child manifests must be in the repository
        (MANIFEST_BLOB_UNKNOWN / MANIFEST_INVALID otherwise); by digest, the bytes must hash to
        it (DIGEST_INVALID).
        """
        repository = await self.target(name)
        tag: str | None = None
        expected: Digest | None = None
        if ":" in reference:
            expected = Digest.parse(reference)
        else:
            tag = validate_tag(reference)
        manifest = parse_manifest(raw, media_type, expected=expected)
        await self._ingest.put_manifest(
            raw, manifest.media_type, expected=manifest.digest, check_storage=False
        )
        # What the manifest names must be in this repository, not only somewhere in the
        # registry: checked in the version's own locked transaction, so a concurrent push
        # (whose version may squash the one read a moment ago) cannot make it look absent.
        async with self._version(name, repository) as builder:
            for blob in manifest.blobs():
                if MediaType.is_distributable(blob.media_type) and not await builder.present(
                    "container.blob", str(blob.digest)
                ):
                    raise ManifestBlobUnknown(
                        f"manifest {manifest.digest} references blob {blob.digest}, which is "
                        f"not in {name!r}; push it first",
                        detail={"digest": str(blob.digest)},
                    )
            for child in manifest.children():
                if not await builder.present("container.manifest", str(child.digest)):
                    raise ManifestChildUnknown(
                        f"index {manifest.digest} lists manifest {child.digest}, which is not "
                        f"in {name!r}; push it first",
                        detail={"digest": str(child.digest)},
                    )
            await builder.add("container.manifest", str(manifest.digest))
            if tag is not None:
                await builder.add("container.tag", tag, str(manifest.digest))
        return manifest

    async def add_signatures(self, name: str, digest: Digest, signatures: list[bytes]) -> int:
        """Add atomic signatures of a manifest that ``name``'s repository holds; returns how
        many were new to it. The signatures are stored as they are: clients verify them."""
        repository = await self.target(name, create=False)
        key = str(digest)
        batch = ContentBatch()
        for data in signatures:
            batch.add_signature(atomic_signature(key, data))
        if await self.metadata.record_content(batch):
            raise ManifestNotFound(f"manifest {key} is not in {name!r}", detail={"digest": key})
        async with self._version(name, repository) as builder:
            if not await builder.present("container.manifest", key):
                raise ManifestNotFound(f"manifest {key} is not in {name!r}", detail={"digest": key})
            return await builder.add_many("container.signature", dict.fromkeys(batch.signatures))

    async def delete_manifest(self, name: str, digest: Digest) -> None:
        """Remove a manifest, with the tags that point to it and its signatures; Conflict when
        an index in the repository lists it."""
        repository = await self.target(name, create=False)
        key = str(digest)
        async with self._version(name, repository) as builder:
            if not await builder.present("container.manifest", key):
                raise ManifestNotFound(f"manifest {key} is not in {name!r}", detail={"digest": key})
            parents = await builder.present_parents(key)
            if parents:
                raise Conflict(
                    f"manifest {key} is listed by index {parents[0]} in {name!r}; "
                    "delete the index first",
                    detail={"digest": key, "index": parents[0]},
                )
            await builder.remove_many("container.tag", await builder.tags_pointing_to(key))
            await builder.remove_many("container.signature", await builder.signatures_of(key))
            await builder.remove("container.manifest", key)

    async def delete_tag(self, name: str, tag: str) -> None:
        """Remove a tag (its manifest stays, by digest)."""
        repository = await self.target(name, create=False)
        async with self._version(name, repository) as builder:
            if not await builder.remove("container.tag", tag):
                raise TagNotFound(f"tag {tag!r} is not in {name!r}", detail={"tag": tag})

    async def delete_blob(self, name: str, digest: Digest) -> None:
        """Remove a blob from the repository; Conflict when a manifest in it uses the blob."""
        repository = await self.target(name, create=False)
        key = str(digest)
        async with self._version(name, repository) as builder:
            if not await builder.present("container.blob", key):
                raise BlobNotFound(f"blob {key} is not in {name!r}", detail={"digest": key})
            if await builder.present_parents(key):
                raise Conflict(
                    f"blob {key} is used by a manifest in {name!r}; delete the manifest first",
                    detail={"digest": key},
                )
            await builder.remove("container.blob", key)


def _read_only(name: str, repository: str, remote: str | None) -> Denied:
    source = f"remote {remote!r}" if remote else "a remote"
    return Denied(
        f"{name!r} is read-only: its repository {repository!r} mirrors {source}; "
        "it is not possible to push content to a repository that mirrors a remote",
        detail={"name": name, "repository": repository},
    )
