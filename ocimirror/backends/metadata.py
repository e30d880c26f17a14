"""The metadata store: what the database holds, as records and small protocols.

The store is split by concern, the way the registry API is: repositories and their versions,
content (blobs, manifests, signatures, all shared across repositories, one row per digest),
the content of one version (tags, membership), remotes and distributions.
:class:`~ocimirror.backends.sql.SQLMetadataStore` implements every protocol here over SQLite
and PostgreSQL.

Membership is stored as intervals: a row says "this content is in the repository from version
``version_added`` until (not including) ``version_removed``". A new version therefore costs
O(changes), and any version's content is one indexed query.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Literal, Protocol

import attrs

__all__ = [
    "CONTENT_TYPES",
    "BlobRecord",
    "CleanupCounts",
    "ContentStore",
    "ContentType",
    "DistributionRecord",
    "ManifestRecord",
    "MetadataStore",
    "RemoteRecord",
    "RepositoryRecord",
    "RepositoryStore",
    "SignatureRecord",
    "VersionBuilder",
    "VersionRecord",
    "VersionStore",
]

ContentType = Literal[
    "container.blob", "container.manifest", "container.tag", "container.signature"
]

#: The content types a repository version holds, in display order.
CONTENT_TYPES: tuple[ContentType, ...] = (
    "container.blob",
    "container.manifest",
    "container.tag",
    "container.signature",
)


@attrs.frozen(kw_only=True)
class RepositoryRecord:
    """A repository as stored."""

    id: int
    name: str
    description: str | None
    retain_repo_versions: int | None
    remote: str | None
    mirror: bool
    latest_version: int
    created: datetime


@attrs.frozen(kw_only=True)
class VersionRecord:
    """A complete repository version as stored; ``summary`` maps added/removed/present to counts."""

    repository: str
    number: int
    base_version: int | None
    created: datetime
    summary: Mapping[str, Mapping[str, int]]


@attrs.frozen(kw_only=True)
class BlobRecord:
    """A blob known to the store (its bytes live in the blob store under its digest)."""

    digest: str
    size: int
    media_type: str | None


@attrs.frozen(kw_only=True)
class ManifestRecord:
    """A manifest: its exact bytes, media type and the digests it references."""

    digest: str
    media_type: str
    data: bytes = attrs.field(repr=False)
    artifact_type: str | None
    subject: str | None


@attrs.frozen(kw_only=True)
class SignatureRecord:
    """A signature of a manifest (atomic/simple-signing, cosign, ...)."""

    digest: str
    manifest_digest: str
    name: str
    key_id: str | None
    sig_type: str
    data: bytes = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class RemoteRecord:
    """A remote's stored fields; the password is kept out of the repr."""

    name: str
    fields: Mapping[str, Any] = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class DistributionRecord:
    """A distribution: a base path serving a repository (moving) or one version (pinned)."""

    name: str
    base_path: str
    repository: str | None
    repository_version: int | None
    private: bool
    description: str | None


@attrs.frozen(kw_only=True)
class CleanupCounts:
    """What an orphan cleanup removed from the metadata; the blob files go with the blob rows."""

    manifests: int
    blobs: list[str]
    signatures: int


class RepositoryStore(Protocol):
    """Repositories and their versions."""

    async def create_repository(
        self,
        name: str,
        *,
        description: str | None = None,
        retain_repo_versions: int | None = None,
        remote: str | None = None,
    ) -> RepositoryRecord:
        """Create a repository with its empty version 0; AlreadyExists when the name is taken."""
        ...

    async def get_repository(self, name: str) -> RepositoryRecord:
        """The repository named ``name``; RepositoryNotFound otherwise."""
        ...

    async def list_repositories(self) -> list[RepositoryRecord]:
        """Every repository, by name."""
        ...

    async def update_repository(self, name: str, **fields: Any) -> RepositoryRecord:
        """Change description, retain_repo_versions, remote or mirror."""
        ...

    async def delete_repository(self, name: str) -> None:
        """Delete a repository and all its versions (content becomes orphan)."""
        ...


