"""The upstream registry client: what a sync reads from another registry.

::

    async with RegistryClient("https://registry-1.docker.io") as upstream:
        tags = await upstream.list_tags("alpine")                 # library/alpine
        ref = await upstream.resolve("alpine", "3.20")
        manifest = await upstream.get_manifest("alpine", ref.digest)
        await upstream.download_blob("alpine", layer_digest, store, size=layer_size)

Token and Basic authentication is an :class:`httpx.Auth` flow (:class:`RegistryAuth`), so any
httpx client or transport can carry it; retries, backoff and rate limits are in
:class:`RetryPolicy` and :class:`RateLimiter`. Logs go to ``ocimirror.upstream``; URLs in
logs and errors show host and path only (:func:`redact_url`).
"""

from __future__ import annotations

from ocimirror.upstream.auth import DEFAULT_TOKEN_LIFETIME, RegistryAuth, Token, scope_for_path
from ocimirror.upstream.challenge import Challenge, parse_www_authenticate
from ocimirror.upstream.client import (
    DEFAULT_USER_AGENT,
    MAX_TAGS_PAGE_SIZE,
    ConnectionSettings,
    FetchedManifest,
    ManifestRef,
    RegistryClient,
)
from ocimirror.upstream.names import DOCKER_HUB_HOSTS, DOCKER_HUB_URL, normalize_upstream
from ocimirror.upstream.ratelimit import RateLimiter
from ocimirror.upstream.redact import redact_text, redact_url
from ocimirror.upstream.retry import (
    RetryPolicy,
    TransientError,
    parse_retry_after,
    retryable_status,
)
from ocimirror.upstream.shared import SharedConnections
from ocimirror.upstream.sink import BlobSink, SinkWriter
from ocimirror.upstream.stats import REQUEST_KINDS, RequestStats

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "DEFAULT_USER_AGENT",
    "DOCKER_HUB_HOSTS",
    "DOCKER_HUB_URL",
    "MAX_TAGS_PAGE_SIZE",
    "REQUEST_KINDS",
    "BlobSink",
    "Challenge",
    "ConnectionSettings",
    "FetchedManifest",
    "ManifestRef",
    "RateLimiter",
    "RegistryAuth",
    "RegistryClient",
    "RequestStats",
    "RetryPolicy",
    "SharedConnections",
    "SinkWriter",
    "Token",
    "TransientError",
    "normalize_upstream",
    "parse_retry_after",
    "parse_www_authenticate",
    "redact_text",
    "redact_url",
    "retryable_status",
    "scope_for_path",
]
