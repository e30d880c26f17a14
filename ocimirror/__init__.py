"""ocimirror: mirror and host container images from Python.

Blocking, for scripts::

    import ocimirror
    with ocimirror.open() as registry:          # SQLite + files under $OCIMIRROR_HOME
        repo = registry.create_repository("foo")
        print(repo.import_layout("image-layout/").content_summary)

Async, for services and notebooks::

    registry = await ocimirror.AsyncRegistry.open(database_url=..., storage_url=...)
"""

from ocimirror.blocking import Registry, Repository, open_registry
from ocimirror.core.descriptor import Descriptor, Platform
from ocimirror.core.digest import Digest
from ocimirror.core.manifest import ImageIndex, ImageManifest, Manifest, parse_manifest
from ocimirror.core.mediatype import MediaType
from ocimirror.core.reference import Reference
from ocimirror.distribution import Distribution
from ocimirror.errors import (
    AlreadyExists,
    Conflict,
    InvalidError,
    NotFound,
    OcimirrorError,
)
from ocimirror.registry import AsyncRegistry, CleanupReport, RepairReport
from ocimirror.remote import Remote, SyncPolicy
from ocimirror.repository import AsyncRepository
from ocimirror.versions import ContentSummary, RepositoryVersion

__version__ = "0.1.0"

#: Open a blocking registry (alias of :func:`open_registry`).
open = open_registry  # noqa: A001

__all__ = [
    "AlreadyExists",
    "AsyncRegistry",
    "AsyncRepository",
    "CleanupReport",
    "Conflict",
    "ContentSummary",
    "Descriptor",
    "Digest",
    "Distribution",
    "ImageIndex",
    "ImageManifest",
    "InvalidError",
    "Manifest",
    "MediaType",
    "NotFound",
    "OcimirrorError",
    "Platform",
    "Reference",
    "Registry",
    "Remote",
    "RepairReport",
    "Repository",
    "RepositoryVersion",
    "SyncPolicy",
    "__version__",
    "open",
    "open_registry",
]
