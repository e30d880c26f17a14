"""``n`` and ``last`` of the list endpoints (tags, catalog), and their ``Link`` header.

``n`` must be a non-negative integer: anything else is answered ``400`` with code
``UNSUPPORTED`` (the OCI spec defines no pagination error code, and Docker's
``PAGINATION_NUMBER_INVALID`` is not one of the spec's codes, which clients must treat as
``UNKNOWN``). ``n=0`` gives an empty list and no ``Link``. Pages hold at most
:data:`MAX_PAGE` entries, also without ``n``: the spec allows fewer than asked when a ``Link``
header points to the rest, and there is one exactly when more may follow.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote

import attrs

from ocimirror.errors import InvalidError

__all__ = ["MAX_PAGE", "Page", "next_link"]

#: The most entries one page holds.
MAX_PAGE = 10_000

_DIGITS = re.compile(r"[0-9]+")


@attrs.frozen
class Page:
    """Which page a list request asks for."""

    #: How many entries, at most :data:`MAX_PAGE`.
    size: int
    #: List entries after this one (not included); ``None``: from the start.
    last: str | None

    @classmethod
    def from_query(cls, query_string: bytes) -> Page:
        """Read ``n`` and ``last`` (the first of each) from a raw query string."""
        n: str | None = None
        last: str | None = None
        query = query_string.decode("utf-8", "replace")
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == "n" and n is None:
                n = value
            elif key == "last" and last is None:
                last = value
        size = MAX_PAGE
        if n is not None:
            if not _DIGITS.fullmatch(n):
                raise InvalidError(
                    f"n must be a non-negative integer, got {n[:40]!r}", detail={"n": n[:40]}
                )
            # More digits than a page can hold is simply "as many as you give".
            size = MAX_PAGE if len(n) > 9 else min(int(n), MAX_PAGE)
        return cls(size=size, last=last or None)


def next_link(root_path: str, path: str, *, last: str, size: int) -> str:
    """The ``Link`` header value pointing to the page after ``last`` (``root_path`` kept)."""
    return f'<{root_path}{path}?last={quote(last, safe="/")}&n={size}>; rel="next"'
