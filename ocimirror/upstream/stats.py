"""Counters of what a :class:`~ocimirror.upstream.RegistryClient` asked its upstream for."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["REQUEST_KINDS", "RequestStats"]

#: The kinds of request counted, in display order. ``retry`` counts repeated attempts.
REQUEST_KINDS: tuple[str, ...] = (
    "token",
    "ping",
    "tags",
    "manifest_head",
    "manifest_get",
    "blob",
    "blob_head",
    "signature",
    "referrers",
    "retry",
)


def _zeroes() -> dict[str, int]:
    return dict.fromkeys(REQUEST_KINDS, 0)


@attrs.define
class RequestStats:
    """Request counts by kind and bytes downloaded; one per client, readable at any time.

    Each attempt counts once (a retried request counts once per attempt, plus once under
    ``retry``); the re-sent request of a 401 challenge is not counted again, but the token it
    fetched is, under ``token``.
    """

    #: Requests by kind (see :data:`REQUEST_KINDS`).
    requests: dict[str, int] = attrs.field(factory=_zeroes)
    #: Body bytes received for manifests, blobs and tag lists.
    bytes_downloaded: int = 0

    def count(self, kind: str, n: int = 1) -> None:
        """Add ``n`` to the counter of ``kind``."""
        self.requests[kind] = self.requests.get(kind, 0) + n

    def add_bytes(self, n: int) -> None:
        """Add ``n`` to :attr:`bytes_downloaded`."""
        self.bytes_downloaded += n

    def to_json(self) -> dict[str, Any]:
        """The counters as JSON: ``{"requests": {...}, "bytes_downloaded": n}``."""
        return {"requests": dict(self.requests), "bytes_downloaded": self.bytes_downloaded}
