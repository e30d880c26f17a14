"""The metadata store: what the database holds, as records and small protocols.

The store is split by concern: repositories and their versions (:class:`RepositoryStore`,
with the :class:`VersionBuilder` that makes a version), content shared by every repository
(:class:`ContentStore`: blobs, manifests, signatures, one row per digest), remotes and
distributions (:class:`RemoteStore`, :class:`DistributionStore`), the leases that keep
two syncs off one repository (:class:`LeaseStore`) and the users of the registry API with their
grants (:class:`UserStore`). The services (registry, repository,
sync, layout transfer, the server) name these protocols, never an implementation;
:class:`~ocimirror.backends.sql.SQLMetadataStore` implements all of them over SQLite and
PostgreSQL, and ``tests/backends/test_metadata_store.py`` holds it to them.

Two rules are the store's to keep, inside its own transactions, so no caller can get around
them:

* **Recording** (:meth:`ContentStore.record_content`): a manifest is recorded only when
  everything it references is recorded: child manifests and blobs, except foreign layers
  (references of kind ``"foreign"``), which live at their URLs.
* **Publishing** (:meth:`RepositoryStore.new_version`): a version is closed under references.
  Every manifest in it has its child manifests and blobs in it, every tag points at a
  manifest in it, every signature signs a manifest in it; a version that would break this is
  not published (:class:`~ocimirror.errors.IncompleteContent`). A builder opened with a
  :class:`Lease` publishes only while that lease is still held
  (:class:`~ocimirror.errors.LeaseLost`).

Membership is stored as intervals: a row says "this content is in the repository from version
``version_added`` until (not including) ``version_removed``". A new version therefore costs
O(changes), and any version's content is one indexed query.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Literal, Protocol, TypeAlias

import attrs

from ocimirror.backends.pullthrough import PullThroughRecord, PullThroughStore

__all__ = [
    "CONTENT_TYPES",
    "REQUIRED_KINDS",
    "BlobRecord",
    "CleanupCounts",
    "Closure",
    "Coalesce",
    "ContentBatch",
    "ContentStore",
    "ContentType",
    "DistributionRecord",
    "DistributionStore",
    "Grant",
    "Lease",
    "LeaseStore",
    "ManifestRecord",
    "MetadataStore",
    "PullThroughRecord",
    "PullThroughStore",
    "Reference",
    "Rejection",
    "RemoteRecord",
    "RemoteStore",
    "RepositoryRecord",
    "RepositoryStore",
    "Role",
    "SignatureRecord",
    "UploadRecord",
    "UploadStore",
    "UserRecord",
    "UserStore",
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


#: One reference of a manifest: (child digest, kind, platform). ``kind`` is ``"manifest"`` (a
#: child of an index), ``"blob"`` (a config or layer that must be recorded) or ``"foreign"``
#: (a non-distributable layer that is not kept); ``platform`` is an index entry's platform.
Reference: TypeAlias = tuple[str, str, dict[str, Any] | None]

#: The reference kinds a recorded manifest needs recorded too, with their content types.
REQUIRED_KINDS: Mapping[str, ContentType] = {
    "manifest": "container.manifest",
    "blob": "container.blob",
}


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


@attrs.define(kw_only=True)
class ContentBatch:
    """Content that arrives together (a sync, a layout import, a push), recorded at once.

    ``blobs`` must already be in the blob store, verified; ``touch_*`` are digests that were
    reused and whose orphan grace period restarts.
    """

    blobs: dict[str, tuple[int, str | None]] = attrs.field(factory=dict)
    manifests: dict[str, tuple[ManifestRecord, list[Reference]]] = attrs.field(factory=dict)
    signatures: dict[str, SignatureRecord] = attrs.field(factory=dict)
    #: Blobs recorded without their bytes (on-demand content): digest -> (size, media type,
    #: the remote that provides them).
    remote_blobs: dict[str, tuple[int, str | None, str]] = attrs.field(factory=dict)
    touch_blobs: set[str] = attrs.field(factory=set)
    touch_manifests: set[str] = attrs.field(factory=set)

    def add_blob(self, digest: str, size: int, media_type: str | None = None) -> None:
        """A blob now in the blob store."""
        self.blobs[digest] = (size, media_type)

    def add_manifest(self, record: ManifestRecord, references: list[Reference]) -> None:
        """A manifest and its references, in order."""
        self.manifests[record.digest] = (record, references)

    def add_signature(self, record: SignatureRecord) -> None:
        """A signature of a manifest."""
        self.signatures[record.digest] = record

    def add_remote_blob(self, digest: str, size: int, media_type: str | None, remote: str) -> None:
        """A blob whose bytes stay with ``remote`` until someone asks for them."""
        self.remote_blobs[digest] = (size, media_type, remote)

    def __bool__(self) -> bool:
        return bool(
            self.blobs
            or self.manifests
            or self.signatures
            or self.remote_blobs
            or self.touch_blobs
            or self.touch_manifests
        )


@attrs.frozen(kw_only=True)
class Rejection:
    """Content :meth:`ContentStore.record_content` refused: what it references that is not
    recorded (``missing``, of ``kind`` ``"manifest"``, ``"blob"`` or, for a signature,
    ``"signed"``)."""

    digest: str
    missing: str
    kind: str

    @property
    def reason(self) -> str:
        """One sentence for a report."""
        what = {"manifest": "child manifest", "blob": "blob", "signed": "signed manifest"}
        kind = what.get(self.kind, self.kind)
        return f"{self.digest} references {kind} {self.missing}, which is not recorded"


@attrs.frozen(kw_only=True)
class Closure:
    """A set of manifests and everything under them: manifests parents first, then blobs.

    ``missing`` lists digests reached (roots or children) that are not recorded manifests.
    """

    manifests: tuple[str, ...]
    blobs: tuple[str, ...]
    missing: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Lease:
    """A repository's lease as taken: ``holder`` is unique to this taking, so it is also the
    fencing token a version builder checks before it publishes."""

    repository: str
    holder: str
    purpose: str
    expires: datetime


@attrs.frozen(kw_only=True)
class Coalesce:
    """How a push's version folds into the one before it (see ``docs/push.md``).

    The previous version is squashed into the new one when it too was made by a push, less
    than ``quiet`` seconds ago, in a burst that began less than ``longest`` seconds ago, and no
    distribution is pinned to it. A burst of pushes thus leaves one version, and a repository
    pushed to without pause still gets a version every ``longest`` seconds.
    """

    quiet: float = 10.0
    longest: float = 600.0


@attrs.frozen(kw_only=True)
class UploadRecord:
    """A blob upload in progress: the bytes so far are ``parts``, unrecorded blobs in order."""

    id: str
    #: The repository name (base path) the upload was started on.
    name: str
    #: Bytes received so far (the sum of the parts' sizes).
    size: int
    #: (digest, size) of each part, in order.
    parts: tuple[tuple[str, int], ...]
    created: datetime
    touched: datetime


#: What a grant lets a user do on the base paths it matches: ``push`` implies ``pull``.
Role = Literal["pull", "push"]


@attrs.frozen(kw_only=True)
class Grant:
    """A user's role on every base path that ``pattern`` matches (the wildcards of tag
    filters: ``fnmatch.fnmatchcase`` on the whole base path)."""

    pattern: str
    role: Role

    def to_json(self) -> dict[str, str]:
        """The grant as JSON."""
        return {"base_path": self.pattern, "role": self.role}


@attrs.frozen(kw_only=True)
class UserRecord:
    """A user of the registry API as stored, with their grants by pattern. The password hash
    is not part of it (:meth:`UserStore.get_password_hash` reads it for a login)."""

    username: str
    admin: bool
    created: datetime
    grants: tuple[Grant, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The user as JSON (no password, no hash)."""
        return {
            "username": self.username,
            "admin": self.admin,
            "created": self.created.isoformat(),
            "grants": [g.to_json() for g in self.grants],
        }


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
        """Change description, retain_repo_versions or remote (the mirror flag changes only
        in a version's transaction: :meth:`VersionBuilder.set_mirror`)."""
        ...

    async def delete_repository(self, name: str) -> None:
        """Delete a repository and all its versions (content becomes orphan)."""
        ...

    def new_version(
        self,
        repository: str,
        *,
        base_version: int | None = None,
        lease: Lease | None = None,
        coalesce: Coalesce | None = None,
    ) -> AbstractAsyncContextManager[VersionBuilder]:
        """Open a builder for the next version in one locked transaction.

        On a clean exit the version is checked (closed under references) and published
        atomically; nothing changed, no version. With ``lease``, it publishes only if the
        lease is still this holder's (LeaseLost otherwise). With ``coalesce``, the version
        marks itself as made by a push and squashes the previous version into itself when
        that one is part of the same burst (see :class:`Coalesce`).
        """
        ...

    async def referrers(self, repository: str, number: int, subject: str) -> list[ManifestRecord]:
        """The manifests in that version whose ``subject`` is ``subject``, by digest."""
        ...

    async def signatures(
        self, repository: str, number: int, manifest_digest: str
    ) -> list[SignatureRecord]:
        """The signatures in that version that sign ``manifest_digest``, by name."""
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
        """Every key (digest, or tag name) of one content type in a version, sorted."""
        ...

    async def diff_versions(
        self, repository: str, base: int, number: int
    ) -> dict[ContentType, tuple[dict[str, str | None], dict[str, str | None]]]:
        """Per content type, (removed, added) from version ``base`` to ``number`` (either may
        be the older): key -> value (a tag's digest, else None) of what only ``base`` holds,
        and of what only ``number`` holds, sorted by key; a moved tag is in both. Reads only
        what changed in between; VersionNotFound unless both are complete versions."""
        ...


