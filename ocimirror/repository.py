"""Repositories: named, versioned sets of tags, manifests, blobs and signatures (Pulp's model).

Every change creates a new immutable version; a change that changes nothing creates none.
Adding is recursive (a tag brings its manifest, child manifests, configs and layers) and so is
removing, which keeps whatever other remaining content still references.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ocimirror.backends.blobs import BlobStore
from ocimirror.backends.metadata import RepositoryRecord, VersionBuilder
from ocimirror.core.digest import Digest
from ocimirror.core.reference import validate_tag
from ocimirror.errors import BlobNotFound, InvalidError, ManifestNotFound, TagNotFound
from ocimirror.remote import Remote, SyncPolicy
from ocimirror.versions import RepositoryVersion

if TYPE_CHECKING:
    # A sync (httpx) and a layout transfer are imported when they run: opening a registry
    # and listing its repositories stays light.
    from ocimirror.sync import SyncProgress, SyncResult, SyncStore
    from ocimirror.transfer import ExportReport
    from ocimirror.upstream import RegistryClient

__all__ = ["AsyncRepository", "check_retain"]


def check_retain(value: int | None) -> None:
    """``retain_repo_versions`` is None (keep all) or an integer >= 1."""
    if value is not None and (not isinstance(value, int) or value < 1):
        raise InvalidError(f"retain_repo_versions must be an integer >= 1, got {value!r}")


class AsyncRepository:
    """A repository in an :class:`~ocimirror.registry.AsyncRegistry`.

    It works on the stores it is given (``metadata``: anything that keeps the metadata
    protocols a sync needs; ``blobs``: a blob store). Its attributes are a snapshot taken when
    it was loaded; :meth:`refresh` reloads them.
    """

    def __init__(self, metadata: SyncStore, blobs: BlobStore, record: RepositoryRecord) -> None:
        self._metadata = metadata
        self._blobs = blobs
        self._record = record

    def __repr__(self) -> str:
        r = self._record
        kind = "mirror" if r.mirror else "push"
        return f"<Repository {r.name!r} latest_version={r.latest_version} ({kind})>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncRepository) and other._record.id == self._record.id

    def __hash__(self) -> int:
        return hash(self._record.id)

    @property
    def name(self) -> str:
        """The repository's unique name."""
        return self._record.name

    @property
    def description(self) -> str | None:
        """Free text."""
        return self._record.description

    @property
    def retain_repo_versions(self) -> int | None:
        """How many versions to keep (None: all)."""
        return self._record.retain_repo_versions

    @property
    def remote(self) -> str | None:
        """The name of the remote a sync uses by default."""
        return self._record.remote

    @property
    def mirror(self) -> bool:
        """Whether it has been synced from a remote (and so refuses pushes)."""
        return self._record.mirror

    @property
    def latest_version_number(self) -> int:
        """The latest version's number, as of the snapshot."""
        return self._record.latest_version

    def to_json(self) -> dict[str, Any]:
        """The repository as the CLI prints it."""
        r = self._record
        return {
            "name": r.name,
            "description": r.description,
            "retain_repo_versions": r.retain_repo_versions,
            "remote": r.remote,
            "mirror": r.mirror,
            "latest_version": r.latest_version,
            "created": r.created.isoformat(),
        }

    async def refresh(self) -> AsyncRepository:
        """Reload the snapshot from the store."""
        self._record = await self._metadata.get_repository(self.name)
        return self

    async def update(self, **fields: Any) -> AsyncRepository:
        """Change description, retain_repo_versions or remote."""
        if "mirror" in fields:
            raise InvalidError(
                "the mirror flag is set by a sync, in the transaction of the version it makes"
            )
        if "retain_repo_versions" in fields:
            check_retain(fields["retain_repo_versions"])
        if fields.get("remote") is not None:
            await self._metadata.get_remote(fields["remote"])
        self._record = await self._metadata.update_repository(self.name, **fields)
        return self

    # -- versions ----------------------------------------------------------------------------

    async def latest_version(self) -> RepositoryVersion:
        """The latest complete version."""
        return await self.version()

    async def version(self, number: int | None = None) -> RepositoryVersion:
        """One version (the latest when ``number`` is None); VersionNotFound otherwise."""
        record = await self._metadata.get_version(self.name, number)
        return RepositoryVersion.from_record(record)

    async def versions(self) -> list[RepositoryVersion]:
        """Every version, newest first."""
        records = await self._metadata.list_versions(self.name)
        return [RepositoryVersion.from_record(r) for r in records]

    async def delete_version(self, number: int) -> None:
        """Delete a version; its changes fold into the next one."""
        await self._metadata.delete_version(self.name, number)
        await self.refresh()

    async def _number(self, version: int | RepositoryVersion | None) -> int:
        if isinstance(version, RepositoryVersion):
            return version.number
        if version is None:
            return (await self.version()).number
        return (await self.version(version)).number

    # -- reading content ---------------------------------------------------------------------

    async def tags(
        self,
        version: int | RepositoryVersion | None = None,
        *,
        last: str | None = None,
        n: int | None = None,
    ) -> dict[str, str]:
        """Tag name -> manifest digest in a version (default latest), sorted, paginated."""
        number = await self._number(version)
        rows = await self._metadata.list_tags(self.name, number, last=last, n=n)
        return dict(rows)

    async def resolve(self, tag: str, version: int | RepositoryVersion | None = None) -> Digest:
        """The digest a tag points to; TagNotFound otherwise."""
        number = await self._number(version)
        digest = await self._metadata.get_tag(self.name, number, tag)
        if digest is None:
            raise TagNotFound(f"{self.name} version {number} has no tag {tag!r}")
        return Digest.parse(digest)

    async def manifests(self, version: int | RepositoryVersion | None = None) -> list[Digest]:
        """Digests of every manifest in a version."""
        number = await self._number(version)
        keys = self._metadata.iter_content(self.name, number, "container.manifest")
        return [Digest.parse(k) async for k in keys]

    async def blobs(self, version: int | RepositoryVersion | None = None) -> list[Digest]:
        """Digests of every blob in a version."""
        number = await self._number(version)
        keys = self._metadata.iter_content(self.name, number, "container.blob")
        return [Digest.parse(k) async for k in keys]

    async def has_manifest(
        self, digest: Digest, version: int | RepositoryVersion | None = None
    ) -> bool:
        """Whether the version holds that manifest."""
        number = await self._number(version)
        return await self._metadata.has_content(
            self.name, number, "container.manifest", str(digest)
        )

    async def has_blob(
        self, digest: Digest, version: int | RepositoryVersion | None = None
    ) -> bool:
        """Whether the version holds that blob."""
        number = await self._number(version)
        return await self._metadata.has_content(self.name, number, "container.blob", str(digest))

    # -- changing content --------------------------------------------------------------------

    async def closure(self, digest: Digest | str) -> tuple[list[str], list[str]]:
        """(manifests, blobs): a stored manifest and everything under it, parents first."""
        closure = await self._metadata.closure([str(digest)])
        if closure.missing:
            raise ManifestNotFound(f"manifest {closure.missing[0]} is not stored")
        return list(closure.manifests), list(closure.blobs)

    async def modify(
        self,
        *,
        add_tags: Mapping[str, Digest | str] | None = None,
        add_manifests: Iterable[Digest | str] = (),
        add_blobs: Iterable[Digest | str] = (),
        remove_tags: Iterable[str] = (),
        remove_manifests: Iterable[Digest | str] = (),
        remove_blobs: Iterable[Digest | str] = (),
        base_version: int | None = None,
    ) -> RepositoryVersion:
        """Apply removals then additions in one new version (none if nothing changes).

        Additions bring everything under a manifest; removals take what is under a removed
        tag or manifest unless other remaining content still references it.
        """
        tags = {validate_tag(n): str(d) for n, d in (add_tags or {}).items()}
        manifests = [str(d) for d in add_manifests]
        blobs = [str(d) for d in add_blobs]  # the builder refuses unrecorded ones
        meta = self._metadata
        async with meta.new_version(self.name, base_version=base_version) as builder:
            await _remove(
                builder,
                meta,
                tags=list(remove_tags),
                manifests=[str(d) for d in remove_manifests],
                blobs=[str(d) for d in remove_blobs],
            )
            closure = await builder.closure(list(dict.fromkeys([*tags.values(), *manifests])))
            if closure.missing:
                raise ManifestNotFound(f"manifest {closure.missing[0]} is not stored")
            await builder.add_many("container.blob", dict.fromkeys([*closure.blobs, *blobs]))
            await builder.add_many("container.manifest", dict.fromkeys(closure.manifests))
            await builder.add_many("container.tag", tags)
        assert builder.result is not None
        await self.refresh()
        return RepositoryVersion.from_record(builder.result)

    async def add(
        self,
        *,
        tags: Mapping[str, Digest | str] | None = None,
        manifests: Iterable[Digest | str] = (),
        blobs: Iterable[Digest | str] = (),
        base_version: int | None = None,
    ) -> RepositoryVersion:
        """Add content recursively; a new version when anything changed."""
        return await self.modify(
            add_tags=tags, add_manifests=manifests, add_blobs=blobs, base_version=base_version
        )

    async def remove(
        self,
        *,
        tags: Iterable[str] = (),
        manifests: Iterable[Digest | str] = (),
        blobs: Iterable[Digest | str] = (),
        base_version: int | None = None,
    ) -> RepositoryVersion:
        """Remove content recursively, keeping what remaining content still references."""
        return await self.modify(
            remove_tags=tags,
            remove_manifests=manifests,
            remove_blobs=blobs,
            base_version=base_version,
        )

    async def tag(self, name: str, digest: Digest | str) -> RepositoryVersion:
        """Point tag ``name`` at a manifest (moving it if it exists)."""
        return await self.add(tags={name: digest})

    async def untag(self, name: str) -> RepositoryVersion:
        """Remove a tag only; its manifest stays (untagged), as in Pulp."""
        validate_tag(name)
        meta = self._metadata
        async with meta.new_version(self.name) as builder:
            if not await builder.remove("container.tag", name):
                raise TagNotFound(f"{self.name} has no tag {name!r}")
        assert builder.result is not None
        await self.refresh()
        return RepositoryVersion.from_record(builder.result)

    async def copy_tags(
        self,
        source: AsyncRepository | RepositoryVersion,
        names: Iterable[str] | None = None,
    ) -> RepositoryVersion:
        """Copy tags (all, or ``names``) and what they point to from another repository/version."""
        repo, number = await self._source(source)
        available = await repo.tags(number)
        wanted = available if names is None else {}
        if names is not None:
            for name in names:
                if name not in available:
                    raise TagNotFound(f"{repo.name} version {number} has no tag {name!r}")
                wanted[name] = available[name]
        return await self.add(tags=wanted)

    async def copy_manifests(
        self,
        source: AsyncRepository | RepositoryVersion,
        digests: Iterable[Digest | str] | None = None,
    ) -> RepositoryVersion:
        """Copy manifests (all, or ``digests``) and what is under them, without tags."""
        repo, number = await self._source(source)
        available = {str(d) for d in await repo.manifests(number)}
        if digests is None:
            chosen = sorted(available)
        else:
            chosen = [str(d) for d in digests]
            missing = [d for d in chosen if d not in available]
            if missing:
                raise ManifestNotFound(f"{repo.name} version {number} has no manifest {missing[0]}")
        return await self.add(manifests=chosen)

    async def _source(
        self, source: AsyncRepository | RepositoryVersion
    ) -> tuple[AsyncRepository, int]:
        if isinstance(source, RepositoryVersion):
            record = await self._metadata.get_repository(source.repository)
            return AsyncRepository(self._metadata, self._blobs, record), source.number
        return source, (await source.version()).number

    # -- sync --------------------------------------------------------------------------------

    async def sync(
        self,
        remote: Remote | str | None = None,
        *,
        policy: SyncPolicy | None = None,
        mirror: bool | None = None,
        progress: Callable[[SyncProgress], None] | None = None,
        client: RegistryClient | None = None,
    ) -> SyncResult:
        """Sync from a remote (default: this repository's remote); see :mod:`ocimirror.sync`.

        ``mirror=True`` is a shortcut for ``policy=SyncPolicy(mirror=True)``.
        """
        from ocimirror.sync import sync_repository

        if mirror is not None:
            policy = attrs.evolve(policy or SyncPolicy(), mirror=mirror)
        result = await sync_repository(
            self._metadata,
            self._blobs,
            self.name,
            remote,
            policy=policy,
            progress=progress,
            client=client,
        )
        await self.refresh()
        return result

    # -- transfer ----------------------------------------------------------------------------

    async def import_layout(
        self, path: str | os.PathLike[str], *, tags: Iterable[str] | None = None
    ) -> RepositoryVersion:
        """Import an OCI image layout (directory or tar): every tagged and untagged entry."""
        from ocimirror.transfer import import_layout

        version = await import_layout(self._metadata, self._blobs, self.name, path, tags=tags)
        await self.refresh()
        return version

    async def export_layout(
        self,
        path: str | os.PathLike[str],
        *,
        version: int | RepositoryVersion | None = None,
        tags: Iterable[str] | None = None,
        tar: bool = False,
        fetch: bool = True,
    ) -> ExportReport:
        """Export a version (default latest) to an OCI image layout directory or tar file.

        On-demand content is fetched from its remote, unless ``fetch=False``: then the
        export fails and names the blobs that are not stored here.
        """
        from ocimirror.transfer import export_layout

        number = await self._number(version)
        return await export_layout(
            self._metadata,
            self._blobs,
            self.name,
            path,
            version=number,
            tags=tags,
            tar=tar,
            fetch=fetch,
        )


