"""``GET /v2/<name>/tags/list?n=&last=`` (end-8a, end-8b): the tags of the served version."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from ocimirror.server.content import Content
from ocimirror.server.pagination import Page, next_link

__all__ = ["tags_list"]


async def tags_list(content: Content, request: Request, name: str) -> Response:
    """``{"name": ..., "tags": [...]}`` sorted, one page, with a ``Link`` when more follow."""
    page = Page.from_query(request.scope.get("query_string", b""))
    served = await content.resolve(name)
    tags: list[str] = []
    more = False
    if page.size:
        rows = await content.registry.metadata.list_tags(
            served.repository, served.version, last=page.last, n=page.size + 1
        )
        more = len(rows) > page.size
        tags = [tag for tag, _ in rows[: page.size]]
    headers = {"content-type": "application/json"}
    if more:
        headers["link"] = next_link(
            request.scope.get("root_path", ""),
            f"/v2/{name}/tags/list",
            last=tags[-1],
            size=page.size,
        )
    body = json.dumps({"name": name, "tags": tags}, separators=(",", ":")).encode()
    if request.method == "HEAD":
        headers["content-length"] = str(len(body))
        body = b""
    return Response(body, headers=headers)
