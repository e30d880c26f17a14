"""What an upstream's non-success answer means, as the error a caller can act on.

A 404 becomes the not-found error of what was asked for (manifest, blob, repository), 401 and
403 say whose access was refused, a retryable status (429, 5xx) becomes a
:class:`~ocimirror.upstream.retry.TransientError` with its ``Retry-After``, anything else an
:class:`~ocimirror.errors.UpstreamError`. The upstream's own OCI error body is quoted, redacted:
after a redirect to object storage or a CDN the URL's query string is a credential, so
messages, the error's ``url`` and the quoted body leave it out.
"""

from __future__ import annotations

from typing import NoReturn

import httpx

from ocimirror.errors import BlobNotFound, ManifestNotFound, RepositoryNotFound, UpstreamError
from ocimirror.upstream._body import ERROR_BODY_LIMIT, describe_errors, oci_errors, read_capped
from ocimirror.upstream.redact import redact_json, redact_text, redact_url
from ocimirror.upstream.retry import TransientError, parse_retry_after, retryable_status

__all__ = ["raise_for_response"]


async def raise_for_response(
    response: httpx.Response,
    kind: str,
    *,
    upstream: str,
    own: bool,
    username: str | None,
    name: str = "",
    reference: str = "",
) -> NoReturn:
    """Raise the error ``response`` (not a success) means.

    Args:
        kind: What was asked for: ``"manifest"``, ``"blob"``, ``"tags"`` or another kind.
        upstream: The registry's URL, as messages name it.
        own: Whether the response came from the registry's own origin (not a redirect
            target, which never gets credentials).
        username: Whose credentials were sent, if any.
        name, reference: The repository and tag or digest asked for.
    """
    status = response.status_code
    request = response.request
    body = b""
    if request.method != "HEAD":
        body, _ = await read_capped(response, ERROR_BODY_LIMIT)
    signed = None if own else request.url
    errors = redact_json(oci_errors(body), url=signed)
    detail = redact_text(describe_errors(errors, body), url=signed)
    said = f": {detail}" if detail else ""
    url = redact_url(request.url)
    host = request.url.netloc.decode("ascii", "replace")
    where = f"{request.method} {url}"
    answered = "" if own else f" ({host} answered {status} after a redirect)"
    if status == 404 and kind == "manifest":
        raise ManifestNotFound(
            f"upstream {upstream} has no manifest {name}:{reference}{answered}{said}",
            detail=errors,
        )
    if status == 404 and kind == "blob":
        raise BlobNotFound(
            f"upstream {upstream} has no blob {reference} in {name}{answered}{said}",
            detail=errors,
        )
    if status == 404 and kind == "tags":
        raise RepositoryNotFound(
            f"upstream {upstream} has no repository {name!r}{answered}{said}", detail=errors
        )
    if status in (401, 403):
        if not own:
            who = "the request (no credentials are sent to it: the registry redirected there)"
        elif username:
            who = f"the credentials of user {username!r}"
        else:
            who = "anonymous access (the repository may not exist, or need credentials)"
        raise UpstreamError(
            f"{where}: {host} refused {who}: {status}{said}",
            status_code=status,
            errors=errors,
            url=url,
        )
    if not own:
        where = f"{where} (redirected to by {upstream})"
    message = f"{where} failed: {status} {response.reason_phrase}{said}"
    if retryable_status(status):
        raise TransientError(
            message,
            status_code=status,
            errors=errors,
            url=url,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    raise UpstreamError(message, status_code=status, errors=errors, url=url)
