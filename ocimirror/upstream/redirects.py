"""Redirects, followed hop by hop, so that what each hop carries is decided here.

A registry redirects blob downloads to object storage or a CDN. httpx drops ``Authorization``
on a redirect to another origin but keeps every other header, and an auth flow never sees the
hops; the remote's extra headers may be credentials too (an API key). So requests go out with
``follow_redirects=False``, and :func:`send_following` sends each ``next_request`` itself: to
the registry's own origin as it is, to any other origin without auth and with only
:data:`FOREIGN_HEADERS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx

from ocimirror.upstream.redact import redact_url

__all__ = ["FOREIGN_HEADERS", "send_following"]

_log = logging.getLogger("ocimirror.upstream")

#: The only headers a request to another origin than the registry's carries.
FOREIGN_HEADERS = frozenset(
    {"host", "user-agent", "accept", "accept-encoding", "range", "connection"}
)


async def _send_one(
    http: httpx.AsyncClient,
    request: httpx.Request,
    auth: httpx.Auth,
    home: Callable[[httpx.URL], bool],
) -> httpx.Response:
    if home(request.url):
        return await http.send(request, auth=auth, stream=True, follow_redirects=False)
    for name in list(request.headers.keys()):
        if name.lower() not in FOREIGN_HEADERS:
            del request.headers[name]
    return await http.send(request, auth=None, stream=True, follow_redirects=False)


async def send_following(
    http: httpx.AsyncClient,
    request: httpx.Request,
    *,
    auth: httpx.Auth,
    home: Callable[[httpx.URL], bool],
) -> httpx.Response:
    """Send ``request`` streamed and follow its redirects (at most ``http.max_redirects``).

    ``home(url)`` says whether a URL is on the registry's origin: only such requests carry
    ``auth`` and every header; the others go with :data:`FOREIGN_HEADERS` only. Returns the
    last response, open (the caller closes it); raises :class:`httpx.TooManyRedirects`.
    """
    response = await _send_one(http, request, auth, home)
    hops = 0
    try:
        while (target := response.next_request) is not None:
            hops += 1
            if hops > http.max_redirects:
                raise httpx.TooManyRedirects(
                    f"more than {http.max_redirects} redirects", request=response.request
                )
            _log.debug(
                "%s %s -> %d, redirected to %s",
                request.method,
                redact_url(response.request.url),
                response.status_code,
                redact_url(target.url),
            )
            await response.aclose()
            response = await _send_one(http, target, auth, home)
    except BaseException:
        await response.aclose()
        raise
    return response
