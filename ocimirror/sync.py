"""Sync: bring an upstream repository's images into an ocimirror repository.

The plan of one sync:

1. List the upstream tags and keep those the remote's include/exclude patterns select.
2. Before downloading or writing anything, take the repository's lease (a row in the
   database, so two processes never sync the same repository at once; a second sync fails
   clearly with RepositoryBusy). A re-sync that finds everything as it was takes none: it
   writes nothing at all (:mod:`ocimirror.leases`).
3. Resolve each tag the repository already has with HEAD (cheap, and not counted against
   Docker Hub's pull limit): a manifest whose digest is already stored is not downloaded
   again. A tag the repository does not have yet is fetched with one GET instead of
   HEAD-then-GET (its manifest is needed anyway).
4. For new manifests: GET (digest verified) unless step 3 fetched it, then their children
   (indexes, recursively) and blobs. Blobs stream straight into the blob store, verified;
   each digest is fetched once per sync even when many images share it, and not at all when
   it is already stored (in any repository).
5. Hand everything to :meth:`ocimirror.ingest.Ingest.publish`, the one way content comes
   in: it records the batch (a manifest only with everything under it), then builds the new
   version with the complete tags: additive (``mirror=False``) adds them; mirror
   (``mirror=True``) makes the version hold exactly them, keeping a tag whose refresh failed.
   Nothing changed, no new version. The version's transaction checks the lease (its holder is
   the fencing token): a sync that lost its lease publishes nothing.

Downloads run concurrently under a semaphore (``download_concurrency``) that several syncs in
one process can share (``sync_all``). A tag whose manifest, child or blob cannot be fetched
is dropped alone and reported with its reason (:attr:`SyncResult.dropped`); the result's
:attr:`~SyncResult.status` says ``complete``, ``partial`` or ``failed``. Schema 1 manifests
are skipped with a warning. A crash at any point leaves the repository at its last version;
blobs already stored are reused by the rerun.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from ocimirror._html import fields, table
from ocimirror.attached import Attachments, companion_tags
from ocimirror.backends.blobs import BlobLocalPath, BlobStore
from ocimirror.backends.metadata import (
    ContentBatch,
    RemoteStore,
    RepositoryRecord,
)
from ocimirror.core.descriptor import Descriptor, Platform
from ocimirror.core.digest import Digest
from ocimirror.core.manifest import ImageManifest, Manifest, parse_manifest
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import EmptyMirror, InvalidError, LeaseLost, OcimirrorError
from ocimirror.ingest import Ingest, IngestStore, Published, manifest_entry
from ocimirror.leases import SyncLease
from ocimirror.remote import Remote, SyncPolicy
from ocimirror.upstream import FetchedManifest, RegistryClient, SharedConnections, redact_text
from ocimirror.versions import RepositoryVersion

__all__ = ["SyncProgress", "SyncResult", "SyncStore", "lanes", "sync_all", "sync_repository"]

log = logging.getLogger("ocimirror.sync")


@attrs.define
class SyncProgress:
    """Live counters of one sync, handed to the progress callback."""

    repository: str
    tags_total: int = 0
    tags_done: int = 0
    manifests_downloaded: int = 0
    manifests_reused: int = 0
    blobs_downloaded: int = 0
    blobs_reused: int = 0
    #: Body bytes received so far (blobs, manifests, tag lists, retries included); it ends
    #: equal to the result's :attr:`SyncResult.bytes_downloaded`.
    bytes_downloaded: int = 0
    #: ``listing``, ``resolving``, ``downloading``, ``publishing``, then ``done``.
    phase: str = "listing"


@attrs.frozen(kw_only=True)
class SyncResult:
    """What a sync did: the resulting version and how it got there."""

    repository: str
    version: RepositoryVersion
    created: bool
    tags: int
    manifests_downloaded: int
    manifests_reused: int
    blobs_downloaded: int
    blobs_reused: int
    bytes_downloaded: int
    requests: dict[str, int]
    duration: float
    skipped: tuple[dict[str, str], ...] = ()
    #: Tags (or digests) not published, each with its ``reason``.
    dropped: tuple[dict[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every selected tag was synced (skipped schema 1 tags do not count)."""
        return not self.dropped

    @property
    def failed(self) -> tuple[dict[str, str], ...]:
        """The same as :attr:`dropped` (its earlier name)."""
        return self.dropped

    @property
    def status(self) -> str:
        """``"complete"``: every selected tag was published; ``"partial"``: some were, the
        ``dropped`` ones were not; ``"failed"``: tags were selected and none was published."""
        if not self.dropped:
            return "complete"
        return "partial" if self.tags else "failed"

    def __str__(self) -> str:
        made = "new" if self.created else "unchanged"
        mib = self.bytes_downloaded / 2**20
        text = (
            f"{self.repository}: {self.status}, {self.tags} tags -> version "
            f"{self.version.number} ({made}); {self.manifests_downloaded} manifests and "
            f"{self.blobs_downloaded} blobs downloaded ({mib:.1f} MiB), "
            f"{self.blobs_reused} blobs reused, {self.duration:.2f} s"
        )
        lines = [text]
        lines += [f"  dropped {_named(d)}: {d['reason']}" for d in self.dropped]
        lines += [f"  skipped {_named(d)}: {d['reason']}" for d in self.skipped]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        made = "new" if self.created else "unchanged"
        summary = {
            "status": self.status,
            "version": f"{self.version.number} ({made})",
            "tags": self.tags,
            "manifests downloaded / reused": (
                f"{self.manifests_downloaded} / {self.manifests_reused}"
            ),
            "blobs downloaded / reused": f"{self.blobs_downloaded} / {self.blobs_reused}",
            "bytes downloaded": f"{self.bytes_downloaded:,}",
            "requests": ", ".join(f"{k} {n}" for k, n in self.requests.items() if n),
            "duration": f"{self.duration:.2f} s",
        }
        parts = [fields(f"Sync of {self.repository}", summary)]
        problems = [("dropped", _named(d), d["reason"]) for d in self.dropped]
        problems += [("skipped", _named(d), d["reason"]) for d in self.skipped]
        if problems:
            parts.append(table(problems, head=("", "tag or digest", "reason")))
        parts.append(self.version._repr_html_())
        return "".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The version as ``version show`` prints it, plus a ``sync`` report."""
        data = self.version.to_json()
        data["sync"] = {
            "created": self.created,
            "tags": self.tags,
            "manifests_downloaded": self.manifests_downloaded,
            "manifests_reused": self.manifests_reused,
            "blobs_downloaded": self.blobs_downloaded,
            "blobs_reused": self.blobs_reused,
            "bytes_downloaded": self.bytes_downloaded,
            "requests": dict(self.requests),
            "duration": round(self.duration, 3),
            "status": self.status,
            "skipped": list(self.skipped),
            "dropped": list(self.dropped),
        }
        return data


def _named(entry: dict[str, str]) -> str:
    return entry.get("tag") or entry.get("digest") or "?"


class _Skip(Exception):
    """A manifest that is deliberately not synced (schema 1)."""


def _describe(exc: BaseException) -> str:
    """An error as the sync report and the logs show it: URLs in it keep host and path only
    (the upstream client's own errors are redacted already; an OSError of a store, say, may
    not be)."""
    return redact_text(f"{type(exc).__name__}: {exc}")


class _Job:
    """One repository's sync: downloads into a content batch, then one call to publish it."""

    def __init__(
        self,
        ingest: Ingest,
        repository: RepositoryRecord,
        remote: Remote,
        policy: SyncPolicy,
        client: RegistryClient,
        limit: asyncio.Semaphore,
        progress: Callable[[SyncProgress], None] | None,
        inflight_blobs: dict[str, asyncio.Future[None]],
        lease: SyncLease,
        capabilities: dict[tuple[str, str], bool] | None = None,
    ) -> None:
        self.ingest = ingest
        self.metadata = ingest.metadata
        self.repository = repository
        self.remote = remote
        self.policy = policy
        self.client = client
        self.limit = limit
        self.lease = lease
        self.name = remote.upstream_name
        self.progress = SyncProgress(repository=repository.name)
        #: The client's counters when this job began (a caller's client may serve several).
        self._stats_at_start = (client.stats.bytes_downloaded, dict(client.stats.requests))
        self._callback = progress
        self._manifests: dict[str, asyncio.Task[None]] = {}
        #: Manifests fetched by tag (a first sync of the tag), waiting to be processed.
        self._fetched: dict[str, FetchedManifest] = {}
        self._blobs = inflight_blobs  # shared by every job of one sync_all
        self._counted: set[str] = set()  # blobs this job has counted (downloaded or reused)
        self._local_store: bool | None = None  # whether blobs are files here (found lazily)
        self.batch = ContentBatch()
        #: Why a digest could not be synced (fetch, parse or a child failed).
        self.reasons: dict[str, str] = {}
        #: Digests deliberately not synced (schema 1), with the reason.
        self.skips: dict[str, str] = {}
        self.failed_tags: dict[str, str] = {}
        #: Tags and digests to sync instead of the filtered upstream list (pull-through).
        self.only: list[str] | None = None
        #: What this event loop learnt of upstreams (referrers API, signature extension).
        self.capabilities: dict[tuple[str, str], bool] = (
            capabilities if capabilities is not None else {}
        )

    @property
    def blobs(self) -> BlobStore:
        """The blob store content goes into."""
        return self.ingest.blobs

    def synced(self, digest: str) -> bool:
        """Whether a manifest is in this sync's content (downloaded now, or stored before)."""
        return digest in self.batch.manifests or digest in self.batch.touch_manifests

    def _tick(self) -> None:
        self.progress.bytes_downloaded = self.bytes_downloaded
        if self._callback is not None:
            self._callback(self.progress)

    @property
    def bytes_downloaded(self) -> int:
        """Body bytes this job received (blobs, manifests, tag lists), retries included."""
        return self.client.stats.bytes_downloaded - self._stats_at_start[0]

    @property
    def requests(self) -> dict[str, int]:
        """Requests this job made, by kind."""
        before = self._stats_at_start[1]
        return {k: n - before.get(k, 0) for k, n in self.client.stats.requests.items()}

    # -- content ---------------------------------------------------------------------------

    def manifest(
        self, digest: Digest, media_type: str | None, *, filtered: bool = False
    ) -> asyncio.Task[None]:
        """The task that downloads one manifest and everything under it; one per digest.
        A ``filtered`` manifest (a platform the filter leaves out) is recorded with its blobs
        left remote."""
        key = str(digest)
        task = self._manifests.get(key)
        if task is None:
            task = asyncio.ensure_future(self._download_manifest(digest, media_type, filtered))
            self._manifests[key] = task
        return task

    async def _ensure_manifests(self, refs: list[tuple[Digest, str | None]]) -> None:
        """Make manifests stored: reuse those already recorded (one query), download the rest.

        A recorded manifest has its whole closure recorded (the store's rule), so it needs
        nothing more. Raises the first failure, after every download has settled.
        """
        if not refs:
            return
        stored = await self._reuse_stored(refs)
        results = await asyncio.gather(
            *(self.manifest(d, mt) for d, mt in refs if str(d) not in stored),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _reuse_stored(self, refs: list[tuple[Digest, str | None]]) -> set[str]:
        """Which of ``refs`` are recorded manifests (one query); each is touched by the batch
        and counted as reused once."""
        stored = await self.metadata.existing_manifests(
            list(dict.fromkeys(str(d) for d, _ in refs))
        )
        for key in stored - self.batch.touch_manifests:
            self.batch.touch_manifests.add(key)
            self.progress.manifests_reused += 1
        return stored

    async def _download_manifest(
        self, digest: Digest, media_type: str | None, filtered: bool = False
    ) -> None:
        key = str(digest)
        try:
            fetched = self._fetched.pop(key, None)
            if fetched is None:
                async with self.limit:
                    fetched = await self.client.get_manifest(self.name, digest, expected=digest)
            manifest = parse_manifest(fetched.raw, fetched.media_type, expected=digest)
            if manifest.is_schema1:
                raise _Skip(f"{digest} is a schema 1 manifest: it is never converted")
            self.progress.manifests_downloaded += 1
            wanted = self._wanted_blobs(manifest)
            later = (
                {str(b.digest) for b in wanted} if filtered else self._left_remote(manifest, wanted)
            )
            fetch = [b for b in wanted if str(b.digest) not in later]
            unrecorded = await self._unrecorded(fetch)
            kept, left = self._split_children(manifest)
            await asyncio.gather(
                self._ensure_manifests([(c.digest, c.media_type) for c in kept]),
                *(self.manifest(c.digest, c.media_type, filtered=True) for c in left),
                *(self.blob(b.digest, b.size, look=str(b.digest) not in unrecorded) for b in fetch),
            )
        except _Skip as exc:
            self.skips.setdefault(key, str(exc))
            raise
        except (OcimirrorError, OSError) as exc:
            self.reasons.setdefault(key, _describe(exc))
            raise
        # Every wanted blob is now verified in storage (by this job or another of the run),
        # or left with the remote (on-demand content, fetched on first request).
        for b in wanted:
            if str(b.digest) in later:
                self.batch.add_remote_blob(str(b.digest), b.size, b.media_type, self.remote.name)
            else:
                self.batch.add_blob(str(b.digest), b.size, b.media_type)
        wanted_digests = {str(b.digest) for b in wanted}
        self.batch.add_manifest(
            *manifest_entry(manifest, keeps=lambda b: str(b.digest) in wanted_digests)
        )
        self._tick()

    def _wanted_blobs(self, manifest: Manifest) -> list[Descriptor]:
        return [
            b
            for b in manifest.blobs()
            if self.remote.include_foreign_layers or MediaType.is_distributable(b.media_type)
        ]

    def _split_children(self, manifest: Manifest) -> tuple[list[Descriptor], list[Descriptor]]:
        """An index's children: those to download, and those a platform filter leaves out
        (their manifests are still recorded, byte for byte, so the index keeps its digest;
        their blobs stay remote). Attestations of a kept child are kept with it."""
        children = list(manifest.children())
        if not self.policy.platforms or not children:
            return children, []
        wanted = [Platform.parse(p) for p in self.policy.platforms]

        def matches(platform: Platform | None) -> bool:
            return platform is None or any(
                w.os == platform.os
                and w.architecture == platform.architecture
                and (w.variant is None or w.variant == platform.variant)
                for w in wanted
            )

        kept = {str(c.digest) for c in children if matches(c.platform)}
        for c in children:
            annotations = c.annotations or {}
            if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
                if annotations.get("vnd.docker.reference.digest") in kept:
                    kept.add(str(c.digest))
                else:
                    kept.discard(str(c.digest))
        return (
            [c for c in children if str(c.digest) in kept],
            [c for c in children if str(c.digest) not in kept],
        )

    def _left_remote(self, manifest: Manifest, wanted: list[Descriptor]) -> set[str]:
        """The layers an ``on_demand`` or ``streamed`` remote leaves upstream until a client
        asks for them (configs always come: clients and exports need them at once)."""
        if self.remote.policy == "immediate" or not isinstance(manifest, ImageManifest):
            return set()
        layers = {str(layer.digest) for layer in manifest.layers}
        return {str(b.digest) for b in wanted if str(b.digest) in layers}

    async def _unrecorded(self, wanted: list[Descriptor]) -> set[str]:
        """The wanted blobs not worth looking for in storage before downloading them.

        On local disk, none: a ``stat`` costs less than a query. Elsewhere (S3: a ``stat`` is a
        HEAD request) those the database has no record of, found with one query; a blob an
        interrupted run stored without recording it is then downloaded again.
        """
        if not wanted:
            return set()
        if self._local_store is None:
            blobs = self.ingest.blobs
            self._local_store = (
                isinstance(blobs, BlobLocalPath) and blobs.local_path(wanted[0].digest) is not None
            )
        if self._local_store:
            return set()
        keys = [str(b.digest) for b in wanted]
        return set(keys) - await self.metadata.known_blob_digests(keys)

    def blob(self, digest: Digest, size: int, *, look: bool = True) -> asyncio.Future[None]:
        """The future of one blob being stored; one per digest across the whole run.

        With ``look``, a copy already in storage is reused instead of downloaded.

        Each job counts each of its blobs once: downloaded by it, or reused (stored already,
        or brought in by another job of the run).
        """
        key = str(digest)
        future = self._blobs.get(key)
        if future is None:
            future = asyncio.ensure_future(self._ensure_blob(digest, size, look=look))
            self._blobs[key] = future
            self._counted.add(key)
        elif key not in self._counted:
            self._counted.add(key)
            future.add_done_callback(self._reused_from_another_job)
        return future

    def _reused_from_another_job(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.progress.blobs_reused += 1

    async def _ensure_blob(self, digest: Digest, size: int, *, look: bool) -> None:
        # Stored already (by any repository, or by an earlier run that crashed before
        # recording it): reuse it.
        if look and await self.ingest.blobs.stat(digest) == size:
            self.progress.blobs_reused += 1
            return
        async with self.limit:
            await self.client.download_blob(self.name, digest, self.ingest.blobs, size=size)
        self.progress.blobs_downloaded += 1
        self._tick()

    # -- the run ---------------------------------------------------------------------------

    async def _resolve(self, tag: str, *, known: bool) -> tuple[str, Digest, str] | None:
        """A tag's digest and media type: with HEAD when the repository has the tag (a re-sync
        usually finds it unchanged, and Docker Hub does not count HEADs), else with the GET
        its manifest needs anyway (kept for :meth:`_download_manifest`)."""
        try:
            async with self.limit:
                if known:
                    ref = await self.client.resolve(self.name, tag)
                    return tag, ref.digest, ref.media_type
                fetched = await self.client.get_manifest(self.name, tag)
        except (OcimirrorError, OSError) as exc:
            log.error("%s: tag %s failed: %s", self.repository.name, tag, _describe(exc))
            self.failed_tags[tag] = _describe(exc)
            return None
        self._fetched.setdefault(str(fetched.digest), fetched)
        return tag, fetched.digest, fetched.media_type

    async def resolve_many(self, tags: list[str], local: set[str]) -> list[tuple[str, Digest, str]]:
        """Resolve ``tags`` (see :meth:`_resolve`); those that fail are noted and left out."""
        results = await asyncio.gather(*(self._resolve(t, known=t in local) for t in tags))
        return [r for r in results if r]

    async def settle_more(self, roots: list[tuple[Digest, str | None]]) -> None:
        """:meth:`_settle` for manifests found after the tags (companions, referrers)."""
        self.progress.tags_total += len(roots)
        await self._settle(roots)

    async def _local_tags(self) -> set[str]:
        """The tags of the repository's latest version (a hint: HEAD those, GET the others)."""
        record = self.repository
        if record.latest_version == 0:
            return set()
        tags = await self.metadata.list_tags(record.name, record.latest_version)
        return {name for name, _ in tags}

    async def _settle(self, roots: list[tuple[Digest, str | None]]) -> None:
        """Download every root and what is under it; a failure is noted against the digest it
        leaves unrecorded. The publish step decides what is complete from what is recorded,
        never from which tasks ran."""
        try:
            stored = await self._reuse_stored(roots)
        except (OcimirrorError, OSError) as exc:
            log.error(
                "%s: looking up stored manifests failed: %s", self.repository.name, _describe(exc)
            )
            for digest, _ in roots:
                self.reasons.setdefault(str(digest), _describe(exc))
            return
        if any(str(d) not in stored for d, _ in roots) and self.only is None:
            await self.lease.take()  # something to download: RepositoryBusy if another has it

        async def one(digest: Digest, media_type: str | None) -> None:
            try:
                if str(digest) not in stored:
                    await self.manifest(digest, media_type)
            except (_Skip, OcimirrorError, OSError):
                pass  # noted against the digest by the task that failed
            finally:
                self.progress.tags_done += 1
                self._tick()

        await asyncio.gather(*(one(d, mt) for d, mt in roots))

    async def run(self) -> tuple[Published, list[dict[str, str]], int]:
        if self.only is not None:
            # Named tags and digests only (a pull-through fill): no listing, no companions,
            # and no lease. A fill only adds, and its version is built on the latest one
            # under the repository's row lock, so fills of one repository in several
            # processes (and a sync beside them) all land; at worst two processes fetch the
            # same manifest.
            companions: dict[str, tuple[Digest, str]] = {}
            selected = sorted(r for r in self.only if ":" not in r)
            digests = [str(Digest.parse(r)) for r in self.only if ":" in r]
        else:
            upstream_tags = await self.client.list_tags(self.name)
            # Tags that belong to another manifest (cosign, referrers tag schema) come with it.
            companions = companion_tags(upstream_tags)
            selected = sorted(
                t for t in upstream_tags if t not in companions and self.remote.wants_tag(t)
            )
            digests = [str(d) for d in self.remote.include_digests]
            if self.policy.mirror and not self.policy.allow_empty and not selected + digests:
                self._refuse_empty(upstream_tags, companions)
        self.progress.tags_total = len(selected) + len(digests)
        self.progress.phase = "resolving"
        self._tick()
        # A fill is asked for what is missing or has moved: it GETs each tag at once.
        local = await self._local_tags() if self.only is None else set()
        resolved = await self.resolve_many(selected, local)
        self.progress.phase = "downloading"
        self._tick()
        roots: list[tuple[Digest, str | None]] = [(d, mt) for _, d, mt in resolved]
        roots += [(Digest.parse(d), None) for d in digests]
        await self._settle(roots)
        tagged = {tag: str(digest) for tag, digest, _ in resolved}
        attached = await Attachments(self).run(tagged, digests, companions, local)
        self._fetched.clear()  # fetched by tag, but stored already (no task needed them)
        tagged.update(attached.tags)
        skipped = [
            {"tag": t, "reason": self.skips[d]} for t, d in tagged.items() if d in self.skips
        ]
        skipped += [{"digest": d, "reason": self.skips[d]} for d in digests if d in self.skips]
        skipped += [
            {"tag" if n in tagged else "digest": n, "reason": r}
            for n, r in attached.unsigned.items()
        ]
        self.failed_tags.update({t: r for t, r in attached.refused.items() if t in tagged})
        skipped += [{"digest": d, "reason": r} for d, r in attached.refused.items() if d in digests]
        left_out = set(attached.unsigned) | set(attached.refused)

        self.progress.phase = "publishing"
        self._tick()
        published = await self.ingest.publish(
            self.repository.name,
            self.batch,
            tags={t: d for t, d in tagged.items() if d not in self.skips and t not in left_out},
            untagged=[
                *(d for d in digests if d not in self.skips and d not in left_out),
                *attached.untagged,
            ],
            mirror=self.policy.mirror,
            failed_tags=self.failed_tags,
            reasons=self.reasons,
            lease=self.lease.take if self.only is None else None,
            mark_mirror=not self.repository.mirror,
            signatures=attached.signatures,
            allow_empty=self.policy.allow_empty,
        )
        return published, skipped, len(published.tags)

    def _refuse_empty(self, upstream_tags: list[str], companions: Mapping[str, object]) -> None:
        """A mirror sync whose filters select nothing upstream would empty the repository."""
        remote = self.remote
        offered = [t for t in upstream_tags if t not in companions]
        if not offered:
            return  # nothing upstream: publishing checks that no tag would be lost
        sample = ", ".join(offered[:5]) + (", ..." if len(offered) > 5 else "")
        raise EmptyMirror(
            f"repository {self.repository.name!r}: the filters of remote {remote.name!r} "
            f"(include_tags={list(remote.include_tags)!r}, "
            f"exclude_tags={list(remote.exclude_tags)!r}) match none of the "
            f"{len(offered)} tags of {remote.upstream_name!r} ({sample}); a mirror sync "
            "would empty the repository, so nothing was published "
            "(allow_empty=True or --allow-empty does it on purpose)"
        )


class SyncStore(IngestStore, RemoteStore, Protocol):
    """What a sync needs of the metadata store: content, versions, leases and remotes."""


async def sync_repository(
    metadata: SyncStore,
    blobs: BlobStore,
    repository: str,
    remote: Remote | str | None = None,
    *,
    policy: SyncPolicy | None = None,
    client: RegistryClient | None = None,
    progress: Callable[[SyncProgress], None] | None = None,
    limit: asyncio.Semaphore | None = None,
    connections: SharedConnections | None = None,
    only: list[str] | None = None,
    _inflight: dict[str, asyncio.Future[None]] | None = None,
) -> SyncResult:
    """Sync one repository from a remote (default: the repository's own remote).

    A sync is a job over the stores, an upstream client and a policy. ``client`` lets a caller
    supply the upstream client (tests, custom transports); ``limit`` shares a download budget
    between several syncs, ``connections`` their upstream connections. ``only`` names the tags
    and digests to sync instead of listing the upstream's (a pull-through cache's fill); such
    a sync only adds, and takes no lease (see :mod:`ocimirror.leases`). Raises LeaseLost when
    another process took the repository's lease over: nothing is published then.
    """
    started = time.monotonic()
    policy = policy or SyncPolicy()
    if only is not None and policy.mirror:
        # Mirror mode removes what the upstream's list lacks; a sync of named tags has no
        # list, and takes no lease.
        raise InvalidError("a sync of named tags (only=) adds; it cannot run in mirror mode")
    record = await metadata.get_repository(repository)
    if remote is None:
        if record.remote is None:
            raise InvalidError(f"repository {repository!r} has no remote: name one to sync from")
        remote = record.remote
    if isinstance(remote, str):
        remote = Remote.from_json((await metadata.get_remote(remote)).fields)
    policy = policy.with_remote(remote)
    lease = SyncLease(metadata, repository)
    own_client = client is None
    if client is None:
        client = connections.client(remote) if connections else RegistryClient.from_remote(remote)
    job = _Job(
        Ingest(metadata, blobs),
        record,
        remote,
        policy,
        client,
        limit or asyncio.Semaphore(remote.download_concurrency),
        progress,
        {} if _inflight is None else _inflight,
        lease,
        connections.capabilities if connections is not None else None,
    )
    job.only = None if only is None else list(only)
    running = asyncio.ensure_future(job.run())
    lease.job = running
    try:
        published, skipped, tags = await running
    except asyncio.CancelledError:
        if lease.lost:
            raise LeaseLost(
                f"repository {repository!r}: the sync lost its lease to another process; "
                "nothing was published"
            ) from None
        raise
    finally:
        running.cancel()
        if own_client:
            await client.aclose()
        await lease.release()
    p = job.progress
    p.phase = "done"
    job._tick()
    result = SyncResult(
        repository=repository,
        version=RepositoryVersion.from_record(published.version),
        created=published.created,
        tags=tags,
        manifests_downloaded=p.manifests_downloaded,
        manifests_reused=p.manifests_reused,
        blobs_downloaded=p.blobs_downloaded,
        blobs_reused=p.blobs_reused,
        bytes_downloaded=job.bytes_downloaded,
        requests=job.requests,
        duration=time.monotonic() - started,
        skipped=tuple(skipped),
        dropped=tuple(d.to_json() for d in published.dropped),
    )
    log.info(
        "%s: synced %d tags -> version %d (%s, %s)",
        repository,
        tags,
        result.version.number,
        "new" if result.created else "unchanged",
        result.status,
    )
    return result


async def sync_all(
    metadata: SyncStore,
    blobs: BlobStore,
    repositories: Iterable[str] | None = None,
    *,
    policy: SyncPolicy | None = None,
    concurrency: int = 32,
    progress: Callable[[SyncProgress], None] | None = None,
) -> dict[str, SyncResult | BaseException]:
    """Sync many repositories (default: every one with a remote) concurrently in one process.

    They share one download budget of ``concurrency`` and the connections to each upstream;
    :func:`lanes` of them run at a time (each lane takes the next name when its sync ends);
    each produces its own version; one failure does not stop the others and is returned in
    place of its result.
    """
    if repositories is None:
        names = [r.name for r in await metadata.list_repositories() if r.remote is not None]
    else:
        names = list(repositories)
    limit = asyncio.Semaphore(concurrency)
    inflight: dict[str, asyncio.Future[None]] = {}
    connections = SharedConnections()

    async def one(name: str) -> SyncResult | BaseException:
        try:
            return await sync_repository(
                metadata,
                blobs,
                name,
                policy=policy,
                progress=progress,
                limit=limit,
                connections=connections,
                _inflight=inflight,
            )
        except (OcimirrorError, OSError) as exc:
            log.error("%s: sync failed: %s", name, _describe(exc))
            return exc

    todo = deque(names)
    results: dict[str, SyncResult | BaseException] = {}

    async def lane() -> None:
        while todo:
            name = todo.popleft()
            results[name] = await one(name)

    try:
        await asyncio.gather(*(lane() for _ in range(min(len(names), lanes(concurrency)))))
    finally:
        await connections.aclose()
    return {name: results[name] for name in names}


def lanes(concurrency: int) -> int:
    """How many repositories one event loop syncs at once: enough to keep a download budget
    of ``concurrency`` busy while some of them list tags or publish, and no more (every sync
    started early only interleaves its reads with the others')."""
    return max(2, concurrency // 2)