#: The name it had before versions and repositories became one concern.
VersionStore = RepositoryStore


class ContentStore(Protocol):
    """Content shared by every repository: one row per digest."""

    async def record_content(self, batch: ContentBatch) -> dict[str, Rejection]:
        """Record a batch in one transaction; the one way content is recorded.

        A manifest is recorded only when each reference it needs (``"manifest"`` and
        ``"blob"`` kinds) is recorded already or accepted from the same batch; a signature
        only when its manifest is. What is refused is returned by digest, with the first
        missing reference; the rest is recorded. Content already recorded is kept (same
        digest, same content) and touched, restarting its orphan grace period.
        """
        ...

    async def get_blob(self, digest: str) -> BlobRecord | None:
        """The blob's record, or None."""
        ...

    async def get_manifest(self, digest: str) -> ManifestRecord | None:
        """The manifest's record, or None."""
        ...

    async def manifest_references(self, digest: str) -> list[tuple[str, str]]:
        """(child digest, kind) of each reference of a stored manifest, in order."""
        ...

    async def references_many(self, digests: list[str]) -> dict[str, list[tuple[str, str]]]:
        """parent -> [(child, kind), ...] for many stored manifests at once."""
        ...

    async def closure(self, roots: list[str]) -> Closure:
        """The recorded manifests ``roots`` and everything under them."""
        ...

    async def existing_manifests(self, digests: list[str]) -> set[str]:
        """Which of ``digests`` are recorded manifests."""
        ...

    async def known_blob_digests(self, digests: list[str]) -> set[str]:
        """Which of ``digests`` have a blob record."""
        ...

    async def signatures_of_manifests(self, digests: list[str]) -> dict[str, list[SignatureRecord]]:
        """manifest digest -> every recorded signature of it (in any repository), by name."""
        ...

    async def blob_sources(self, digest: str) -> list[str]:
        """The remotes a blob recorded without its bytes can be fetched from, by name."""
        ...

    async def remote_sources(
        self, digest: str
    ) -> list[tuple[str, dict[str, Any], tuple[datetime, str] | None]]:
        """(remote name, its fields, its cooldown or None) for each remote providing a blob."""
        ...

    def iter_blobs(self) -> AsyncIterator[BlobRecord]:
        """Every blob record (for repair)."""
        ...

    def iter_manifest_digests(self) -> AsyncIterator[str]:
        """Every recorded manifest's digest (for repair)."""
        ...

    async def delete_orphans(self, older_than: datetime) -> CleanupCounts:
        """Delete content no version references and untouched since ``older_than``."""
        ...