class VersionStore(Protocol):
    """Repository versions and what each holds."""

    def new_version(
        self, repository: str, *, base_version: int | None = None
    ) -> AbstractAsyncContextManager[VersionBuilder]:
        """Open a builder for the next version; it is published atomically on a clean exit."""
        ...

    async def get_version(self, repository: str, number: int | None = None) -> VersionRecord:
        """One complete version (the latest when ``number`` is None); VersionNotFound otherwise."""
        ...

    async def list_versions(self, repository: str) -> list[VersionRecord]:
        """Every complete version, newest first."""
        ...

    async def delete_version(self, repository: str, number: int) -> None:
        """Delete a version, squashing its changes into the next one (Pulp's semantics)."""
        ...

    async def list_tags(
        self, repository: str, number: int, *, last: str | None = None, n: int | None = None
    ) -> list[tuple[str, str]]:
        """(name, manifest digest) of the version's tags, sorted by name, after ``last``."""
        ...

    async def get_tag(self, repository: str, number: int, name: str) -> str | None:
        """The manifest digest a tag points to in that version, or None."""
        ...

    async def has_content(
        self, repository: str, number: int, content_type: ContentType, key: str
    ) -> bool:
        """Whether the version holds that blob/manifest/signature digest (or tag name)."""
        ...

    def iter_content(
        self, repository: str, number: int, content_type: ContentType
    ) -> AsyncIterator[str]:
        """Every key (digest, or tag name) of one content type in a version."""
        ...


class ContentStore(Protocol):
    """Content shared by every repository: one row per digest."""

    async def add_blob(self, digest: str, size: int, media_type: str | None = None) -> None:
        """Record a blob that is now in the blob store (refreshes its orphan grace period)."""
        ...

    async def get_blob(self, digest: str) -> BlobRecord | None:
        """The blob's record, or None."""
        ...

    async def add_manifest(
        self,
        record: ManifestRecord,
        references: list[tuple[str, str, dict[str, Any] | None]],
    ) -> None:
        """Record a manifest and its references: (child digest, "manifest"|"blob", platform)."""
        ...

    async def get_manifest(self, digest: str) -> ManifestRecord | None:
        """The manifest's record, or None."""
        ...

    async def manifest_references(self, digest: str) -> list[tuple[str, str]]:
        """(child digest, kind) of each reference of a stored manifest, in order."""
        ...

    def iter_blobs(self) -> AsyncIterator[BlobRecord]:
        """Every blob record (for repair)."""
        ...

    async def delete_orphans(self, older_than: datetime) -> CleanupCounts:
        """Delete content no version references and untouched since ``older_than``."""
        ...


class MetadataStore(RepositoryStore, VersionStore, ContentStore, Protocol):
    """Everything the database holds."""

    async def open(self) -> None:
        """Connect, create or check the schema."""
        ...

    async def close(self) -> None:
        """Dispose of what this store created."""
        ...


class VersionBuilder(Protocol):
    """Changes to a repository, applied inside one locked transaction.

    Presence checks see the version being built, including the changes made so far.
    """

    repository: str
    number: int

    async def add(self, content_type: ContentType, key: str, value: str | None = None) -> bool:
        """Add content (for tags: ``key`` is the name, ``value`` the digest); True if new."""
        ...

    async def add_many(self, content_type: ContentType, items: Mapping[str, str | None]) -> int:
        """Add many keys at once (tags: name -> digest, others: digest -> None); count new."""
        ...

    async def remove(self, content_type: ContentType, key: str) -> bool:
        """Remove content (for tags: by name); True if it was present."""
        ...

    async def present(self, content_type: ContentType, key: str) -> bool:
        """Whether the version being built holds that content."""
        ...

    async def tag_target(self, name: str) -> str | None:
        """The digest a tag points to in the version being built."""
        ...

    async def tags_pointing_to(self, digest: str) -> list[str]:
        """Names of tags in the version being built that point to ``digest``."""
        ...

    async def present_parents(self, digest: str) -> list[str]:
        """Manifests in the version being built that reference ``digest``."""
        ...

    async def signatures_of(self, manifest_digest: str) -> list[str]:
        """Signature digests in the version being built that sign ``manifest_digest``."""
        ...

    async def all_keys(self, content_type: ContentType) -> set[str]:
        """Every key of a content type in the version being built (O(content); for mirror sets)."""
        ...
