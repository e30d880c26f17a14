"""The ``<reference>`` of a path, parsed the way every endpoint answers a bad one.

A reference that cannot name anything (a malformed digest, a tag with a space) is answered
with the endpoint's own "unknown" error, quoting at most 140 characters of it, never with a
500: such a manifest, blob or tag cannot exist.
"""

from __future__ import annotations

from ocimirror.core.digest import Digest
from ocimirror.core.reference import validate_tag
from ocimirror.errors import InvalidDigest, InvalidReference, NotFound

__all__ = ["digest_or", "tag_or"]


def digest_or(
    reference: str, missing: type[NotFound], what: str, *, field: str = "reference"
) -> Digest:
    """``reference`` as a digest; ``missing`` (saying it names no ``what``, with the
    reference under ``field`` in its detail) otherwise."""
    try:
        return Digest.parse(reference)
    except InvalidDigest as exc:
        raise missing(
            f"{reference[:140]!r} is not a valid digest, so names no {what}: {exc.message}",
            detail={field: reference[:140]},
        ) from None


def tag_or(reference: str, missing: type[NotFound] | type[InvalidReference]) -> str:
    """``reference`` as a tag; ``missing`` (saying it is neither a tag nor a digest)
    otherwise."""
    try:
        return validate_tag(reference)
    except InvalidReference as exc:
        raise missing(
            f"{reference[:140]!r} is neither a tag nor a digest: {exc.message}",
            detail={"reference": reference[:140]},
        ) from None