class RemoteStore(Protocol):
    """Remotes: where content comes from, stored as their fields."""

    async def create_remote(self, name: str, fields: Mapping[str, Any]) -> RemoteRecord:
        """Store a remote; AlreadyExists when the name is taken."""
        ...

    async def get_remote(self, name: str) -> RemoteRecord:
        """The remote named ``name``; RemoteNotFound otherwise."""
        ...

    async def list_remotes(self) -> list[RemoteRecord]:
        """Every remote, by name."""
        ...

    async def update_remote(self, name: str, fields: Mapping[str, Any]) -> RemoteRecord:
        """Replace a remote's fields."""
        ...

    async def delete_remote(self, name: str) -> None:
        """Delete a remote; repositories that named it forget it."""
        ...

    async def get_remote_cooldown(self, remote: str) -> tuple[datetime, str] | None:
        """Until when a remote that failed is left alone, and why; ``None`` when it is not."""
        ...

    async def set_remote_cooldown(self, remote: str, until: datetime, reason: str) -> None:
        """Leave a remote alone until ``until`` (every process reads this)."""
        ...


class DistributionStore(Protocol):
    """Distributions: base paths that serve a repository or one of its versions."""

    async def create_distribution(
        self, name: str, base_path: str, **fields: Any
    ) -> DistributionRecord:
        """Store a distribution; AlreadyExists when the name or base path is taken."""
        ...

    async def get_distribution(
        self, name: str | None = None, *, base_path: str | None = None
    ) -> DistributionRecord:
        """A distribution by name or base path; DistributionNotFound otherwise."""
        ...

    async def serving(self, base_path: str) -> tuple[DistributionRecord, RepositoryRecord | None]:
        """The distribution at ``base_path`` and the repository it serves (``None`` when it
        serves none), read together; DistributionNotFound otherwise."""
        ...

    async def list_distributions(self) -> list[DistributionRecord]:
        """Every distribution, by name."""
        ...

    async def update_distribution(self, name: str, **fields: Any) -> DistributionRecord:
        """Change some fields of a distribution."""
        ...

    async def delete_distribution(self, name: str) -> None:
        """Delete a distribution (the repository is untouched)."""
        ...


