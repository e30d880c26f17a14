"""Every error ocimirror raises, in one place.

The hierarchy::

    OcimirrorError
    ├── InvalidError (also ValueError)          bad input, refused before anything is written
    │   ├── InvalidDigest                       DIGEST_INVALID
    │   ├── InvalidName                         NAME_INVALID
    │   ├── InvalidReference                    MANIFEST_INVALID (a tag or reference)
    │   ├── InvalidManifest                     MANIFEST_INVALID
    │   │   └── ManifestTooLarge                MANIFEST_INVALID (over the size cap)
    │   ├── InvalidPlatform                     UNSUPPORTED
    │   └── InvalidLayout                       an OCI image layout that cannot be read
    ├── NotFound (also LookupError)
    │   ├── RepositoryNotFound                  NAME_UNKNOWN
    │   ├── VersionNotFound                     NAME_UNKNOWN
    │   ├── ManifestNotFound                    MANIFEST_UNKNOWN
    │   ├── TagNotFound                         MANIFEST_UNKNOWN
    │   ├── BlobNotFound                        BLOB_UNKNOWN
    │   ├── RemoteNotFound                      NAME_UNKNOWN
    │   └── DistributionNotFound                NAME_UNKNOWN
    ├── AlreadyExists                           a name that must be unique is taken
    ├── Conflict                                the operation is refused in the current state
    │   └── RepositoryBusy                      another writer holds the repository
    ├── IntegrityError                          content that does not match what was promised
    │   ├── DigestMismatch                      DIGEST_INVALID
    │   └── SizeMismatch                        SIZE_INVALID
    ├── SchemaError                             the database schema is not the one this code knows
    └── UpstreamError                           an upstream registry said no (status and OCI errors)

Each class carries the OCI distribution-spec ``code`` and HTTP ``status`` the registry API
answers with; :data:`OCI_STATUS` is the one table that maps the spec's codes to statuses.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "OCI_STATUS",
    "AlreadyExists",
    "BlobNotFound",
    "Conflict",
    "DigestMismatch",
    "DistributionNotFound",
    "IntegrityError",
    "InvalidDigest",
    "InvalidError",
    "InvalidLayout",
    "InvalidManifest",
    "InvalidName",
    "InvalidPlatform",
    "InvalidReference",
    "ManifestNotFound",
    "ManifestTooLarge",
    "NotFound",
    "OcimirrorError",
    "RemoteNotFound",
    "RepositoryBusy",
    "RepositoryNotFound",
    "SchemaError",
    "SizeMismatch",
    "TagNotFound",
    "UpstreamError",
    "VersionNotFound",
]

#: The OCI distribution-spec error codes and the HTTP status each is answered with.
OCI_STATUS: dict[str, int] = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 404,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 415,
    "TOOMANYREQUESTS": 429,
    "RANGE_INVALID": 416,
}


class OcimirrorError(Exception):
    """Base class of every error raised by ocimirror."""

    #: The OCI error code the registry API answers with.
    code: ClassVar[str] = "UNKNOWN"
    #: The HTTP status the registry API answers with.
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_oci(self) -> dict[str, Any]:
        """The error as one entry of an OCI error body's ``errors`` list."""
        entry: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return entry


class InvalidError(OcimirrorError, ValueError):
    """Input that is malformed; nothing was written."""

    code = "UNSUPPORTED"
    status = 400


class InvalidDigest(InvalidError):
    """A digest string that is not ``algorithm:hex`` with a known algorithm and length."""

    code = "DIGEST_INVALID"


class InvalidName(InvalidError):
    """A repository name or base path that breaks the OCI name rules."""

    code = "NAME_INVALID"


class InvalidReference(InvalidError):
    """A tag or image reference that cannot be parsed."""

    code = "MANIFEST_INVALID"


class InvalidManifest(InvalidError):
    """A manifest that is not well-formed JSON or whose descriptors are malformed."""

    code = "MANIFEST_INVALID"


class ManifestTooLarge(InvalidManifest):
    """A manifest over the size cap (4 MiB)."""

    status = 413


class InvalidPlatform(InvalidError):
    """A platform string that is not ``os/arch[/variant]``."""

    code = "UNSUPPORTED"


class InvalidLayout(InvalidError):
    """An OCI image layout (directory or tar) that cannot be read."""

    code = "UNSUPPORTED"


class NotFound(OcimirrorError, LookupError):
    """Something asked for by name or digest does not exist."""

    code = "NAME_UNKNOWN"
    status = 404


class RepositoryNotFound(NotFound):
    """No repository has that name."""


class VersionNotFound(NotFound):
    """The repository has no such version (never created, deleted, or incomplete)."""


class ManifestNotFound(NotFound):
    """No manifest with that digest is present."""

    code = "MANIFEST_UNKNOWN"


class TagNotFound(NotFound):
    """No tag with that name is present."""

    code = "MANIFEST_UNKNOWN"


class BlobNotFound(NotFound):
    """No blob with that digest is present."""

    code = "BLOB_UNKNOWN"


class RemoteNotFound(NotFound):
    """No remote has that name."""


class DistributionNotFound(NotFound):
    """No distribution has that name or base path."""


class AlreadyExists(OcimirrorError):
    """A name that must be unique is already taken."""

    code = "DENIED"
    status = 409


class Conflict(OcimirrorError):
    """The operation is refused in the current state (for example a push into a mirror)."""

    code = "DENIED"
    status = 409


class RepositoryBusy(Conflict):
    """Another writer holds the repository and did not let go in time."""


class IntegrityError(OcimirrorError):
    """Content that does not match its digest or announced size; it was not stored."""

    code = "DIGEST_INVALID"
    status = 400


class DigestMismatch(IntegrityError):
    """The bytes hash to another digest than the one expected."""


class SizeMismatch(IntegrityError):
    """The bytes are longer or shorter than the size announced."""

    code = "SIZE_INVALID"


class SchemaError(OcimirrorError):
    """The metadata database holds a schema version this code cannot use."""


class UpstreamError(OcimirrorError):
    """An upstream registry refused a request; carries its status and OCI errors."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, detail=errors)
        self.status_code = status_code
        self.errors = errors or []
        self.url = url
