"""``GET /v2/``: the API version check (end-1)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["API_VERSION_HEADERS", "version_check"]

#: What the version check answers with (and every client may look for).
API_VERSION_HEADERS = {
    "content-type": "application/json",
    "content-length": "2",
    "docker-distribution-api-version": "registry/2.0",
    # The Docker signature API extension (/extensions/v2/.../signatures/...) is served:
    # containers-image reads atomic signatures there.
    "x-registry-supports-signatures": "1",
}


async def version_check(request: Request) -> Response:
    """200 ``{}`` with ``Docker-Distribution-API-Version: registry/2.0``.

    Later, with token auth, this is where an anonymous client is sent its challenge.
    """
    body = b"" if request.method == "HEAD" else b"{}"
    return Response(body, headers=API_VERSION_HEADERS)