class LeaseStore(Protocol):
    """Leases: one long job (a sync) per repository, shared by every process."""

    async def acquire_lease(
        self,
        repository: str,
        *,
        holder: str,
        purpose: str,
        ttl: float,
        is_stale: Callable[[str], bool] | None = None,
    ) -> Lease:
        """Take the repository's lease, or raise RepositoryBusy naming who holds it.

        An expired lease is taken over, and so is one whose holder ``is_stale`` says is gone.
        """
        ...

    async def renew_lease(self, repository: str, *, holder: str, ttl: float) -> bool:
        """Extend a lease this holder owns; False if it was lost."""
        ...

    async def release_lease(self, repository: str, *, holder: str) -> None:
        """Give a lease back (nothing happens if this holder does not own it)."""
        ...


class UploadStore(Protocol):
    """Blob uploads in progress, shared by every server process."""

    async def create_upload(self, upload_id: str, name: str) -> UploadRecord:
        """Start an upload with no bytes."""
        ...

    async def get_upload(self, upload_id: str) -> UploadRecord:
        """The upload; :class:`~ocimirror.errors.UploadNotFound` if there is none."""
        ...

    async def append_upload(
        self, upload_id: str, *, offset: int, digest: str, size: int
    ) -> UploadRecord:
        """Add a part that starts at ``offset``, which must be the bytes received so far
        (:class:`~ocimirror.errors.RangeNotSatisfiable` otherwise: the check and the append
        are one step, so two processes cannot both append at one offset)."""
        ...

    async def delete_upload(self, upload_id: str) -> UploadRecord | None:
        """Forget the upload (finished or cancelled); the record it had, if any."""
        ...

    async def complete_upload(
        self, upload_id: str, *, digest: str, size: int, media_type: str | None = None
    ) -> None:
        """Record the upload's blob (its bytes verified in the blob store) and forget the
        upload, in one transaction."""
        ...

    async def expire_uploads(self, older_than: datetime) -> list[UploadRecord]:
        """Forget uploads untouched since ``older_than``; the records they had."""
        ...

    async def upload_parts(self) -> set[str]:
        """The digests of every part of every upload in progress."""
        ...


