"""The async entry point: a registry opened over a metadata store and a blob store."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from ocimirror import _check as check
from ocimirror.backends import open_stores
from ocimirror.backends.blobs import BlobLister, BlobStore
from ocimirror.backends.metadata import MetadataStore, UserRecord
from ocimirror.config import Config
from ocimirror.core.digest import Digest
from ocimirror.core.manifest import Manifest, parse_manifest
from ocimirror.core.reference import validate_repository_name
from ocimirror.distribution import Distribution
from ocimirror.errors import (
    AlreadyExists,
    DigestMismatch,
    DistributionNotFound,
    InvalidError,
    InvalidName,
    OcimirrorError,
)
from ocimirror.ingest import Ingest
from ocimirror.push import Push
from ocimirror.remote import Remote, SyncPolicy
from ocimirror.repository import AsyncRepository, check_retain, with_shortcuts
from ocimirror.users import Users
from ocimirror.versions import RepositoryVersion

if TYPE_CHECKING:
    # A sync needs the upstream client (httpx): imported when a sync runs, not on open.
    from ocimirror.ondemand import OnDemand
    from ocimirror.pullthrough import PullThrough, PullThroughDistribution, PullThroughRemote
    from ocimirror.sync import SyncProgress, SyncResult

__all__ = ["AsyncRegistry", "CleanupReport", "RepairReport"]

log = logging.getLogger("ocimirror")


@attrs.frozen(kw_only=True)
class CleanupReport:
    """What an orphan cleanup removed."""

    manifests: int
    blobs: int
    signatures: int
    stray_files: int
    abandoned_uploads: int

    def to_json(self) -> dict[str, int]:
        """The counts as JSON."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class RepairReport:
    """What a repair found: blobs checked, missing from storage, and corrupt (now removed)."""

    checked: int
    missing: tuple[str, ...]
    corrupt: tuple[str, ...]
    #: On-demand content not fetched yet (its remote has it): expected, not a fault.
    remote: int = 0
    #: Corrupt or missing blobs fetched again from their remote.
    refetched: tuple[str, ...] = ()
    manifests_checked: int
    corrupt_manifests: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether everything was intact."""
        return not (self.missing or self.corrupt or self.corrupt_manifests)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON."""
        data = attrs.asdict(self)
        data["ok"] = self.ok
        return data


