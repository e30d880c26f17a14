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
    │   ├── InvalidLayout                       an OCI image layout that cannot be read
    │   ├── InvalidUpload                       BLOB_UPLOAD_INVALID (a chunk out of order...)
    │   └── RangeNotSatisfiable                 UNSUPPORTED 416 (a byte range of a blob)
    │       └── ChunkOutOfOrder                 BLOB_UPLOAD_INVALID 416 (an upload's chunk)
    ├── Unsupported                             UNSUPPORTED (a method the API does not serve)
    ├── Unauthorized                            UNAUTHORIZED 401 (with a Bearer challenge)
    ├── Denied                                  DENIED 403 (authenticated, but not allowed)
    ├── NotFound (also LookupError)
    │   ├── RepositoryNotFound                  NAME_UNKNOWN
    │   ├── VersionNotFound                     NAME_UNKNOWN
    │   ├── ManifestNotFound                    MANIFEST_UNKNOWN
    │   │   └── ManifestChildUnknown            MANIFEST_INVALID (an index's child)
    │   ├── TagNotFound                         MANIFEST_UNKNOWN
    │   ├── BlobNotFound                        BLOB_UNKNOWN
    │   │   └── ManifestBlobUnknown             MANIFEST_BLOB_UNKNOWN (a manifest's blob)
    │   ├── RemoteNotFound                      NAME_UNKNOWN
    │   ├── DistributionNotFound                NAME_UNKNOWN
    │   ├── UploadNotFound                      BLOB_UPLOAD_UNKNOWN
    │   ├── UserNotFound                        NAME_UNKNOWN
    │   └── UnknownEndpoint                     UNSUPPORTED (no such registry API path)
    ├── AlreadyExists                           a name that must be unique is taken
    ├── Conflict                                the operation is refused in the current state
    │   ├── RepositoryBusy                      another writer holds the repository
    │   ├── LeaseLost                           a sync lost its lease; it may not publish
    │   └── EmptyMirror                         a mirror sync would leave no tag (allow_empty)
    ├── IntegrityError                          content that does not match what was promised
    │   ├── DigestMismatch                      DIGEST_INVALID
    │   ├── SizeMismatch                        SIZE_INVALID
    │   └── IncompleteContent                   MANIFEST_BLOB_UNKNOWN (a version's closure)
    ├── SignatureInvalid                        MANIFEST_INVALID (a signature that does not verify)
    ├── SchemaError                             the database schema is not the one this code knows
    └── UpstreamError                           an upstream registry said no (status and OCI errors)
        └── UpstreamUnavailable                 a remote cannot give on-demand content now

:data:`ERRORS` is the one table of the OCI distribution-spec ``code`` and the HTTP ``status``
the registry API answers each error with; a class not in it answers as its nearest base class
that is. ``exc.code`` and ``exc.status`` read that table.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "ERRORS",
    "OCI_STATUS",
    "AlreadyExists",
    "BlobNotFound",
    "ChunkOutOfOrder",
    "Conflict",
    "Denied",
    "DigestMismatch",
    "DistributionNotFound",
    "EmptyMirror",
    "IncompleteContent",
    "IntegrityError",
    "InvalidDigest",
    "InvalidError",
    "InvalidLayout",
    "InvalidManifest",
    "InvalidName",
    "InvalidPlatform",
    "InvalidReference",
    "InvalidUpload",
    "LeaseLost",
    "ManifestBlobUnknown",
    "ManifestChildUnknown",
    "ManifestNotFound",
    "ManifestTooLarge",
    "NotFound",
    "OcimirrorError",
    "RangeNotSatisfiable",
    "RemoteNotFound",
    "RepositoryBusy",
    "RepositoryNotFound",
    "SchemaError",
    "SignatureInvalid",
    "SizeMismatch",
    "TagNotFound",
    "Unauthorized",
    "UnknownEndpoint",
    "Unsupported",
    "UploadNotFound",
    "UpstreamError",
    "UpstreamUnavailable",
    "UserNotFound",
    "VersionNotFound",
    "oci_error",
]


class OcimirrorError(Exception):
    """Base class of every error raised by ocimirror."""

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    @property
    def code(self) -> str:
        """The OCI error code the registry API answers with (from :data:`ERRORS`)."""
        return oci_error(type(self))[0]

    @property
    def status(self) -> int:
        """The HTTP status the registry API answers with (from :data:`ERRORS`)."""
        return oci_error(type(self))[1]

    def to_oci(self) -> dict[str, Any]:
        """The error as one entry of an OCI error body's ``errors`` list."""
        entry: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return entry


class InvalidError(OcimirrorError, ValueError):
    """Input that is malformed; nothing was written."""


class InvalidDigest(InvalidError):
    """A digest string that is not ``algorithm:hex`` with a known algorithm and length."""


class InvalidName(InvalidError):
    """A repository name or base path that breaks the OCI name rules."""


class InvalidReference(InvalidError):
    """A tag or image reference that cannot be parsed."""


class InvalidManifest(InvalidError):
    """A manifest that is not well-formed JSON or whose descriptors are malformed."""


class ManifestTooLarge(InvalidManifest):
    """A manifest over the size cap (4 MiB)."""


class InvalidPlatform(InvalidError):
    """A platform string that is not ``os/arch[/variant]``."""


class InvalidLayout(InvalidError):
    """An OCI image layout (directory or tar) that cannot be read."""


class RangeNotSatisfiable(InvalidError):
    """A ``Range`` that asks for bytes the blob does not have."""


class InvalidUpload(InvalidError):
    """A blob upload request that does not fit the upload's state (a chunk out of order, a
    malformed ``Content-Range``)."""


class ChunkOutOfOrder(RangeNotSatisfiable):
    """An upload chunk that does not start where the upload ends (``416``; the response's
    ``Range`` says what was received)."""


class Unauthorized(OcimirrorError):
    """The request needs credentials (or a token with more access); ``challenge`` is the
    ``WWW-Authenticate`` value that tells the client where to get a token."""

    def __init__(self, message: str, *, challenge: str | None = None, detail: Any = None) -> None:
        super().__init__(message, detail=detail)
        self.challenge = challenge


class Denied(OcimirrorError):
    """The caller is known but may not do this (a push into a repository that mirrors a
    remote, a user without the grant)."""


class Unsupported(OcimirrorError):
    """A method or operation the registry API does not serve at that path."""


class NotFound(OcimirrorError, LookupError):
    """Something asked for by name or digest does not exist."""


class RepositoryNotFound(NotFound):
    """No repository has that name."""


class VersionNotFound(NotFound):
    """The repository has no such version (never created, deleted, or incomplete)."""


class ManifestNotFound(NotFound):
    """No manifest with that digest is present."""


class ManifestChildUnknown(ManifestNotFound):
    """An index lists a child manifest that is not recorded, so the index cannot be."""


class TagNotFound(NotFound):
    """No tag with that name is present."""


class BlobNotFound(NotFound):
    """No blob with that digest is present."""


class ManifestBlobUnknown(BlobNotFound):
    """A manifest references a blob (config or layer) that is not recorded."""


class RemoteNotFound(NotFound):
    """No remote has that name."""


class DistributionNotFound(NotFound):
    """No distribution has that name or base path."""


class UploadNotFound(NotFound):
    """No blob upload in progress has that ID (never started, finished, or cancelled)."""


class UserNotFound(NotFound):
    """No user has that name."""


class UnknownEndpoint(NotFound):
    """A path that is not an endpoint of the registry API."""


class AlreadyExists(OcimirrorError):
    """A name that must be unique is already taken."""


class Conflict(OcimirrorError):
    """The operation is refused in the current state (for example a push into a mirror)."""


class RepositoryBusy(Conflict):
    """Another writer holds the repository and did not let go in time."""


class LeaseLost(Conflict):
    """A sync no longer holds its repository's lease (another took it over): it may not publish."""


class EmptyMirror(Conflict):
    """A mirror sync would publish a version without a single tag: its filters match none of
    the upstream's tags, or it would remove every tag the repository has. Nothing is published;
    ``allow_empty=True`` (``--allow-empty``) does it on purpose."""


class IntegrityError(OcimirrorError):
    """Content that does not match its digest or announced size; it was not stored."""


class DigestMismatch(IntegrityError):
    """The bytes hash to another digest than the one expected."""


class SizeMismatch(IntegrityError):
    """The bytes are longer or shorter than the size announced."""


class IncompleteContent(IntegrityError):
    """A version would hold a tag or manifest whose references are not all in it.

    The version builder refuses to publish such a version; nothing is written.
    """


class SignatureInvalid(OcimirrorError):
    """An image signature that is malformed, does not verify, or does not vouch for this image
    (another key, another digest, another repository); it is neither trusted nor stored."""


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


class UpstreamUnavailable(UpstreamError):
    """Content that must come from a remote cannot now: the remote failed (connection refused,
    5xx, 429) or is cooling down after failing. ``retry_after`` says when to try again."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: The one table: the OCI distribution-spec error code and the HTTP status the registry API
#: answers each error with. A class that is not listed answers as its nearest listed base.
ERRORS: Mapping[type[OcimirrorError], tuple[str, int]] = MappingProxyType(
    {
        OcimirrorError: ("UNKNOWN", 500),
        InvalidError: ("UNSUPPORTED", 400),
        InvalidDigest: ("DIGEST_INVALID", 400),
        InvalidName: ("NAME_INVALID", 400),
        InvalidReference: ("MANIFEST_INVALID", 400),
        InvalidManifest: ("MANIFEST_INVALID", 400),
        ManifestTooLarge: ("MANIFEST_INVALID", 413),
        # The spec's code table has no range code: "invalid parameters" (UNSUPPORTED) for a
        # read, the upload's own code for a chunk that does not start where the upload ends.
        RangeNotSatisfiable: ("UNSUPPORTED", 416),
        ChunkOutOfOrder: ("BLOB_UPLOAD_INVALID", 416),
        InvalidUpload: ("BLOB_UPLOAD_INVALID", 400),
        Unsupported: ("UNSUPPORTED", 405),
        Unauthorized: ("UNAUTHORIZED", 401),
        Denied: ("DENIED", 403),
        NotFound: ("NAME_UNKNOWN", 404),
        ManifestNotFound: ("MANIFEST_UNKNOWN", 404),
        ManifestChildUnknown: ("MANIFEST_INVALID", 400),
        TagNotFound: ("MANIFEST_UNKNOWN", 404),
        BlobNotFound: ("BLOB_UNKNOWN", 404),
        ManifestBlobUnknown: ("MANIFEST_BLOB_UNKNOWN", 400),
        UploadNotFound: ("BLOB_UPLOAD_UNKNOWN", 404),
        UnknownEndpoint: ("UNSUPPORTED", 404),
        AlreadyExists: ("DENIED", 409),
        Conflict: ("DENIED", 409),
        IntegrityError: ("DIGEST_INVALID", 400),
        SizeMismatch: ("SIZE_INVALID", 400),
        IncompleteContent: ("MANIFEST_BLOB_UNKNOWN", 404),
        # The spec has no signature code; a signature is pushed as a manifest (cosign) or
        # beside one (the signature extension), so a bad one is refused as an invalid manifest.
        SignatureInvalid: ("MANIFEST_INVALID", 400),
        # CNCF Distribution's code for a service that cannot answer now (a proxy's upstream).
        UpstreamUnavailable: ("UNAVAILABLE", 503),
    }
)


def oci_error(cls: type[OcimirrorError]) -> tuple[str, int]:
    """(OCI code, HTTP status) of an error class: its own row of :data:`ERRORS`, or its
    nearest base class's."""
    for klass in cls.__mro__:
        row = ERRORS.get(klass)
        if row is not None:
            return row
    raise TypeError(f"{cls!r} is not an ocimirror error")


#: Each OCI code with the status of the first error class that answers with it, derived from
#: :data:`ERRORS` (a view kept for callers that only have a code).
OCI_STATUS: Mapping[str, int] = MappingProxyType(
    {code: status for code, status in reversed(list(ERRORS.values()))}
)
