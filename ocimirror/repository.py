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

from ocimirror import _check as check
from ocimirror._html import fields
from ocimirror.backends.blobs import BlobStore
from ocimirror.backends.metadata import RepositoryRecord, VersionBuilder
from ocimirror.core.digest import Digest
from ocimirror.core.reference import validate_tag
from ocimirror.errors import BlobNotFound, InvalidError, ManifestNotFound, TagNotFound
from ocimirror.remote import Remote, SyncPolicy
from ocimirror.versions import RepositoryVersion, VersionDiff, VersionList

if TYPE_CHECKING:
    # A sync (httpx) and a layout transfer are imported when they run: opening a registry
    # and listing its repositories stays light.
    from ocimirror.sync import SyncProgress, SyncResult, SyncStore
    from ocimirror.transfer import ExportReport
    from ocimirror.upstream import RegistryClient

__all__ = ["AsyncRepository", "check_retain", "with_shortcuts"]


def with_shortcuts(policy: SyncPolicy | None, **fields: bool | None) -> SyncPolicy | None:
    """``policy`` (a SyncPolicy, or None for the default one) with the fields given as
    keyword shortcuts set."""
    if policy is not None and not isinstance(policy, SyncPolicy):
        raise InvalidError(f"policy must be a SyncPolicy, got {type(policy).__name__}")
    given = {k: v for k, v in fields.items() if v is not None}
    if not given:
        return policy
    return attrs.evolve(policy or SyncPolicy(), **given)


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
        return f"<{type(self).__name__} {r.name!r} latest_version={r.latest_version} ({self.kind})>"

    @property
    def kind(self) -> str:
        """What the repository is, in words: ``mirror of remote 'up'`` once synced from a
        remote, ``remote 'up', not synced yet`` before, ``push`` without a remote."""
        r = self._record
        if r.mirror:
            return f"mirror of remote {r.remote!r}" if r.remote else "mirror"
        if r.remote:
            return f"remote {r.remote!r}, not synced yet"
        return "push"

    def _repr_html_(self) -> str:
        r = self._record
        return fields(
            f"{type(self).__name__} {r.name}",
            {
                "kind": self.kind,
                "latest version": r.latest_version,
                "remote": r.remote,
                "description": r.description,
                "retain versions": r.retain_repo_versions or "all",
                "created": r.created.isoformat(timespec="seconds"),
            },
        )

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
        """Change description, retain_repo_versions or remote (a :class:`Remote` or its
        name; None detaches it)."""
        if "mirror" in fields:
            raise InvalidError(
                "the mirror flag is set by a sync, in the transaction of the version it makes"
            )
        check.known_fields(fields, ("description", "retain_repo_versions", "remote"), "Repository")
        if "retain_repo_versions" in fields:
            check_retain(fields["retain_repo_versions"])
        if "description" in fields:
            check.optional_text(fields["description"], "description")
        if fields.get("remote") is not None:
            fields["remote"] = check.name_of(fields["remote"], "remote", (Remote,))
            await self._metadata.get_remote(fields["remote"])
        self._record = await self._metadata.update_repository(self.name, **fields)
        return self

    # -- versions ----------------------------------------------------------------------------

    async def latest_version(self) -> RepositoryVersion:
        """The latest complete version."""
        return await self.version()

    async def version(self, number: int | None = None) -> RepositoryVersion:
        """One version (the latest when ``number`` is None); VersionNotFound otherwise."""
        if number is not None:
            number = self._version_number(number)
        record = await self._metadata.get_version(self.name, number)
        return RepositoryVersion.from_record(record)

    async def versions(self) -> VersionList:
        """Every version, newest first (a list; a notebook shows it as a table)."""
        records = await self._metadata.list_versions(self.name)
        return VersionList(RepositoryVersion.from_record(r) for r in records)

    async def delete_version(self, number: int) -> None:
        """Delete a version; its changes fold into the next one."""
        await self._metadata.delete_version(self.name, self._version_number(number))
        await self.refresh()

    async def _number(self, version: int | RepositoryVersion | None) -> int:
        """A version argument's number: that of a version of this repository, or of one
        that exists (the latest for None)."""
        if version is None:
            return (await self.version()).number
        number = self._version_number(version)
        if isinstance(version, RepositoryVersion):
            return number
        return (await self.version(number)).number

    async def diff(
        self, base: int | RepositoryVersion, version: int | RepositoryVersion | None = None
    ) -> VersionDiff:
        """What changed from version ``base`` to ``version`` (default latest): tags added,
        removed and moved, and how many items of each content type were added and removed.
        It reads only the content that changed in between; VersionNotFound for a missing one."""
        a = self._version_number(base, "base")
        b = await self._number(None) if version is None else self._version_number(version)
        changes = await self._metadata.diff_versions(self.name, a, b)
        return VersionDiff.from_changes(self.name, a, b, changes)

    def _version_number(self, version: object, what: str = "version") -> int:
        """A version argument's number, checked: InvalidError if it is no version of this."""
        if isinstance(version, RepositoryVersion) and version.repository == self.name:
            return version.number
        if isinstance(version, int) and not isinstance(version, bool):
            return version
        raise InvalidError(f"{what} must be a version number of {self.name!r}, got {version!r}")

    # -- reading content ---------------------------------------------------------------------

    async def tags(
        self,
        version: int | RepositoryVersion | None = None,
        *,
        last: str | None = None,
        n: int | None = None,
    ) -> dict[str, str]:
        """Tag name -> manifest digest in a version (default latest), sorted, paginated."""
        if last is not None:
            check.text(last, "last")
        if n is not None:
            check.count(n, "n")
        number = await self._number(version)
        rows = await self._metadata.list_tags(self.name, number, last=last, n=n)
        return dict(rows)

    async def resolve(self, tag: str, version: int | RepositoryVersion | None = None) -> Digest:
        """The digest a tag points to; TagNotFound otherwise."""
        validate_tag(tag)
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
        key = _digest(digest)
        number = await self._number(version)
        return await self._metadata.has_content(self.name, number, "container.manifest", key)

    async def has_blob(
        self, digest: Digest, version: int | RepositoryVersion | None = None
    ) -> bool:
        """Whether the version holds that blob."""
        key = _digest(digest)
        number = await self._number(version)
        return await self._metadata.has_content(self.name, number, "container.blob", key)

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
        if add_tags is not None and not isinstance(add_tags, Mapping):
            raise InvalidError(
                f"tags to add are a mapping of tag -> digest, got {type(add_tags).__name__}"
            )
        tags = {validate_tag(n): _digest(d) for n, d in (add_tags or {}).items()}
        manifests = _digests(add_manifests, "manifests")
        blobs = _digests(add_blobs, "blobs")  # the builder refuses unrecorded ones
        untagged = [validate_tag(t) for t in check.names(remove_tags, "tags to remove")]
        if base_version is not None:
            base_version = self._version_number(base_version, "base_version")
        meta = self._metadata
        async with meta.new_version(self.name, base_version=base_version) as builder:
            await _remove(
                builder,
                meta,
                tags=untagged,
                manifests=_digests(remove_manifests, "manifests to remove"),
                blobs=_digests(remove_blobs, "blobs to remove"),
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
        source: AsyncRepository | RepositoryVersion | str,
        names: Iterable[str] | str | None = None,
    ) -> RepositoryVersion:
        """Copy tags (all, or ``names``) and what they point to from another repository (or
        its name) or one of its versions."""
        repo, number = await self._source(source)
        available = await repo.tags(number)
        wanted = available if names is None else {}
        if names is not None:
            for name in check.names(names, "tags"):
                if name not in available:
                    raise TagNotFound(f"{repo.name} version {number} has no tag {name!r}")
                wanted[name] = available[name]
        return await self.add(tags=wanted)

    async def copy_manifests(
        self,
        source: AsyncRepository | RepositoryVersion | str,
        digests: Iterable[Digest | str] | Digest | str | None = None,
    ) -> RepositoryVersion:
        """Copy manifests (all, or ``digests``) and what is under them, without tags."""
        repo, number = await self._source(source)
        available = {str(d) for d in await repo.manifests(number)}
        if digests is None:
            chosen = sorted(available)
        else:
            chosen = _digests(digests, "digests")
            missing = [d for d in chosen if d not in available]
            if missing:
                raise ManifestNotFound(f"{repo.name} version {number} has no manifest {missing[0]}")
        return await self.add(manifests=chosen)

    async def _source(
        self, source: AsyncRepository | RepositoryVersion | str
    ) -> tuple[AsyncRepository, int]:
        if isinstance(source, RepositoryVersion):
            record = await self._metadata.get_repository(source.repository)
            return AsyncRepository(self._metadata, self._blobs, record), source.number
        if isinstance(source, str):
            record = await self._metadata.get_repository(source)
            source = AsyncRepository(self._metadata, self._blobs, record)
        if not isinstance(source, AsyncRepository):
            raise InvalidError(
                "source must be a repository, its name, or a repository version, "
                f"got {type(source).__name__}"
            )
        return source, (await source.version()).number

    # -- sync --------------------------------------------------------------------------------

    async def sync(
        self,
        remote: Remote | str | None = None,
        *,
        policy: SyncPolicy | None = None,
        mirror: bool | None = None,
        allow_empty: bool | None = None,
        progress: Callable[[SyncProgress], None] | bool | None = None,
        client: RegistryClient | None = None,
    ) -> SyncResult:
        """Sync from a remote (default: this repository's remote); see :mod:`ocimirror.sync`.

        ``mirror=True`` and ``allow_empty=True`` are shortcuts for the :class:`SyncPolicy`
        fields of those names. A mirror sync that would leave no tag raises EmptyMirror
        unless ``allow_empty``.

        ``progress`` is called with a :class:`~ocimirror.sync.SyncProgress` as the sync goes;
        by default a notebook shows a progress bar (``progress=False``: none; ``True``: bars
        on stderr outside a notebook too).
        """
        from ocimirror.progress import reporting
        from ocimirror.sync import sync_repository

        if remote is not None and not isinstance(remote, Remote | str):
            raise InvalidError(f"remote must be a Remote or its name, got {type(remote).__name__}")
        policy = with_shortcuts(policy, mirror=mirror, allow_empty=allow_empty)
        with reporting(progress) as callback:
            result = await sync_repository(
                self._metadata,
                self._blobs,
                self.name,
                remote,
                policy=policy,
                progress=callback,
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


def _digest(value: Any) -> str:
    """A digest argument (a Digest or its text) as text; InvalidDigest if it is none."""
    if isinstance(value, Digest):
        return str(value)
    return str(Digest.parse(check.text(value, "digest")))


def _digests(values: Any, what: str) -> list[str]:
    """Digest arguments: one or an iterable of them."""
    if isinstance(values, str | Digest):
        values = [values]
    if isinstance(values, Mapping) or not isinstance(values, Iterable):
        raise InvalidError(f"{what} must be a digest or a list of digests, got {values!r}")
    return [_digest(v) for v in values]


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