class AsyncRegistry:
    """Repositories, remotes and distributions over one metadata store and one blob store.

    Open it with :meth:`open` (from URLs, the environment, or the home directory) or build it
    from stores you made; use it as an async context manager. Constructors do no I/O.
    """

    def __init__(
        self, metadata: MetadataStore, blobs: BlobStore, *, config: Config | None = None
    ) -> None:
        self.metadata = metadata
        self.blobs = blobs
        self.config = config
        self._ingest = Ingest(metadata, blobs)
        #: Pushes from registry clients (what the registry API's push endpoints call).
        self.push = Push(metadata, blobs)
        self._users = Users(metadata)
        self._on_demand: OnDemand | None = None
        self._pull_through: PullThrough | None = None

    @property
    def on_demand(self) -> OnDemand:
        """Fetches remote content (on-demand and streamed layers) for this process; one per
        registry, so concurrent requests for one blob share one download."""
        if self._on_demand is None:
            from ocimirror.ondemand import COOLDOWN_ENV, DEFAULT_COOLDOWN, OnDemand

            spool = self.config.home / "spool" if self.config is not None else None
            cooldown = os.environ.get(COOLDOWN_ENV)
            self._on_demand = OnDemand(
                self.metadata,
                self.blobs,
                spool=spool,
                cooldown=float(cooldown) if cooldown else DEFAULT_COOLDOWN,
            )
        return self._on_demand

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"<{name} metadata={self.metadata.url!r} storage={self.blobs.url!r}>"

    @classmethod
    async def open(
        cls,
        *,
        home: str | os.PathLike[str] | None = None,
        database_url: str | None = None,
        storage_url: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> AsyncRegistry:
        """Open the backends named by the arguments, ``OCIMIRROR_*`` variables, or the home.

        With nothing given: SQLite and files under ``$OCIMIRROR_HOME`` (or the user's data
        directory).
        """
        config = Config.resolve(
            home=home,
            database_url=database_url,
            storage_url=storage_url,
            storage_options=storage_options,
        )
        config.prepare()
        metadata, blobs = await open_stores(
            config.database_url, config.storage_url, config.storage_options
        )
        return cls(metadata, blobs, config=config)

    async def close(self) -> None:
        """Close both stores (after downloads of remote content in flight)."""
        if self._on_demand is not None:
            await self._on_demand.close()
        if self._pull_through is not None:
            await self._pull_through.close()
        await self.metadata.close()
        await self.blobs.close()

    async def __aenter__(self) -> AsyncRegistry:
        await self.metadata.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- repositories ------------------------------------------------------------------------

    async def create_repository(
        self,
        name: str,
        *,
        description: str | None = None,
        retain_repo_versions: int | None = None,
        remote: Remote | str | None = None,
    ) -> AsyncRepository:
        """Create a repository (with its empty version 0); ``remote`` (a stored
        :class:`Remote` or its name) is what its syncs use by default."""
        _check_repository_name(name)
        check_retain(retain_repo_versions)
        description = check.optional_text(description, "description")
        if remote is not None:
            remote = check.name_of(remote, "remote", (Remote,))
            await self.metadata.get_remote(remote)
        record = await self.metadata.create_repository(
            name,
            description=description,
            retain_repo_versions=retain_repo_versions,
            remote=remote,
        )
        return AsyncRepository(self.metadata, self.blobs, record)

    async def repository(self, name: str) -> AsyncRepository:
        """The repository named ``name``; RepositoryNotFound otherwise."""
        record = await self.metadata.get_repository(check.text(name, "repository name"))
        return AsyncRepository(self.metadata, self.blobs, record)

    async def repositories(self) -> list[AsyncRepository]:
        """Every repository, by name."""
        records = await self.metadata.list_repositories()
        return [AsyncRepository(self.metadata, self.blobs, r) for r in records]

    async def delete_repository(self, name: str) -> None:
        """Delete a repository and its versions; its content becomes orphan."""
        await self.metadata.delete_repository(check.text(name, "repository name"))

    # -- remotes -----------------------------------------------------------------------------

    async def create_remote(self, remote: Remote | None = None, **fields: Any) -> Remote:
        """Store a remote (give a :class:`Remote` or its fields)."""
        if remote is None:
            remote = check.build(Remote, fields)
        elif not isinstance(remote, Remote) or fields:
            raise InvalidError(
                f"create_remote takes a Remote or its fields, got {type(remote).__name__}"
                + (f" and fields {sorted(fields)}" if fields else "")
            )
        await self.metadata.create_remote(remote.name, remote.to_json(secrets=True))
        return remote

    async def remote(self, name: str) -> Remote:
        """The remote named ``name``; RemoteNotFound otherwise."""
        record = await self.metadata.get_remote(check.text(name, "remote name"))
        return Remote.from_json(record.fields)

    async def remotes(self) -> list[Remote]:
        """Every remote, by name."""
        return [Remote.from_json(r.fields) for r in await self.metadata.list_remotes()]

    async def update_remote(self, name: str, **changes: Any) -> Remote:
        """Change some fields of a remote (validated as a whole)."""
        check.fields_of(Remote, changes)
        current = await self.remote(name)
        updated = attrs.evolve(current, **changes)
        await self.metadata.update_remote(name, updated.to_json(secrets=True))
        return updated

    async def delete_remote(self, name: str) -> None:
        """Delete a remote."""
        await self.metadata.delete_remote(check.text(name, "remote name"))

    # -- distributions -----------------------------------------------------------------------

    async def create_distribution(
        self,
        name: str,
        *,
        base_path: str,
        repository: AsyncRepository | str | None = None,
        repository_version: int | RepositoryVersion | None = None,
        private: bool = False,
        description: str | None = None,
    ) -> Distribution:
        """Serve a repository (its latest version, or one pinned version) at ``base_path``.

        ``repository`` is a repository or its name; ``repository_version`` a version or its
        number (a pinned distribution: how a rollback is done).
        """
        name = check.text(name, "distribution name")
        _check_base_path(base_path)
        fields = _distribution_fields(
            repository=repository,
            repository_version=repository_version,
            private=private,
            description=description,
        )
        if fields["repository_version"] is not None and fields["repository"] is None:
            raise InvalidError("a pinned repository_version needs its repository")
        record = await self.metadata.create_distribution(name, base_path, **fields)
        return Distribution.from_record(record)

    async def distribution(
        self, name: str | None = None, *, base_path: str | None = None
    ) -> Distribution:
        """A distribution by name or base path."""
        if name is not None:
            check.text(name, "distribution name")
        if base_path is not None:
            check.text(base_path, "base_path")
        return Distribution.from_record(
            await self.metadata.get_distribution(name, base_path=base_path)
        )

    async def distributions(self) -> list[Distribution]:
        """Every distribution, by name."""
        return [Distribution.from_record(r) for r in await self.metadata.list_distributions()]

    async def update_distribution(self, name: str, **changes: Any) -> Distribution:
        """Change some fields of a distribution: ``repository_version=N`` pins version N (a
        rollback), ``repository_version=None`` follows the latest version again."""
        check.fields_of(Distribution, changes)
        if "name" in changes:
            raise InvalidError("a distribution keeps its name; create another one to rename")
        if "base_path" in changes:
            _check_base_path(changes["base_path"])
        changes.update(
            _distribution_fields(**{k: v for k, v in changes.items() if k != "base_path"})
        )
        name = check.text(name, "distribution name")
        if changes.get("repository_version") is not None and "repository" not in changes:
            # Pinning the repository it serves: name it, so the store checks the version.
            changes["repository"] = (await self.distribution(name)).repository
        return Distribution.from_record(await self.metadata.update_distribution(name, **changes))

    async def delete_distribution(self, name: str) -> None:
        """Delete a distribution."""
        await self.metadata.delete_distribution(check.text(name, "distribution name"))

    # -- pull-through caches -------------------------------------------------------------------

    @property
    def pull_through(self) -> PullThrough:
        """Pull-through caching in this process (what the registry API's pulls call)."""
        if self._pull_through is None:
            from ocimirror.pullthrough import PullThrough

            self._pull_through = PullThrough(self)
        return self._pull_through

    async def create_pull_through_remote(self, **fields: Any) -> PullThroughRemote:
        """Store a pull-through remote: a whole registry, with name patterns."""
        from ocimirror.pullthrough import PullThroughRemote

        remote = check.build(PullThroughRemote, fields)
        await self.metadata.create_pull_through("remote", remote.name, remote.to_json(secrets=True))
        return remote

    async def pull_through_remote(self, name: str) -> PullThroughRemote:
        """One pull-through remote."""
        from ocimirror.pullthrough import PullThroughRemote

        name = check.text(name, "pull-through remote name")
        record = await self.metadata.get_pull_through("remote", name)
        return PullThroughRemote.from_json(record.fields)

    async def pull_through_remotes(self) -> list[PullThroughRemote]:
        """Every pull-through remote."""
        from ocimirror.pullthrough import PullThroughRemote

        records = await self.metadata.list_pull_through("remote")
        return [PullThroughRemote.from_json(r.fields) for r in records]

    async def update_pull_through_remote(self, name: str, **fields: Any) -> PullThroughRemote:
        """Change some fields of a pull-through remote."""
        from ocimirror.pullthrough import PullThroughRemote

        check.fields_of(PullThroughRemote, fields)
        current = await self.pull_through_remote(name)
        remote = attrs.evolve(current, **fields)
        await self.metadata.update_pull_through("remote", name, remote.to_json(secrets=True))
        self.pull_through.forget()
        return remote

    async def delete_pull_through_remote(self, name: str) -> None:
        """Delete a pull-through remote (what it cached stays)."""
        name = check.text(name, "pull-through remote name")
        await self.metadata.delete_pull_through("remote", name)
        self.pull_through.forget()

    async def create_pull_through_distribution(
        self, name: str, *, base_path: str, remote: PullThroughRemote | str, **fields: Any
    ) -> PullThroughDistribution:
        """Serve a pull-through remote (or its name) under ``base_path``:
        ``<base_path>/<upstream name>``."""
        from ocimirror.pullthrough import PullThroughDistribution, PullThroughRemote

        remote = check.name_of(remote, "remote", (PullThroughRemote,))
        await self.pull_through_remote(remote)  # RemoteNotFound early
        dist = check.build(
            PullThroughDistribution,
            {"name": name, "base_path": base_path, "remote": remote, **fields},
        )
        try:
            await self.metadata.get_distribution(base_path=base_path)
        except DistributionNotFound:
            pass
        else:
            raise AlreadyExists(f"a distribution already serves base path {base_path!r}")
        await self.metadata.create_pull_through("distribution", name, dist.to_json())
        self.pull_through.forget()
        return dist

    async def pull_through_distribution(self, name: str) -> PullThroughDistribution:
        """One pull-through distribution."""
        from ocimirror.pullthrough import PullThroughDistribution

        name = check.text(name, "pull-through distribution name")
        record = await self.metadata.get_pull_through("distribution", name)
        return PullThroughDistribution.from_json(record.fields)

    async def pull_through_distributions(self) -> list[PullThroughDistribution]:
        """Every pull-through distribution."""
        from ocimirror.pullthrough import PullThroughDistribution

        records = await self.metadata.list_pull_through("distribution")
        return [PullThroughDistribution.from_json(r.fields) for r in records]

    async def update_pull_through_distribution(
        self, name: str, **fields: Any
    ) -> PullThroughDistribution:
        """Change some fields of a pull-through distribution."""
        from ocimirror.pullthrough import PullThroughDistribution

        check.fields_of(PullThroughDistribution, fields)
        current = await self.pull_through_distribution(name)
        dist = attrs.evolve(current, **fields)
        await self.metadata.update_pull_through("distribution", name, dist.to_json())
        self.pull_through.forget()
        return dist

    async def delete_pull_through_distribution(self, name: str) -> None:
        """Stop serving a pull-through cache (the repositories it made stay)."""
        name = check.text(name, "pull-through distribution name")
        await self.metadata.delete_pull_through("distribution", name)
        self.pull_through.forget()

    # -- users -------------------------------------------------------------------------------

    async def create_user(self, username: str, *, password: str, admin: bool = False) -> UserRecord:
        """Create a user of the registry API (no grants yet); the password is stored hashed."""
        check.flag(admin, "admin")
        username = check.text(username, "username")
        return await self._users.create(username, password=password, admin=admin)

    async def user(self, username: str) -> UserRecord:
        """The user named ``username``, with their grants; UserNotFound otherwise."""
        return await self._users.get(check.text(username, "username"))

    async def users(self) -> list[UserRecord]:
        """Every user, by name."""
        return await self._users.all()

    async def update_user(
        self, username: str, *, password: str | None = None, admin: bool | None = None
    ) -> UserRecord:
        """Change a user's password or admin flag (None keeps it)."""
        if admin is not None:
            check.flag(admin, "admin")
        username = check.text(username, "username")
        return await self._users.update(username, password=password, admin=admin)

    async def delete_user(self, username: str) -> None:
        """Delete a user and their grants."""
        await self._users.delete(check.text(username, "username"))

    async def grant(self, username: str, base_path: str, role: str) -> UserRecord:
        """Let ``username`` ``pull`` or ``push`` (push implies pull and delete) on every base
        path ``base_path`` matches (wildcards as in tag filters: ``team/*``)."""
        username, base_path = check.text(username, "username"), check.text(base_path, "base_path")
        return await self._users.grant(username, base_path, check.text(role, "role"))

    async def revoke(self, username: str, base_path: str) -> UserRecord:
        """Take back ``username``'s grant on the pattern ``base_path``."""
        username, base_path = check.text(username, "username"), check.text(base_path, "base_path")
        return await self._users.revoke(username, base_path)

    async def authenticate(self, username: str, password: str) -> UserRecord | None:
        """The user, if ``password`` is theirs; else None (see
        :meth:`ocimirror.users.Users.authenticate`)."""
        return await self._users.authenticate(username, password)

    # -- content -----------------------------------------------------------------------------

    async def put_blob(
        self,
        data: bytes | AsyncIterable[bytes] | Iterable[bytes],
        *,
        expected: Digest | None = None,
        size: int | None = None,
        media_type: str | None = None,
    ) -> Digest:
        """Stream a blob into storage, verified, and record it. Reuses a stored copy."""
        return await self._ingest.put_blob(
            data, expected=expected, size=size, media_type=media_type
        )

    async def reuse_blob(self, digest: Digest, *, media_type: str | None = None) -> bool:
        """If the blob is stored, refresh its record (restarting its orphan grace) and say so."""
        return await self._ingest.reuse_blob(digest, media_type=media_type)

    async def has_blob(self, digest: Digest) -> bool:
        """Whether the blob is recorded and present in storage."""
        return await self._ingest.has_blob(digest)

    async def put_manifest(
        self, raw: bytes, media_type: str | None = None, *, expected: Digest | None = None
    ) -> Manifest:
        """Parse, verify and record a manifest; every blob and child it names must be stored.

        Non-distributable (foreign) layers need not be stored.
        """
        return await self._ingest.put_manifest(raw, media_type, expected=expected)

    async def get_manifest(self, digest: Digest) -> Manifest:
        """A stored manifest, parsed; ManifestNotFound otherwise."""
        return await self._ingest.get_manifest(digest)

    # -- sync --------------------------------------------------------------------------------

    async def sync_all(
        self,
        repositories: Iterable[str] | None = None,
        *,
        policy: SyncPolicy | None = None,
        mirror: bool | None = None,
        allow_empty: bool | None = None,
        concurrency: int = 32,
        workers: int | None = None,
        progress: Callable[[SyncProgress], None] | bool | None = None,
    ) -> dict[str, SyncResult | BaseException]:
        """Sync many repositories (default: all with a remote) concurrently, one shared budget.

        Each gets its own version; a failure is returned in place of that repository's result.
        ``workers`` event loops share the work (default: one per core): this process's and
        worker processes that open the same database and blob store (see
        :mod:`ocimirror.workers`); never more loops than repositories. Stores that live in
        one process (``memory://``, in-memory SQLite, stores passed in as objects) sync in
        this process alone, and asking for ``workers > 1`` with them is an error.
        ``progress`` is as for :meth:`AsyncRepository.sync`; a notebook shows one bar for all.
        """
        from ocimirror import workers as pool
        from ocimirror.progress import reporting
        from ocimirror.sync import sync_all

        policy = with_shortcuts(policy, mirror=mirror, allow_empty=allow_empty)
        if repositories is not None:
            repositories = check.names(repositories, "repositories")
        if workers is not None and workers < 1:
            raise InvalidError(f"workers must be >= 1, got {workers}")
        if repositories is None:
            names = [r.name for r in await self.metadata.list_repositories() if r.remote]
        else:
            names = list(dict.fromkeys(repositories))
        why_not = pool.shareable(self.config)
        if workers is not None and workers > 1 and why_not is not None:
            raise InvalidError(f"cannot sync in {workers} worker processes: {why_not}")
        loops = min(pool.default_workers() if workers is None else workers, len(names))
        with reporting(progress, combined=True) as callback:
            if loops < 2 or why_not is not None:
                return await sync_all(
                    self.metadata,
                    self.blobs,
                    names,
                    policy=policy,
                    concurrency=concurrency,
                    progress=callback,
                )
            assert self.config is not None
            return await pool.sync_in_workers(
                self.metadata,
                self.blobs,
                self.config,
                names,
                workers=loops,
                policy=policy,
                concurrency=concurrency,
                progress=callback,
            )

    # -- maintenance -------------------------------------------------------------------------

    async def orphan_cleanup(
        self, *, grace: timedelta | float = timedelta(hours=1)
    ) -> CleanupReport:
        """Delete content no repository version holds, untouched for ``grace`` (a timedelta
        or seconds).

        Also removes blob files with no record, and pushes' blob uploads untouched for
        ``grace`` with their bytes (``abandoned_uploads`` counts those and the blob store's own
        unfinished writes).
        The grace period keeps work in flight (a sync between storing content and publishing
        its version) safe.
        """
        grace = check.duration(grace, "grace")
        cutoff = datetime.now(UTC) - grace
        counts = await self.metadata.delete_orphans(cutoff)
        for orphan in counts.blobs:
            await self.blobs.delete(Digest.parse(orphan))
        # Pushes left unfinished: their parts are unrecorded blobs, removed below with the
        # other stray files; the parts of uploads still in progress are kept.
        expired = await self.metadata.expire_uploads(cutoff)
        uploads = len(expired)
        stray = 0
        if isinstance(self.blobs, BlobLister):
            stored: list[tuple[Digest, datetime | None]] = [
                item async for item in self.blobs.list_blobs()
            ]
            known = await self.metadata.known_blob_digests([str(d) for d, _ in stored])
            known |= await self.metadata.upload_parts()
            for stored_digest, modified in stored:
                if str(stored_digest) in known:
                    continue
                if modified is not None and modified > cutoff:
                    continue
                if await self.blobs.delete(stored_digest):
                    stray += 1
            uploads += await self.blobs.cleanup_uploads(older_than=grace)
        report = CleanupReport(
            manifests=counts.manifests,
            blobs=len(counts.blobs),
            signatures=counts.signatures,
            stray_files=stray,
            abandoned_uploads=uploads,
        )
        log.info("orphan cleanup: %s", report)
        return report

    async def repair(self) -> RepairReport:
        """Re-verify every stored blob and manifest.

        Corrupt blobs are removed from storage so they are never served. A blob whose remote
        provides it (on-demand content) is fetched again from there when it was stored and
        is corrupt or missing; one that was never fetched is counted as ``remote``. Other
        blobs missing from storage are reported (a sync fetches them again).
        """
        missing: list[str] = []
        corrupt: list[str] = []
        refetched: list[str] = []
        remote = 0
        checked = 0
        async for record in self.metadata.iter_blobs():
            checked += 1
            digest = Digest.parse(record.digest)
            stored = await self.blobs.stat(digest)
            if stored is not None and not await self._intact(digest, record.size):
                log.warning("blob %s is corrupt in storage; removing it", digest)
                corrupt.append(record.digest)
                await self.blobs.delete(digest)
            elif stored is not None:
                continue
            if not await self.metadata.blob_sources(record.digest):
                if stored is None:
                    missing.append(record.digest)
                continue
            if stored is None:
                remote += 1
                continue
            if await self._refetch(digest, record.size):
                refetched.append(record.digest)
        manifests_checked = 0
        corrupt_manifests: list[str] = []
        async for digest_str in self.metadata.iter_manifest_digests():
            manifests_checked += 1
            manifest = await self.metadata.get_manifest(digest_str)
            assert manifest is not None
            try:
                parse_manifest(
                    manifest.data, manifest.media_type, expected=Digest.parse(digest_str)
                )
            except (DigestMismatch, InvalidError):
                corrupt_manifests.append(digest_str)
        return RepairReport(
            checked=checked,
            missing=tuple(missing),
            corrupt=tuple(corrupt),
            remote=remote,
            refetched=tuple(refetched),
            manifests_checked=manifests_checked,
            corrupt_manifests=tuple(corrupt_manifests),
        )

    async def _intact(self, digest: Digest, size: int) -> bool:
        h = hashlib.new(digest.algorithm)
        got = 0
        async for chunk in self.blobs.open(digest):
            h.update(chunk)
            got += len(chunk)
        return h.hexdigest() == digest.hex and got == size

    async def _refetch(self, digest: Digest, size: int) -> bool:
        """Fetch a corrupt blob again from its remote (kept when the remote's policy keeps
        content); whether it verified."""
        try:
            async for _ in await self.on_demand.read(digest, size):
                pass
        except (OcimirrorError, OSError) as exc:
            log.warning("blob %s could not be fetched again: %s", digest, exc)
            return False
        return True


def _check_repository_name(name: str) -> None:
    # Pulp allows any name; only the distribution's base path must follow the OCI name rules.
    if not isinstance(name, str) or not name or len(name) > 255:
        raise InvalidName("a repository name must be 1-255 characters")
    if name.strip() != name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidName(f"repository name {name!r} has outer spaces or control characters")


def _check_base_path(base_path: str) -> None:
    validate_repository_name(base_path)


def _distribution_fields(**given: Any) -> dict[str, Any]:
    """A distribution's fields as the store takes them: a repository (or its name), a
    version (or its number), a flag, a text; each checked, given ones only."""
    fields = dict(given)
    if fields.get("repository") is not None:
        fields["repository"] = check.name_of(fields["repository"], "repository", (AsyncRepository,))
    version = fields.get("repository_version")
    if isinstance(version, RepositoryVersion):
        if fields.get("repository") is not None and fields["repository"] != version.repository:
            raise InvalidError(
                f"repository_version is a version of {version.repository!r}, "
                f"not of {fields['repository']!r}"
            )
        if fields.get("repository") is None:
            fields["repository"] = version.repository
        fields["repository_version"] = version.number
    elif version is not None:
        fields["repository_version"] = check.version_number(version, "repository_version")
    if "private" in fields:
        fields["private"] = check.flag(fields["private"], "private")
    if "description" in fields:
        fields["description"] = check.optional_text(fields["description"], "description")
    return fields