class UserStore(Protocol):
    """Users of the registry API and their grants. Passwords are stored only as hashes made by
    the caller (:mod:`ocimirror.users`); the store never sees a password."""

    async def create_user(
        self, username: str, *, password_hash: str, admin: bool = False
    ) -> UserRecord:
        """Store a user with no grants; AlreadyExists when the name is taken."""
        ...

    async def get_user(self, username: str) -> UserRecord:
        """The user named ``username``; UserNotFound otherwise."""
        ...

    async def list_users(self) -> list[UserRecord]:
        """Every user, by name."""
        ...

    async def get_password_hash(self, username: str) -> str | None:
        """The user's password hash, or None when there is no such user."""
        ...

    async def update_user(
        self, username: str, *, password_hash: str | None = None, admin: bool | None = None
    ) -> UserRecord:
        """Change the password hash or the admin flag (None keeps it); UserNotFound otherwise."""
        ...

    async def set_grant(self, username: str, pattern: str, role: Role) -> UserRecord:
        """Give the user ``role`` on ``pattern``, replacing the role it had there."""
        ...

    async def delete_grant(self, username: str, pattern: str) -> UserRecord:
        """Take back the user's grant on ``pattern``; NotFound when there is none."""
        ...

    async def delete_user(self, username: str) -> None:
        """Delete a user and their grants; UserNotFound otherwise."""
        ...


class MetadataStore(
    RepositoryStore,
    ContentStore,
    RemoteStore,
    DistributionStore,
    PullThroughStore,
    LeaseStore,
    UploadStore,
    UserStore,
    Protocol,
):
    """Everything the database holds."""

    #: Where it is, with any password hidden.
    url: str

    async def open(self) -> None:
        """Connect, create or check the schema."""
        ...

    async def close(self) -> None:
        """Dispose of what this store created."""
        ...


class VersionBuilder(Protocol):
    """Changes to a repository, applied inside one locked transaction.

    Presence checks see the version being built, including the changes made so far. When the
    block exits cleanly the store checks the version is closed under references and publishes
    it; ``result`` is then the published (or, with no change, the current latest) version,
    and ``created`` says which.
    """

    repository: str
    number: int
    result: VersionRecord | None
    created: bool

    async def add(self, content_type: ContentType, key: str, value: str | None = None) -> bool:
        """Add content (for tags: ``key`` is the name, ``value`` the digest); True if new."""
        ...

    async def add_many(self, content_type: ContentType, items: Mapping[str, str | None]) -> int:
        """Add many keys at once (tags: name -> digest, others: digest -> None); count new.

        Blobs, manifests and signatures must be recorded (NotFound otherwise).
        """
        ...

    async def remove(self, content_type: ContentType, key: str) -> bool:
        """Remove content (for tags: by name); True if it was present."""
        ...

    async def remove_many(self, content_type: ContentType, keys: list[str]) -> int:
        """Remove many keys at once; count those that were present."""
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

    async def signature_targets(self) -> dict[str, str]:
        """Signature digest -> signed manifest digest, for the version being built."""
        ...

    async def all_keys(self, content_type: ContentType) -> set[str]:
        """Every key of a content type in the version being built (O(content); for mirror sets)."""
        ...

    async def all_tags(self) -> dict[str, str]:
        """Every tag (name -> digest) in the version being built."""
        ...

    async def closure(self, roots: list[str]) -> Closure:
        """The recorded manifests ``roots`` and everything under them (as
        :meth:`ContentStore.closure`, inside this transaction)."""
        ...

    async def set_mirror(self, mirror: bool = True) -> None:
        """Mark the repository as a mirror (synced from a remote), in this transaction."""
        ...

    @property
    def mirrors(self) -> bool:
        """Whether the repository mirrors a remote (it has one, or a sync published into it),
        as of this transaction: pushes may not change such a repository."""
        ...
