"""OCI error responses: ``{"errors": [{"code", "message", "detail"}]}``.

Every :class:`~ocimirror.errors.OcimirrorError` answers with the OCI code and HTTP status that
the one table, :data:`ocimirror.errors.ERRORS`, gives its class, so one function turns any of
them into a response. Anything else that escapes a handler is a bug: it is
logged with its traceback and answered ``500 UNKNOWN`` without internals.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ocimirror.errors import OcimirrorError, Unauthorized, UpstreamUnavailable

__all__ = [
    "error_body",
    "error_response",
    "exception_response",
    "http_exception_response",
    "unexpected_response",
]

log = logging.getLogger("ocimirror.server")

_JSON = "application/json"


def error_body(code: str, message: str, detail: Any = None) -> bytes:
    """The JSON body of one OCI error."""
    entry: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}, separators=(",", ":")).encode()


def _respond(
    status: int, body: bytes, *, head: bool, headers: Mapping[str, str] | None = None
) -> Response:
    # A HEAD answer carries the length the GET body would have, and no body.
    all_headers = {"content-type": _JSON, "content-length": str(len(body)), **(headers or {})}
    return Response(b"" if head else body, status_code=status, headers=all_headers)


def error_response(
    code: str,
    message: str,
    *,
    status: int,
    detail: Any = None,
    head: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An OCI error response with an explicit code and status (for errors that are not an
    :class:`~ocimirror.errors.OcimirrorError`, such as Starlette's own)."""
    return _respond(status, error_body(code, message, detail), head=head, headers=headers)


def exception_response(
    exc: OcimirrorError, *, head: bool = False, headers: Mapping[str, str] | None = None
) -> Response:
    """The response for an ocimirror error: the code and status :data:`~ocimirror.errors.ERRORS`
    gives its class, its message and detail."""
    body = json.dumps({"errors": [exc.to_oci()]}, separators=(",", ":"), default=str).encode()
    if isinstance(exc, Unauthorized) and exc.challenge:
        headers = {**(headers or {}), "www-authenticate": exc.challenge}
    if isinstance(exc, UpstreamUnavailable) and exc.retry_after is not None:
        headers = {**(headers or {}), "retry-after": str(exc.retry_after)}
    return _respond(exc.status, body, head=head, headers=headers)


def unexpected_response(exc: BaseException, request: Request | None = None) -> Response:
    """Log an unexpected exception with its traceback; answer ``500 UNKNOWN``."""
    where = f"{request.method} {request.url.path}" if request is not None else "a request"
    log.error("unexpected error answering %s", where, exc_info=exc)
    head = request is not None and request.method == "HEAD"
    return error_response(
        "UNKNOWN", "internal server error (logged by the server)", status=500, head=head
    )


async def http_exception_response(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (paths outside the registry API) as OCI errors."""
    assert isinstance(exc, HTTPException)
    code = "UNSUPPORTED"
    headers = dict(exc.headers or {})
    return error_response(
        code,
        str(exc.detail),
        status=exc.status_code,
        head=request.method == "HEAD",
        headers=headers,
    )
