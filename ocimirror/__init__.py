"""ocimirror: mirror and host container images from Python.

Blocking, for scripts::

    import ocimirror
    with ocimirror.open() as registry:          # SQLite + files under $OCIMIRROR_HOME
        repo = registry.create_repository("foo")
        print(repo.import_layout("image-layout/").content_summary)

Async, for services and notebooks::

    registry = await ocimirror.AsyncRegistry.open(database_url=..., storage_url=...)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ocimirror._lazy import exports
from ocimirror._version import __version__

if TYPE_CHECKING:
    from ocimirror.backends.metadata import UserRecord
    from ocimirror.blocking import Registry, Repository, open
    from ocimirror.core.descriptor import Descriptor, Platform
    from ocimirror.core.digest import Digest
    from ocimirror.core.manifest import ImageIndex, ImageManifest, Manifest, parse_manifest
    from ocimirror.core.mediatype import MediaType
    from ocimirror.core.reference import Reference
    from ocimirror.distribution import Distribution
    from ocimirror.errors import (
        AlreadyExists,
        BlobNotFound,
        Conflict,
        Denied,
        DigestMismatch,
        DistributionNotFound,
        EmptyMirror,
        IncompleteContent,
        IntegrityError,
        InvalidDigest,
        InvalidError,
        InvalidLayout,
        InvalidManifest,
        InvalidName,
        InvalidPlatform,
        InvalidReference,
        LeaseLost,
        ManifestNotFound,
        NotFound,
        OcimirrorError,
        RemoteNotFound,
        RepositoryBusy,
        RepositoryNotFound,
        SchemaError,
        SignatureInvalid,
        SizeMismatch,
        TagNotFound,
        Unauthorized,
        UpstreamError,
        UpstreamUnavailable,
        UserNotFound,
        VersionNotFound,
    )
    from ocimirror.pullthrough import PullThroughDistribution, PullThroughRemote
    from ocimirror.registry import AsyncRegistry, CleanupReport, RepairReport
    from ocimirror.remote import POLICIES, Remote, SyncPolicy
    from ocimirror.repository import AsyncRepository
    from ocimirror.sync import SyncProgress, SyncResult
    from ocimirror.transfer import ExportReport
    from ocimirror.versions import (
        ContentSummary,
        RepositoryVersion,
        TagMove,
        VersionDiff,
        VersionList,
    )

# Exports load on first use, so ``import ocimirror.core`` stays free of the I/O stack.
_EXPORTS = {
    "Registry": "ocimirror.blocking",
    "Repository": "ocimirror.blocking",
    "open": "ocimirror.blocking",
    "Descriptor": "ocimirror.core.descriptor",
    "Platform": "ocimirror.core.descriptor",
    "Digest": "ocimirror.core.digest",
    "ImageIndex": "ocimirror.core.manifest",
    "ImageManifest": "ocimirror.core.manifest",
    "Manifest": "ocimirror.core.manifest",
    "parse_manifest": "ocimirror.core.manifest",
    "MediaType": "ocimirror.core.mediatype",
    "Reference": "ocimirror.core.reference",
    "Distribution": "ocimirror.distribution",
    "AlreadyExists": "ocimirror.errors",
    "BlobNotFound": "ocimirror.errors",
    "Conflict": "ocimirror.errors",
    "Denied": "ocimirror.errors",
    "DigestMismatch": "ocimirror.errors",
    "DistributionNotFound": "ocimirror.errors",
    "EmptyMirror": "ocimirror.errors",
    "IncompleteContent": "ocimirror.errors",
    "IntegrityError": "ocimirror.errors",
    "InvalidDigest": "ocimirror.errors",
    "InvalidError": "ocimirror.errors",
    "InvalidLayout": "ocimirror.errors",
    "InvalidManifest": "ocimirror.errors",
    "InvalidName": "ocimirror.errors",
    "InvalidPlatform": "ocimirror.errors",
    "InvalidReference": "ocimirror.errors",
    "LeaseLost": "ocimirror.errors",
    "ManifestNotFound": "ocimirror.errors",
    "NotFound": "ocimirror.errors",
    "OcimirrorError": "ocimirror.errors",
    "RemoteNotFound": "ocimirror.errors",
    "RepositoryBusy": "ocimirror.errors",
    "RepositoryNotFound": "ocimirror.errors",
    "SchemaError": "ocimirror.errors",
    "SignatureInvalid": "ocimirror.errors",
    "SizeMismatch": "ocimirror.errors",
    "TagNotFound": "ocimirror.errors",
    "Unauthorized": "ocimirror.errors",
    "UpstreamError": "ocimirror.errors",
    "UpstreamUnavailable": "ocimirror.errors",
    "UserNotFound": "ocimirror.errors",
    "VersionNotFound": "ocimirror.errors",
    "AsyncRegistry": "ocimirror.registry",
    "CleanupReport": "ocimirror.registry",
    "RepairReport": "ocimirror.registry",
    "POLICIES": "ocimirror.remote",
    "Remote": "ocimirror.remote",
    "SyncPolicy": "ocimirror.remote",
    "AsyncRepository": "ocimirror.repository",
    "PullThroughDistribution": "ocimirror.pullthrough",
    "PullThroughRemote": "ocimirror.pullthrough",
    "SyncProgress": "ocimirror.sync",
    "SyncResult": "ocimirror.sync",
    "ExportReport": "ocimirror.transfer",
    "UserRecord": "ocimirror.backends.metadata",
    "ContentSummary": "ocimirror.versions",
    "RepositoryVersion": "ocimirror.versions",
    "TagMove": "ocimirror.versions",
    "VersionDiff": "ocimirror.versions",
    "VersionList": "ocimirror.versions",
}


__getattr__, __dir__ = exports(__name__, _EXPORTS, globals())

__all__ = [
    "POLICIES",
    "AlreadyExists",
    "AsyncRegistry",
    "AsyncRepository",
    "BlobNotFound",
    "CleanupReport",
    "Conflict",
    "ContentSummary",
    "Denied",
    "Descriptor",
    "Digest",
    "DigestMismatch",
    "Distribution",
    "DistributionNotFound",
    "EmptyMirror",
    "ExportReport",
    "ImageIndex",
    "ImageManifest",
    "IncompleteContent",
    "IntegrityError",
    "InvalidDigest",
    "InvalidError",
    "InvalidLayout",
    "InvalidManifest",
    "InvalidName",
    "InvalidPlatform",
    "InvalidReference",
    "LeaseLost",
    "Manifest",
    "ManifestNotFound",
    "MediaType",
    "NotFound",
    "OcimirrorError",
    "Platform",
    "PullThroughDistribution",
    "PullThroughRemote",
    "Reference",
    "Registry",
    "Remote",
    "RemoteNotFound",
    "RepairReport",
    "Repository",
    "RepositoryBusy",
    "RepositoryNotFound",
    "RepositoryVersion",
    "SchemaError",
    "SignatureInvalid",
    "SizeMismatch",
    "SyncPolicy",
    "SyncProgress",
    "SyncResult",
    "TagMove",
    "TagNotFound",
    "Unauthorized",
    "UpstreamError",
    "UpstreamUnavailable",
    "UserNotFound",
    "UserRecord",
    "VersionDiff",
    "VersionList",
    "VersionNotFound",
    "__version__",
    "open",
    "parse_manifest",
]
