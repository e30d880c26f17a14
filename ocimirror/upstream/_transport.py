"""The HTTP stack under the upstream client's httpx API: httpx's own transport, or aiohttp's.

:class:`~ocimirror.upstream.RegistryClient` speaks httpx (requests, auth flow, redirects hop by
hop, streamed responses, errors); what moves the bytes is a transport. ``"httpx"`` is httpx's
own, on httpcore, whose pool walks every pooled connection and polls its socket several times
per request; ``"aiohttp"`` (the default) is aiohttp's connection pool and HTTP parser through
``httpx-aiohttp``, about 2.5 times less CPU per request (docs/performance.md, "Upstream HTTP
transport"). Everything above the transport is the same code on both.

On the aiohttp stack httpx still decides the proxies (given, or from the environment) and keeps
the cookies; aiohttp follows no redirect, decompresses nothing, reads no ``.netrc``, and its
failures are raised as the httpx errors httpx's own transport raises (:func:`_aiohttp_error`),
so retries and messages do not depend on the stack. aiohttp is imported on first use.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from aiohttp import ClientSession

__all__ = [
    "DEFAULT_HTTP_BACKEND",
    "HTTP_BACKENDS",
    "HTTP_BACKEND_ENV",
    "AiohttpClient",
    "choose_http_backend",
    "ssl_context",
]

#: The HTTP stacks a client can be built on.
HTTP_BACKENDS: tuple[str, ...] = ("aiohttp", "httpx")

#: The HTTP stack used when a client is given none and :data:`HTTP_BACKEND_ENV` is not set.
DEFAULT_HTTP_BACKEND = "aiohttp"

#: The environment variable naming the HTTP stack clients use when given none.
HTTP_BACKEND_ENV = "OCIMIRROR_HTTP_BACKEND"

#: The longest response header line accepted from an upstream (aiohttp's own limit is 8190
#: bytes; a signed redirect ``Location`` can be longer). httpx's limit is about 100 KiB.
_MAX_HEADER_LINE = 64 * 1024

#: Bytes asked for per body read on the aiohttp stack (httpx-aiohttp's default is 16 KiB;
#: httpcore reads 64 KiB): fewer, larger chunks cost less per byte (a 512 MiB layer synced in
#: 1.28-1.39 s with 256 KiB reads, 1.28-1.94 s with 64 KiB ones).
_AIOHTTP_CHUNK = 256 * 1024

_DEFAULT_LIMITS = httpx.Limits()


def choose_http_backend(backend: str | None) -> str:
    """``backend``, else the one the environment names, else :data:`DEFAULT_HTTP_BACKEND`."""
    chosen = backend or os.environ.get(HTTP_BACKEND_ENV, "").strip() or DEFAULT_HTTP_BACKEND
    if chosen not in HTTP_BACKENDS:
        where = "http_backend" if backend else HTTP_BACKEND_ENV
        raise ValueError(f"{where} must be one of {', '.join(HTTP_BACKENDS)}, got {chosen!r}")
    return chosen


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~25 ms; every client verifying with the defaults shares one.
    return httpx.create_ssl_context()


def ssl_context(verify: bool | str | ssl.SSLContext) -> bool | ssl.SSLContext:
    """``verify`` as httpx wants it; a string is PEM text or a CA bundle file or directory."""
    if verify is True:
        return _default_ssl_context()
    if not isinstance(verify, str):
        return verify
    if "-----BEGIN" in verify:
        return ssl.create_default_context(cadata=verify)
    if os.path.isdir(verify):
        return ssl.create_default_context(capath=verify)
    return ssl.create_default_context(cafile=verify)


def _aiohttp_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError | None:
    """The httpx error an aiohttp failure means (``None``: not aiohttp's, raise it as it is).

    httpx-aiohttp maps some failures itself, not always aptly (a server closing a kept-alive
    connection becomes ``ConnectTimeout``, a malformed answer is not mapped at all): the
    mapping is redone from the aiohttp error, so that the retry policy and the messages see
    what httpx's own transport would raise.
    """
    import aiohttp

    if isinstance(exc, httpx.TransportError):
        if not isinstance(exc.__cause__, aiohttp.ClientError | TimeoutError):
            return None
        exc = exc.__cause__
    kind: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(exc, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError):
        kind = httpx.ReadTimeout
    elif isinstance(exc, TimeoutError):
        kind = httpx.TimeoutException
    elif isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        kind = httpx.ProxyError
    elif isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS, certificate
        kind = httpx.ConnectError
    elif isinstance(
        exc,
        aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError,
    ):
        kind = httpx.RemoteProtocolError  # closed early, body cut short, malformed answer
    elif isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        kind = httpx.UnsupportedProtocol
    elif isinstance(exc, aiohttp.ClientOSError):
        kind = httpx.ReadError
    elif isinstance(exc, aiohttp.ClientConnectionError):
        kind = httpx.NetworkError
    elif isinstance(exc, aiohttp.ClientError):
        kind = httpx.TransportError
    else:
        return None
    return kind(str(exc) or type(exc).__name__, request=request)


class _AiohttpBody(httpx.AsyncByteStream):
    """An aiohttp response body as httpx reads it, its failures as httpx errors."""

    def __init__(self, inner: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._inner = inner
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except Exception as exc:
            error = _aiohttp_error(exc, self._request)
            if error is None:
                raise
            raise error from exc

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        except Exception as exc:
            error = _aiohttp_error(exc, self._request)
            if error is None:
                raise
            raise error from exc


class _AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx-aiohttp's transport, on an aiohttp session that fits the client.

    The session keeps no cookies (httpx's client does, redirect by redirect), follows no
    redirect, reads no ``.netrc`` nor proxy environment (httpx's client mounts proxy transports
    itself), decompresses nothing (httpx does), and accepts header lines up to
    :data:`_MAX_HEADER_LINE`. It is made on the first request, in the running loop.
    """

    def __init__(
        self, verify: ssl.SSLContext | str | bool, limits: httpx.Limits, proxy: httpx.Proxy | None
    ) -> None:
        from httpx_aiohttp import AiohttpTransport

        self._ssl = ssl_context(verify)  # False: aiohttp does not verify
        self._limits = limits
        self._inner = AiohttpTransport(
            verify=self._ssl, limits=limits, proxy=proxy, trust_env=False, client=self._session
        )

    def _session(self) -> ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry,
            ssl=self._ssl,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            max_line_size=_MAX_HEADER_LINE,
            max_field_size=_MAX_HEADER_LINE,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if isinstance(request.stream, httpx.ByteStream):
            # A body in memory (a redirect's next request carries its request's, unread): read
            # it, so it goes as bytes. httpx-aiohttp would send an unread one chunked, and a
            # GET with "Transfer-Encoding: chunked" is misread (Python's http.server takes the
            # empty body's terminator for the next request).
            await request.aread()
        try:
            response = await self._inner.handle_async_request(request)
        except Exception as exc:
            error = _aiohttp_error(exc, request)
            if error is None:
                raise
            raise error from exc
        stream = response.stream
        if hasattr(stream, "CHUNK_SIZE"):
            stream.CHUNK_SIZE = _AIOHTTP_CHUNK
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _AiohttpBody(stream, request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class AiohttpClient(httpx.AsyncClient):
    """An httpx client whose transports, the default one and each proxy's (given or from the
    environment, as httpx decides), are aiohttp's. A proxy that is not HTTP(S) (SOCKS) keeps
    httpx's own transport: aiohttp speaks no SOCKS."""

    def _init_transport(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = _DEFAULT_LIMITS,
        transport: httpx.AsyncBaseTransport | None = None,
        **kwargs: Any,
    ) -> httpx.AsyncBaseTransport:
        if transport is not None:
            return transport
        return _AiohttpTransport(verify, limits, None)

    def _init_proxy_transport(
        self,
        proxy: httpx.Proxy,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = _DEFAULT_LIMITS,
        **kwargs: Any,
    ) -> httpx.AsyncBaseTransport:
        if proxy.url.scheme not in ("http", "https"):
            return super()._init_proxy_transport(
                proxy,
                verify=verify,
                cert=cert,
                trust_env=trust_env,
                http1=http1,
                http2=http2,
                limits=limits,
                **kwargs,
            )
        return _AiohttpTransport(verify, limits, proxy)
