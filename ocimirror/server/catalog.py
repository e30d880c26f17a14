"""``GET /v2/_catalog?n=&last=``: the names this registry serves (Docker's catalog API).

The names are the base paths of distributions that serve a repository and that the caller
may pull (the app's authenticator decides: with token auth, public ones and those the user's
grants cover), sorted.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response

from ocimirror.backends.metadata import DistributionRecord
from ocimirror.server.content import Content
from ocimirror.server.pagination import Page, next_link

__all__ = ["catalog", "listed"]


#: Which of ``(name, public)`` the caller may pull.
Visible = Callable[[Iterable[tuple[str, bool]]], Awaitable[list[str]]]


def listed(distribution: DistributionRecord) -> bool:
    """Whether a distribution can be listed at all: it serves a repository."""
    return distribution.repository is not None


async def catalog(content: Content, request: Request, visible: Visible) -> Response:
    """``{"repositories": [...]}``, one page, with a ``Link`` to the next one if any."""
    page = Page.from_query(request.scope.get("query_string", b""))
    candidates = [(d.base_path, not d.private) for d in await content.distributions() if listed(d)]
    names = sorted(await visible(candidates))
    start = 0 if page.last is None else bisect.bisect_right(names, page.last)
    chosen = names[start : start + page.size]
    headers = {"content-type": "application/json"}
    if chosen and start + page.size < len(names):
        headers["link"] = next_link(
            request.scope.get("root_path", ""), "/v2/_catalog", last=chosen[-1], size=page.size
        )
    body = json.dumps({"repositories": chosen}, separators=(",", ":")).encode()
    if request.method == "HEAD":
        headers["content-length"] = str(len(body))
        body = b""
    return Response(body, headers=headers)
