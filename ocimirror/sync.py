"""Sync: bring an upstream repository's images into an ocimirror repository.

The plan of one sync:

1. Take the repository's lease (a row in the database, so two processes never sync the same
   repository at once; a second sync fails clearly with RepositoryBusy).
2. List the upstream tags and keep those the remote's include/exclude patterns select.
3. Resolve each tag with HEAD (cheap, and not counted against Docker Hub's pull limit). A
   manifest whose digest is already stored is not downloaded again.
4. For new manifests: GET (digest verified), then their children (indexes, recursively) and
   blobs. Blobs stream straight into the blob store, verified; each digest is fetched once per
   sync even when many images share it, and not at all when it is already stored (in any
   repository).
5. Record all new content in one transaction, then build the new version in another:
   additive (``mirror=False``) adds the selected set; mirror (``mirror=True``) makes the
   version hold exactly it. Nothing changed, no new version.

Downloads run concurrently under a semaphore (``download_concurrency``) that several syncs in
one process can share (``sync_all``). A tag whose manifest cannot be fetched or parsed fails
alone and is reported; schema 1 manifests are skipped with a warning. A crash at any point
leaves the repository at its last version; blobs already stored are reused by the rerun.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from ocimirror.backends.metadata import ManifestRecord
from ocimirror.core.digest import Digest
from ocimirror.core.manifest import Manifest, parse_manifest
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import InvalidError, NotFound, OcimirrorError, UpstreamError
from ocimirror.remote import Remote, SyncPolicy
from ocimirror.upstream import RegistryClient
from ocimirror.versions import RepositoryVersion

if TYPE_CHECKING:
    from ocimirror.registry import AsyncRegistry
    from ocimirror.repository import AsyncRepository

__all__ = ["SyncProgress", "SyncResult", "sync_all", "sync_repository"]

log = logging.getLogger("ocimirror.sync")

#: How long a sync's lease lasts without renewal; it is renewed at a third of that.
LEASE_TTL = 90.0


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
    bytes_downloaded: int = 0
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
    failed: tuple[dict[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every selected tag was synced (skipped schema 1 tags do not count)."""
        return not self.failed

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
            "skipped": list(self.skipped),
            "failed": list(self.failed),
        }
        return data


class _Skip(Exception):
    """A manifest that is deliberately not synced (schema 1)."""


