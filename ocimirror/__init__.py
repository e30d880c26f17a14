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

import importlib
from typing import TYPE_CHECKING, Any

from ocimirror._version import __version__

if TYPE_CHECKING:
    from ocimirror.blocking import Registry, Repository, open_registry
    from ocimirror.core.descriptor import Descriptor, Platform
    from ocimirror.core.digest import Digest
    from ocimirror.core.manifest import ImageIndex, ImageManifest, Manifest, parse_manifest
    from ocimirror.core.mediatype import MediaType
    from ocimirror.core.reference import Reference
    from ocimirror.distribution import Distribution
    from ocimirror.errors import AlreadyExists, Conflict, InvalidError, NotFound, OcimirrorError
    from ocimirror.registry import AsyncRegistry, CleanupReport, RepairReport
    from ocimirror.remote import Remote, SyncPolicy
    from ocimirror.repository import AsyncRepository
    from ocimirror.versions import ContentSummary, RepositoryVersion

    open = open_registry

# Exports load on first use, so ``import ocimirror.core`` stays free of the I/O stack.
_EXPORTS = {
    "Registry": "ocimirror.blocking",
    "Repository": "ocimirror.blocking",
    "open_registry": "ocimirror.blocking",
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
    "Conflict": "ocimirror.errors",
    "InvalidError": "ocimirror.errors",
    "NotFound": "ocimirror.errors",
    "OcimirrorError": "ocimirror.errors",
    "AsyncRegistry": "ocimirror.registry",
    "CleanupReport": "ocimirror.registry",
    "RepairReport": "ocimirror.registry",
    "Remote": "ocimirror.remote",
    "SyncPolicy": "ocimirror.remote",
    "AsyncRepository": "ocimirror.repository",
    "ContentSummary": "ocimirror.versions",
    "RepositoryVersion": "ocimirror.versions",
}


def __getattr__(name: str) -> Any:
    target = "open_registry" if name == "open" else name
    module = _EXPORTS.get(target)
    if module is None:
        raise AttributeError(f"module 'ocimirror' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), target)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
    "parse_manifest",
]