async def _remove(
    builder: VersionBuilder,
    meta: SyncStore,
    *,
    tags: list[str],
    manifests: list[str],
    blobs: list[str],
) -> None:
    """Recursive removal inside a version being built."""
    explicit = set(manifests)
    queue: list[str] = list(manifests)
    blob_candidates: list[str] = []
    for name in tags:
        target = await builder.tag_target(name)
        if target is None:
            raise TagNotFound(f"{builder.repository} has no tag {name!r}")
        await builder.remove("container.tag", name)
        queue.append(target)
    done: set[str] = set()
    while queue:
        digest = queue.pop(0)
        if digest in done:
            continue
        done.add(digest)
        if not await builder.present("container.manifest", digest):
            if digest in explicit:
                raise ManifestNotFound(f"{builder.repository} has no manifest {digest}")
            continue
        if digest in explicit:
            for name in await builder.tags_pointing_to(digest):
                await builder.remove("container.tag", name)
        elif await builder.tags_pointing_to(digest) or await builder.present_parents(digest):
            continue  # still referenced by what remains
        await builder.remove("container.manifest", digest)
        for signature in await builder.signatures_of(digest):
            await builder.remove("container.signature", signature)
        for child, kind in await meta.manifest_references(digest):
            if kind == "manifest":
                queue.append(child)
            elif kind == "blob":
                blob_candidates.append(child)
    for blob in dict.fromkeys(blob_candidates):
        if not await builder.present_parents(blob):
            await builder.remove("container.blob", blob)
    for blob in blobs:
        if not await builder.remove("container.blob", blob):
            raise BlobNotFound(f"{builder.repository} has no blob {blob}")