class _Job:
    """One repository's sync: downloads, then the version."""

    def __init__(
        self,
        registry: AsyncRegistry,
        repo: AsyncRepository,
        remote: Remote,
        policy: SyncPolicy,
        client: RegistryClient,
        limit: asyncio.Semaphore,
        progress: Callable[[SyncProgress], None] | None,
        inflight_blobs: dict[str, asyncio.Future[None]],
    ) -> None:
        self.registry = registry
        self.repo = repo
        self.remote = remote
        self.policy = policy
        self.client = client
        self.limit = limit
        self.name = remote.upstream_name
        self.progress = SyncProgress(repository=repo.name)
        self._callback = progress
        self._manifests: dict[str, asyncio.Task[None]] = {}
        self._blobs = inflight_blobs  # shared by every job of one sync_all
        self.new_blobs: list[tuple[str, int, str | None]] = []
        self.new_manifests: list[
            tuple[ManifestRecord, list[tuple[str, str, dict[str, Any] | None]]]
        ] = []
        self._reused: set[str] = set()
        self.skipped: list[dict[str, str]] = []
        self.failed: list[dict[str, str]] = []

    def _tick(self) -> None:
        if self._callback is not None:
            self._callback(self.progress)

    # -- content ---------------------------------------------------------------------------

    def manifest(self, digest: Digest, media_type: str | None) -> asyncio.Task[None]:
        """The task that downloads one manifest and everything under it; one per digest."""
        key = str(digest)
        task = self._manifests.get(key)
        if task is None:
            task = asyncio.ensure_future(self._download_manifest(digest, media_type))
            self._manifests[key] = task
        return task

    async def _ensure_manifests(self, refs: list[tuple[Digest, str | None]]) -> None:
        """Make manifests stored: reuse those already stored (one query), download the rest."""
        if not refs:
            return
        keys = list(dict.fromkeys(str(d) for d, _ in refs))
        stored = await self.registry.metadata.existing_manifests(keys)
        for key in stored:
            if key not in self._reused:
                self._reused.add(key)
                self.progress.manifests_reused += 1
        await asyncio.gather(*(self.manifest(d, mt) for d, mt in refs if str(d) not in stored))

    async def _download_manifest(self, digest: Digest, media_type: str | None) -> None:
        key = str(digest)
        async with self.limit:
            fetched = await self.client.get_manifest(self.name, digest, expected=digest)
        manifest = parse_manifest(fetched.raw, fetched.media_type, expected=digest)
        if manifest.is_schema1:
            raise _Skip(f"{digest} is a schema 1 manifest: it is never converted")
        self.progress.manifests_downloaded += 1
        wanted = self._wanted_blobs(manifest)
        await asyncio.gather(
            self._ensure_manifests([(c.digest, c.media_type) for c in manifest.children()]),
            *(self.blob(b.digest, b.size, b.media_type) for b in wanted),
        )
        references: list[tuple[str, str, dict[str, Any] | None]] = []
        for child in manifest.children():
            platform = child.platform.to_json() if child.platform else None
            references.append((str(child.digest), "manifest", platform))
        wanted_digests = {str(b.digest) for b in wanted}
        for blob in manifest.blobs():
            kind = "blob" if str(blob.digest) in wanted_digests else "foreign"
            references.append((str(blob.digest), kind, None))
        self.new_manifests.append(
            (
                ManifestRecord(
                    digest=key,
                    media_type=manifest.media_type,
                    data=manifest.raw,
                    artifact_type=manifest.artifact_type,
                    subject=str(manifest.subject.digest) if manifest.subject else None,
                ),
                references,
            )
        )
        self._tick()

    def _wanted_blobs(self, manifest: Manifest) -> list[Any]:
        return [
            b
            for b in manifest.blobs()
            if self.remote.include_foreign_layers or MediaType.is_distributable(b.media_type)
        ]

    def blob(self, digest: Digest, size: int, media_type: str) -> asyncio.Future[None]:
        """The future of one blob being stored; one per digest across the whole run."""
        key = str(digest)
        future = self._blobs.get(key)
        if future is None:
            future = asyncio.ensure_future(self._ensure_blob(digest, size, media_type))
            self._blobs[key] = future
        return future

    async def _ensure_blob(self, digest: Digest, size: int, media_type: str) -> None:
        # Stored already (by any repository, or by an earlier run that crashed before
        # recording it): reuse it.
        if await self.registry.blobs.stat(digest) == size:
            self.progress.blobs_reused += 1
            self.new_blobs.append((str(digest), size, media_type))
            return
        async with self.limit:
            await self.client.download_blob(self.name, digest, self.registry.blobs, size=size)
        # The client's counter is shared by concurrent downloads; a blob's own share is its
        # (verified) size. The result reports the client's exact total, retries included.
        self.progress.bytes_downloaded += size
        self.progress.blobs_downloaded += 1
        self.new_blobs.append((str(digest), size, media_type))
        self._tick()

    # -- the run ---------------------------------------------------------------------------

    def _fail(self, what: dict[str, str], exc: BaseException) -> None:
        if isinstance(exc, _Skip):
            log.warning("%s: skipping %s: %s", self.repo.name, what, exc)
            self.skipped.append({**what, "reason": str(exc)})
        else:
            log.error("%s: %s failed: %s", self.repo.name, what, exc)
            self.failed.append({**what, "error": f"{type(exc).__name__}: {exc}"})

    async def _resolve(self, tag: str) -> tuple[str, Digest, str] | None:
        try:
            async with self.limit:
                ref = await self.client.resolve(self.name, tag)
        except (OcimirrorError, OSError) as exc:
            self._fail({"tag": tag}, exc)
            return None
        return tag, ref.digest, ref.media_type

    async def _settle(self, what: dict[str, str], digest: Digest) -> bool:
        """Wait for one top-level manifest; False (and reported) when it failed."""
        task = self._manifests.get(str(digest))
        try:
            if task is not None:
                await task
            return True
        except (_Skip, OcimirrorError, OSError) as exc:
            self._fail(what, exc)
            return False
        finally:
            self.progress.tags_done += 1
            self._tick()

    async def run(self) -> tuple[RepositoryVersion, bool, int]:
        upstream_tags = await self.client.list_tags(self.name)
        selected = sorted(t for t in upstream_tags if self.remote.wants_tag(t))
        digests = list(self.remote.include_digests)
        self.progress.tags_total = len(selected) + len(digests)
        self.progress.phase = "resolving"
        self._tick()
        # HEAD every tag (cheap; not counted against Docker Hub's pull limit).
        resolved = [r for r in await asyncio.gather(*map(self._resolve, selected)) if r]
        self.progress.phase = "downloading"
        self._tick()
        roots: list[tuple[Digest, str | None]] = [(d, mt) for _, d, mt in resolved]
        roots += [(d, None) for d in digests]
        # Failures surface per tag in _settle, so collect them here without raising.
        await asyncio.gather(self._ensure_manifests(roots), return_exceptions=True)
        tagged: dict[str, str] = {}
        for tag, digest, _ in resolved:
            if await self._settle({"tag": tag}, digest):
                tagged[tag] = str(digest)
        untagged = [str(d) for d in digests if await self._settle({"digest": str(d)}, d)]

        self.progress.phase = "publishing"
        self._tick()
        await self.registry.metadata.record_content(
            blobs=self.new_blobs,
            manifests=self.new_manifests,
            touch_manifests=sorted(self._reused),
        )
        if self.policy.mirror:
            version, created = await self._publish_mirror(tagged, untagged)
        elif (unchanged := await self._unchanged(tagged, untagged)) is not None:
            version, created = unchanged, False
        else:
            version, created = await self._publish_additive(tagged, untagged)
        if not self.repo.mirror:
            await self.repo.update(mirror=True)
        return version, created, len(tagged)

    async def _unchanged(
        self, tagged: dict[str, str], untagged: list[str]
    ) -> RepositoryVersion | None:
        """The latest version when an additive sync would not change it (a no-op re-sync),
        found with reads only; None when a new version must be built."""
        if self.new_manifests:
            return None
        meta = self.registry.metadata
        latest = await meta.get_version(self.repo.name)
        current = dict(await meta.list_tags(self.repo.name, latest.number))
        if any(current.get(tag) != digest for tag, digest in tagged.items()):
            return None
        for digest in untagged:
            if not await meta.has_content(
                self.repo.name, latest.number, "container.manifest", digest
            ):
                return None
        return RepositoryVersion.from_record(latest)

    async def _publish_additive(
        self, tagged: dict[str, str], untagged: list[str]
    ) -> tuple[RepositoryVersion, bool]:
        meta = self.registry.metadata
        before = self.repo.latest_version_number
        async with meta.new_version(self.repo.name) as builder:
            manifests, blobs = await builder.closure_many([*tagged.values(), *untagged])
            await builder.add_many("container.blob", dict.fromkeys(sorted(blobs)))
            await builder.add_many("container.manifest", dict.fromkeys(sorted(manifests)))
            await builder.add_many("container.tag", tagged)
        assert builder.result is not None
        return RepositoryVersion.from_record(builder.result), builder.result.number != before

    async def _publish_mirror(
        self, tagged: dict[str, str], untagged: list[str]
    ) -> tuple[RepositoryVersion, bool]:
        meta = self.registry.metadata
        before = self.repo.latest_version_number
        failed_tags = {f["tag"] for f in self.failed if "tag" in f}
        async with meta.new_version(self.repo.name) as builder:
            current_tags = await builder.all_tags()
            # A tag that failed this time keeps its content: a transient error never deletes.
            keep = {t: d for t, d in current_tags.items() if t in failed_tags}
            desired_tags = {**keep, **tagged}
            manifests, blobs = await builder.closure_many([*desired_tags.values(), *untagged])
            await builder.remove_many(
                "container.tag", [t for t in current_tags if t not in desired_tags]
            )
            have_m = await builder.all_keys("container.manifest")
            await builder.remove_many("container.manifest", sorted(have_m - manifests))
            await builder.add_many("container.manifest", dict.fromkeys(sorted(manifests - have_m)))
            have_b = await builder.all_keys("container.blob")
            await builder.remove_many("container.blob", sorted(have_b - blobs))
            await builder.add_many("container.blob", dict.fromkeys(sorted(blobs - have_b)))
            signatures = await builder.signature_targets()
            await builder.remove_many(
                "container.signature",
                sorted(s for s, m in signatures.items() if m not in manifests),
            )
            await builder.add_many("container.tag", desired_tags)
        assert builder.result is not None
        return RepositoryVersion.from_record(builder.result), builder.result.number != before


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _is_stale(holder: str) -> bool:
    """Whether a lease holder is a process on this host that no longer runs."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def _renew(registry: AsyncRegistry, repository: str, holder: str) -> None:
    while True:
        await asyncio.sleep(LEASE_TTL / 3)
        if not await registry.metadata.renew_lease(repository, holder=holder, ttl=LEASE_TTL):
            log.error("%s: lost the sync lease", repository)
            return


async def sync_repository(
    registry: AsyncRegistry,
    repository: str,
    remote: Remote | str | None = None,
    *,
    policy: SyncPolicy | None = None,
    client: RegistryClient | None = None,
    progress: Callable[[SyncProgress], None] | None = None,
    limit: asyncio.Semaphore | None = None,
    _inflight: dict[str, asyncio.Future[None]] | None = None,
) -> SyncResult:
    """Sync one repository from a remote (default: the repository's own remote).

    ``client`` lets a caller supply the upstream client (tests, custom transports);
    ``limit`` shares a download budget between several syncs.
    """
    started = time.monotonic()
    policy = policy or SyncPolicy()
    repo = await registry.repository(repository)
    if remote is None:
        if repo.remote is None:
            raise InvalidError(f"repository {repository!r} has no remote: name one to sync from")
        remote = repo.remote
    if isinstance(remote, str):
        remote = await registry.remote(remote)
    if remote.policy != "immediate":
        raise InvalidError(f"remote {remote.name!r}: only the 'immediate' policy is supported")
    holder = _holder()
    await registry.metadata.acquire_lease(
        repository, holder=holder, purpose="sync", ttl=LEASE_TTL, is_stale=_is_stale
    )
    renewer = asyncio.ensure_future(_renew(registry, repository, holder))
    own_client = client is None
    client = client or RegistryClient.from_remote(remote)
    try:
        job = _Job(
            registry,
            repo,
            remote,
            policy,
            client,
            limit or asyncio.Semaphore(remote.download_concurrency),
            progress,
            {} if _inflight is None else _inflight,
        )
        version, created, tags = await job.run()
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        if own_client:
            await client.aclose()
        await registry.metadata.release_lease(repository, holder=holder)
    p = job.progress
    result = SyncResult(
        repository=repository,
        version=version,
        created=created,
        tags=tags,
        manifests_downloaded=p.manifests_downloaded,
        manifests_reused=p.manifests_reused,
        blobs_downloaded=p.blobs_downloaded,
        blobs_reused=p.blobs_reused,
        bytes_downloaded=client.stats.bytes_downloaded,
        requests=dict(client.stats.requests),
        duration=time.monotonic() - started,
        skipped=tuple(job.skipped),
        failed=tuple(job.failed),
    )
    log.info(
        "%s: synced %d tags -> version %d (%s)",
        repository,
        tags,
        version.number,
        "new" if created else "unchanged",
    )
    return result


async def sync_all(
    registry: AsyncRegistry,
    repositories: Iterable[str] | None = None,
    *,
    policy: SyncPolicy | None = None,
    concurrency: int = 32,
    progress: Callable[[SyncProgress], None] | None = None,
) -> dict[str, SyncResult | BaseException]:
    """Sync many repositories (default: every one with a remote) concurrently in one process.

    They share one download budget of ``concurrency``; each produces its own version; one
    failure does not stop the others and is returned in place of its result.
    """
    if repositories is None:
        names = [r.name for r in await registry.repositories() if r.remote is not None]
    else:
        names = list(repositories)
    limit = asyncio.Semaphore(concurrency)
    inflight: dict[str, asyncio.Future[None]] = {}

    async def one(name: str) -> SyncResult | BaseException:
        try:
            return await sync_repository(
                registry, name, policy=policy, progress=progress, limit=limit, _inflight=inflight
            )
        except (OcimirrorError, OSError, UpstreamError, NotFound) as exc:
            log.error("%s: sync failed: %s", name, exc)
            return exc

    results = await asyncio.gather(*(one(n) for n in names))
    return dict(zip(names, results, strict=True))
