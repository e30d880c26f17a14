"""What of a URL may be shown: in a message, an error's ``url``, a log line or a sync report.

A URL can carry credentials: userinfo (``https://user:pass@host``) and, after a redirect to
object storage or a CDN, a signed query string (``?X-Amz-Signature=..&X-Amz-Credential=..``).
Everything this package shows of a URL is its scheme, host, port and path
(:func:`redact_url`); text it does not write itself (an httpx error, the body an upstream
answered with) goes through :func:`redact_text`, which does the same to every URL in it.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

__all__ = ["redact_json", "redact_text", "redact_url"]

# scheme://, then userinfo (up to the authority's last "@"), then what may be shown, up to the
# query string or fragment.
_PARTS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)?(?:[^/?#]*@)?(?P<shown>[^?#]*)")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>`]+")
#: Query values shorter than this are not cut out of text (they would garble it, and a
#: signature or credential is longer).
_MIN_SECRET = 4


def redact_url(url: str | httpx.URL) -> str:
    """``url`` without userinfo, query string and fragment: ``scheme://host[:port]/path``.

    ``https://u:p@bucket.s3.example/blob?X-Amz-Signature=..`` ->
    ``https://bucket.s3.example/blob``. Never raises, whatever the string.
    """
    m = _PARTS.match(str(url))
    assert m is not None  # every group may be empty
    return f"{m.group('scheme') or ''}{m.group('shown')}"


def redact_text(text: str, *, url: httpx.URL | None = None) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`.

    With ``url`` (the request an upstream answered), the values of that URL's query string
    and its password are cut out too, wherever the text repeats them (an object store's error
    body quotes the access key and signature it refused).
    """
    found = _URL_IN_TEXT.sub(lambda m: redact_url(m.group()), text)
    if url is None:
        return found
    for secret in _secrets_of(url):
        found = found.replace(secret, "...")
    return found


def redact_json(value: Any, *, url: httpx.URL | None = None) -> Any:
    """A copy of JSON data (an OCI error body) with :func:`redact_text` applied to every
    string in it."""
    if isinstance(value, str):
        return redact_text(value, url=url)
    if isinstance(value, list):
        return [redact_json(v, url=url) for v in value]
    if isinstance(value, dict):
        return {k: redact_json(v, url=url) for k, v in value.items()}
    return value


def _secrets_of(url: httpx.URL) -> list[str]:
    """The query values and password of ``url``, and the ``/``-separated parts of each (an
    S3 credential is ``<access key>/<date>/<region>/s3/aws4_request``), longest first."""
    values = [v for _, v in url.params.multi_items()]
    if url.password:
        values.append(url.password)
    parts = {p for v in values for p in (v, *v.split("/")) if len(p) >= _MIN_SECRET}
    return sorted(parts, key=len, reverse=True)
