"""The one way content comes in: sync, OCI layout import and push all go through :class:`Ingest`.

One rule, kept by the metadata store inside its transactions so that no caller can get around
it (see :mod:`ocimirror.backends.metadata`):

* a manifest is recorded only when everything it references is recorded (child manifests,
  configs and layers), or is a foreign layer that is not kept;
* a version is published only when it is closed under references, so a tag is published
  only with its manifest's whole closure.

What this module adds: it turns a parsed manifest into its record and references (one
function, :func:`manifest_entry`, for every path), streams and verifies blobs into the blob
store before they are recorded, records a batch, works out which tags are complete, publishes
those in one version (additively, or as a mirror that keeps a tag whose refresh failed), and
says which tags were dropped and why.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from typing import Protocol

import attrs

from ocimirror.backends.blobs import BlobStore
from ocimirror.backends.metadata import (
    ContentBatch,
    ContentStore,
    Lease,
    LeaseStore,
    ManifestRecord,
    Reference,
    Rejection,
    RepositoryStore,
    SignatureRecord,
    VersionBuilder,
    VersionRecord,
)
from ocimirror.core.descriptor import Descriptor
from ocimirror.core.digest import Digest
from ocimirror.core.manifest import Manifest, parse_manifest
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import (
    EmptyMirror,
    IncompleteContent,
    ManifestBlobUnknown,
    ManifestChildUnknown,
    ManifestNotFound,
)
from ocimirror.signatures.atomic import signature_name

__all__ = ["Dropped", "Ingest", "IngestStore", "Published", "atomic_signature", "manifest_entry"]

log = logging.getLogger("ocimirror.ingest")


class IngestStore(ContentStore, RepositoryStore, LeaseStore, Protocol):
    """What ingestion needs of the metadata store: content, versions and leases."""


def manifest_entry(
    manifest: Manifest, *, keeps: Callable[[Descriptor], bool] | None = None
) -> tuple[ManifestRecord, list[Reference]]:
    """A manifest's record and its references, in order: children, then config and layers.

    A blob is a ``"blob"`` reference (which must be recorded) when ``keeps`` says it is kept
    (by default: every distributable blob), otherwise a ``"foreign"`` one.
    """
    kept = keeps or (lambda blob: MediaType.is_distributable(blob.media_type))
    references: list[Reference] = [
        (str(child.digest), "manifest", child.platform.to_json() if child.platform else None)
        for child in manifest.children()
    ]
    references += [
        (str(blob.digest), "blob" if kept(blob) else "foreign", None) for blob in manifest.blobs()
    ]
    record = ManifestRecord(
        digest=str(manifest.digest),
        media_type=manifest.media_type,
        data=manifest.raw,
        artifact_type=manifest.artifact_type,
        subject=str(manifest.subject.digest) if manifest.subject else None,
    )
    return record, references


def atomic_signature(manifest_digest: str, data: bytes) -> SignatureRecord:
    """The record of an atomic (simple signing) signature of a manifest: named
    ``<digest>@<id>`` with an id made from its bytes, so the same signature is one record
    however often it arrives.

    Its key (the record's ``digest``) is the sha256 of the signed manifest's digest, a newline
    and the bytes: the same bytes attached to two manifests are two signatures (a record is
    never re-pointed at another manifest).
    """
    return SignatureRecord(
        digest=str(Digest.of(manifest_digest.encode() + b"\n" + data)),
        manifest_digest=manifest_digest,
        name=signature_name(manifest_digest, data),
        key_id=None,
        sig_type="atomic",
        data=data,
    )


@attrs.frozen(kw_only=True)
class Dropped:
    """A tag (or untagged digest) that was not published, and why."""

    tag: str | None
    digest: str | None
    reason: str

    def to_json(self) -> dict[str, str]:
        """As the sync report lists it."""
        data = {"tag": self.tag, "digest": self.digest, "reason": self.reason}
        return {k: v for k, v in data.items() if v is not None}


@attrs.frozen(kw_only=True)
class Published:
    """What :meth:`Ingest.publish` did."""

    #: The version that now holds the content (the latest, new or not).
    version: VersionRecord
    #: Whether a new version was made.
    created: bool
    #: The tags published (name -> manifest digest) and untagged manifests added.
    tags: Mapping[str, str]
    untagged: tuple[str, ...]
    #: What could not be published, with the reason.
    dropped: tuple[Dropped, ...]
    #: Manifests (and signatures) the store refused to record, by digest.
    rejected: Mapping[str, Rejection]


class Ingest:
    """Content into the stores, by the one rule; see the module docstring.

    ``metadata`` is anything that keeps the :class:`IngestStore` protocols; ``blobs`` a blob
    store. No I/O happens in the constructor.
    """

    def __init__(self, metadata: IngestStore, blobs: BlobStore) -> None:
        self.metadata = metadata
        self.blobs = blobs

    # -- blobs -------------------------------------------------------------------------------

    async def has_blob(self, digest: Digest) -> bool:
        """Whether the blob is recorded and its bytes are in storage."""
        record = await self.metadata.get_blob(str(digest))
        return record is not None and await self.blobs.stat(digest) == record.size

    async def reuse_blob(self, digest: Digest, *, media_type: str | None = None) -> bool:
        """If the blob is stored, touch its record (restarting its orphan grace) and say so."""
        record = await self.metadata.get_blob(str(digest))
        if record is None or await self.blobs.stat(digest) != record.size:
            return False
        batch = ContentBatch()
        batch.add_blob(str(digest), record.size, media_type or record.media_type)
        await self.metadata.record_content(batch)
        return True

    async def store_blob(
        self,
        data: bytes | AsyncIterable[bytes] | Iterable[bytes],
        *,
        expected: Digest | None = None,
        size: int | None = None,
    ) -> tuple[Digest, int]:
        """Stream bytes into the blob store, verified (digest and size); not yet recorded."""
        digest = await self.blobs.put(data, expected=expected, size=size)
        stored = await self.blobs.stat(digest)
        if stored is None:  # a store that lost what it just published
            raise ManifestBlobUnknown(f"blob {digest} vanished from storage as it was written")
        return digest, stored

    async def put_blob(
        self,
        data: bytes | AsyncIterable[bytes] | Iterable[bytes],
        *,
        expected: Digest | None = None,
        size: int | None = None,
        media_type: str | None = None,
    ) -> Digest:
        """Stream a blob into storage, verified, and record it. Reuses a stored copy."""
        if expected is not None and await self.reuse_blob(expected, media_type=media_type):
            return expected
        digest, stored = await self.store_blob(data, expected=expected, size=size)
        batch = ContentBatch()
        batch.add_blob(str(digest), stored, media_type)
        await self.metadata.record_content(batch)
        return digest

    # -- manifests ---------------------------------------------------------------------------

    async def get_manifest(self, digest: Digest) -> Manifest:
        """A recorded manifest, parsed; ManifestNotFound otherwise."""
        record = await self.metadata.get_manifest(str(digest))
        if record is None:
            raise ManifestNotFound(f"manifest {digest} is not stored")
        return parse_manifest(record.data, record.media_type)

    async def put_manifest(
        self,
        raw: bytes,
        media_type: str | None = None,
        *,
        expected: Digest | None = None,
        check_storage: bool = True,
    ) -> Manifest:
        """Parse, verify and record one manifest; every blob and child it names must be stored.

        Non-distributable (foreign) layers need not be stored. An unknown blob raises
        ManifestBlobUnknown, an unknown child ManifestChildUnknown; nothing is recorded then.
        With ``check_storage`` (the default) each blob's bytes are also checked in the blob
        store (a foreign layer that is stored is kept); without it the records decide, as
        for a push whose blobs were verified as they were uploaded.
        """
        manifest = parse_manifest(raw, media_type, expected=expected)
        stored = await self._stored_blobs(manifest) if check_storage else None
        batch = ContentBatch()
        batch.add_manifest(
            *manifest_entry(
                manifest, keeps=None if stored is None else (lambda b: str(b.digest) in stored)
            )
        )
        rejected = await self.metadata.record_content(batch)
        if (refusal := rejected.get(str(manifest.digest))) is not None:
            error = ManifestChildUnknown if refusal.kind == "manifest" else ManifestBlobUnknown
            raise error(
                f"manifest {manifest.digest} lists unknown {refusal.missing}",
                detail={"digest": refusal.missing},
            )
        return manifest

    async def _stored_blobs(self, manifest: Manifest) -> set[str]:
        """The manifest's blobs that are recorded and in storage; ManifestBlobUnknown for a
        distributable one that is not."""
        stored: set[str] = set()
        for blob in manifest.blobs():
            if await self.has_blob(blob.digest):
                stored.add(str(blob.digest))
            elif MediaType.is_distributable(blob.media_type):
                raise ManifestBlobUnknown(
                    f"manifest {manifest.digest} references unknown {blob.digest}",
                    detail={"digest": str(blob.digest)},
                )
        return stored

    # -- publishing --------------------------------------------------------------------------

    async def publish(
        self,
        repository: str,
        batch: ContentBatch,
        *,
        tags: Mapping[str, str] | None = None,
        untagged: Iterable[str] = (),
        mirror: bool = False,
        failed_tags: Mapping[str, str] | None = None,
        reasons: Mapping[str, str] | None = None,
        lease: Callable[[], Awaitable[Lease]] | None = None,
        mark_mirror: bool = False,
        partial: bool = True,
        signatures: Mapping[str, str] | None = None,
        allow_empty: bool = False,
    ) -> Published:
        """Record ``batch``, then publish the complete tags and untagged manifests in one version.

        Args:
            repository: The repository to change.
            batch: New content (blobs already verified in storage) and reused content.
            tags: Tag name -> manifest digest, wanted in the version.
            untagged: Manifest digests wanted in the version without a tag.
            mirror: Make the version hold exactly what is wanted (Pulp's mirror mode);
                otherwise add to what it holds. A tag in ``failed_tags`` or dropped here
                keeps what it had: a failed refresh never removes a tag.
            failed_tags: Tags that could not even be resolved, with the reason; reported as
                dropped.
            reasons: Why a digest could not be fetched (digest -> reason), used to say why a
                tag pointing at it was dropped.
            lease: How to get the lease to publish under, asked for just before anything
                is written (a publish that changes nothing never asks); the version is
                written only while it is held (LeaseLost otherwise).
            mark_mirror: Mark the repository as a mirror, in the version's transaction.
            partial: Publish the complete tags when some are not; with ``False`` anything
                incomplete raises IncompleteContent and nothing is published.
            signatures: Signature digest -> the manifest it signs, wanted in the version (each
                recorded, by this batch or before); one whose manifest the version does not
                hold is left out.
            allow_empty: Let a mirror publish remove every tag the repository has; without
                it that raises EmptyMirror and nothing is published.
        """
        tags = dict(tags or {})
        untagged = list(dict.fromkeys(untagged))
        reasons = reasons or {}
        signatures = dict(signatures or {})
        # A batch of reused content only (a re-sync that found everything stored) records
        # nothing new: its touches wait until a version is certain to be built, since a no-op
        # leaves that content in the latest version, where no orphan cleanup reaches it.
        touches_only = not (batch.blobs or batch.manifests or batch.signatures)
        recording = bool(batch) and not touches_only

        async def held() -> Lease | None:
            return None if lease is None else await lease()

        if recording:
            await held()  # new content is written under the lease as well as the version
        rejected = await self.metadata.record_content(batch) if recording else {}
        roots = list(dict.fromkeys([*tags.values(), *untagged]))
        # The batch vouches for what it recorded just now and what it found recorded (whose
        # touch keeps it from orphan cleanup); only other roots are looked up. The version's
        # own check (closed under references) has the last word either way.
        vouched = {d for d in roots if d in batch.touch_manifests}
        if recording:
            vouched |= {d for d in roots if d in batch.manifests and d not in rejected}
        others = [d for d in roots if d not in vouched]
        recorded = vouched | (await self.metadata.existing_manifests(others) if others else set())

        def why(digest: str) -> str:
            if digest in reasons:
                return reasons[digest]
            if digest in rejected:
                return rejected[digest].reason
            return f"manifest {digest} is not recorded"

        dropped = [Dropped(tag=t, digest=None, reason=r) for t, r in (failed_tags or {}).items()]
        dropped += [
            Dropped(tag=t, digest=d, reason=why(d)) for t, d in tags.items() if d not in recorded
        ]
        dropped += [
            Dropped(tag=None, digest=d, reason=why(d)) for d in untagged if d not in recorded
        ]
        if dropped and not partial:
            first = dropped[0]
            raise IncompleteContent(
                f"{first.tag or first.digest}: {first.reason}",
                detail=[d.to_json() for d in dropped],
            )
        for item in dropped:
            log.warning(
                "%s: not publishing %s: %s", repository, item.tag or item.digest, item.reason
            )
        complete = {t: d for t, d in tags.items() if d in recorded}
        keep = [d for d in untagged if d in recorded]
        kept_names = {d.tag for d in dropped if d.tag is not None}

        if not mirror and not batch.manifests and not mark_mirror:
            # Nothing to publish: no lease to check either (an answer of "unchanged" holds
            # whoever holds the lease by now).
            unchanged = await self._unchanged(repository, complete, keep, signatures)
            if unchanged is not None:
                return Published(
                    version=unchanged,
                    created=False,
                    tags=complete,
                    untagged=tuple(keep),
                    dropped=tuple(dropped),
                    rejected=rejected,
                )
        fence = await held()
        if batch and touches_only:
            rejected = await self.metadata.record_content(batch)
        async with self.metadata.new_version(repository, lease=fence) as builder:
            if mark_mirror:
                await builder.set_mirror(True)
            if mirror:
                manifests = await _make_exactly(
                    builder, complete, keep, kept_names, allow_empty=allow_empty
                )
            else:
                manifests = await _add_closures(builder, complete, keep)
            await builder.add_many(
                "container.signature",
                dict.fromkeys(sorted(d for d, m in signatures.items() if m in manifests)),
            )
        assert builder.result is not None
        return Published(
            version=builder.result,
            created=builder.created,
            tags=complete,
            untagged=tuple(keep),
            dropped=tuple(dropped),
            rejected=rejected,
        )

    async def _unchanged(
        self,
        repository: str,
        tags: Mapping[str, str],
        untagged: list[str],
        signatures: Mapping[str, str],
    ) -> VersionRecord | None:
        """The latest version when adding would not change it (a no-op re-sync), found with
        reads only; None when a version must be built."""
        meta = self.metadata
        latest = await meta.get_version(repository)
        if tags:
            current = dict(await meta.list_tags(repository, latest.number))
            if any(current.get(tag) != digest for tag, digest in tags.items()):
                return None
        for digest in untagged:
            if not await meta.has_content(repository, latest.number, "container.manifest", digest):
                return None
        for digest in signatures:
            if not await meta.has_content(repository, latest.number, "container.signature", digest):
                return None
        return latest


async def _add_closures(
    builder: VersionBuilder, tags: Mapping[str, str], untagged: list[str]
) -> set[str]:
    """Additive: the tags and untagged manifests with everything under them; returns the
    manifests added."""
    closure = await builder.closure([*tags.values(), *untagged])
    if closure.missing:
        raise IncompleteContent(f"manifest {closure.missing[0]} is not recorded")
    await builder.add_many("container.blob", dict.fromkeys(sorted(closure.blobs)))
    await builder.add_many("container.manifest", dict.fromkeys(sorted(closure.manifests)))
    await builder.add_many("container.tag", tags)
    return set(closure.manifests)


async def _make_exactly(
    builder: VersionBuilder,
    tags: Mapping[str, str],
    untagged: list[str],
    kept: set[str],
    *,
    allow_empty: bool,
) -> set[str]:
    """Mirror: the version holds exactly the wanted set, plus whatever the ``kept`` tag
    names pointed at before (their refresh failed; a transient error never deletes); returns
    the manifests it holds. Removing every tag needs ``allow_empty``."""
    current = await builder.all_tags()
    desired = {**{t: d for t, d in current.items() if t in kept and t not in tags}, **tags}
    if current and not desired and not allow_empty:
        raise EmptyMirror(
            f"repository {builder.repository!r}: this mirror sync would remove all "
            f"{len(current)} of its tags and publish none; nothing was published "
            "(allow_empty=True or --allow-empty does it on purpose)"
        )
    closure = await builder.closure([*desired.values(), *untagged])
    if closure.missing:
        raise IncompleteContent(f"manifest {closure.missing[0]} is not recorded")
    manifests, blobs = set(closure.manifests), set(closure.blobs)
    await builder.remove_many("container.tag", [t for t in current if t not in desired])
    have_m = await builder.all_keys("container.manifest")
    await builder.remove_many("container.manifest", sorted(have_m - manifests))
    await builder.add_many("container.manifest", dict.fromkeys(sorted(manifests - have_m)))
    have_b = await builder.all_keys("container.blob")
    await builder.remove_many("container.blob", sorted(have_b - blobs))
    await builder.add_many("container.blob", dict.fromkeys(sorted(blobs - have_b)))
    signatures = await builder.signature_targets()
    await builder.remove_many(
        "container.signature", sorted(s for s, m in signatures.items() if m not in manifests)
    )
    await builder.add_many("container.tag", desired)
    return manifests
