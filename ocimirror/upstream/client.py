"""The upstream registry client: tags, manifests and blobs over the OCI distribution API.

Everything it reads is checked: manifests against the digest asked for and the
``Docker-Content-Digest`` the upstream sent, capped at :data:`MAX_MANIFEST_SIZE`; blobs stream
into the writer of a :class:`~ocimirror.upstream.sink.BlobSink` (a blob store), which verifies
digest and size before anything becomes visible.
Transient failures are retried (see :mod:`ocimirror.upstream.retry`), and a blob download
that breaks off resumes where it stopped with a ``Range`` request.

Redirects are followed hop by hop (:mod:`ocimirror.upstream.redirects`): a hop to another
origin than the registry's goes without credentials and extra headers. URLs in errors and logs
show host and path only (:mod:`ocimirror.upstream.redact`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, NoReturn, Protocol, Self, TypeVar

import attrs
import httpx

from ocimirror._version import __version__
from ocimirror.core.digest import Digest
from ocimirror.core.manifest import MAX_MANIFEST_SIZE, parse_manifest
from ocimirror.core.mediatype import MediaType
from ocimirror.core.reference import is_digest_reference, validate_repository_name, validate_tag
from ocimirror.errors import (
    DigestMismatch,
    InvalidDigest,
    InvalidError,
    ManifestTooLarge,
    UpstreamError,
)
from ocimirror.upstream._body import body_chunks, check_complete, prefetched, read_capped
from ocimirror.upstream._transport import (
    DEFAULT_HTTP_BACKEND,
    HTTP_BACKEND_ENV,
    HTTP_BACKENDS,
    AiohttpClient,
    choose_http_backend,
    ssl_context,
)
from ocimirror.upstream.auth import RegistryAuth
from ocimirror.upstream.failures import raise_for_response
from ocimirror.upstream.names import normalize_upstream
from ocimirror.upstream.ratelimit import RateLimiter
from ocimirror.upstream.redact import redact_text, redact_url
from ocimirror.upstream.redirects import send_following
from ocimirror.upstream.retry import RetryPolicy, TransientError
from ocimirror.upstream.sink import BlobSink, SinkWriter
from ocimirror.upstream.stats import RequestStats

__all__ = [
    "DEFAULT_HTTP_BACKEND",
    "DEFAULT_USER_AGENT",
    "HTTP_BACKENDS",
    "HTTP_BACKEND_ENV",
    "MAX_SIGNATURE_SIZE",
    "MAX_TAGS_PAGE_SIZE",
    "ConnectionSettings",
    "FetchedManifest",
    "ManifestRef",
    "RegistryClient",
]

_log = logging.getLogger("ocimirror.upstream")

_T = TypeVar("_T")

#: The ``User-Agent`` sent unless another is given.
DEFAULT_USER_AGENT = f"ocimirror/{__version__}"

#: The most of one tag-list page that is read.
MAX_TAGS_PAGE_SIZE = 32 << 20

#: The largest signature read (an atomic signature is a few hundred bytes to a few KiB).
MAX_SIGNATURE_SIZE = 4 << 20
#: A blob download reads ahead of its writer (see :func:`prefetched`) past this many bytes, the
#: local store's write buffer; a smaller blob is buffered whole, and nothing waits for I/O.
_READ_AHEAD_FROM = 4 << 20

_ACCEPT_MANIFESTS = ", ".join(MediaType.MANIFEST_TYPES)


class ConnectionSettings(Protocol):
    """How to reach an upstream registry, as plain settings (a :class:`~ocimirror.Remote`
    has them all)."""

    @property
    def url(self) -> str:
        """The registry's URL."""
        ...

    @property
    def username(self) -> str | None:
        """The user name, if any."""
        ...

    @property
    def password(self) -> str | None:
        """The password or token, if any (never logged)."""
        ...

    @property
    def tls_validation(self) -> bool:
        """Whether to verify the server's certificate."""
        ...

    @property
    def ca_cert(self) -> str | None:
        """PEM text or a CA bundle path to verify with, if not the system's."""
        ...

    @property
    def proxy_url(self) -> str | None:
        """An HTTP(S) proxy, if any."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Extra request headers."""
        ...

    @property
    def max_retries(self) -> int:
        """Retries of a transient failure."""
        ...

    @property
    def rate_limit(self) -> float | None:
        """Requests per second at most, if limited."""
        ...


@attrs.frozen
class ManifestRef:
    """What an upstream said about a manifest without (necessarily) sending it."""

    digest: Digest
    #: The media type, without parameters.
    media_type: str
    size: int


@attrs.frozen
class FetchedManifest:
    """A manifest's exact bytes as received, and their verified digest."""

    raw: bytes = attrs.field(repr=False)
    #: The media type, without parameters (from ``Content-Type``, else from the bytes).
    media_type: str
    #: The digest asked for, else the upstream's ``Docker-Content-Digest``, else the sha256 of
    #: ``raw``; whichever it is, ``raw`` was checked against it.
    digest: Digest

    @property
    def size(self) -> int:
        """The length of ``raw`` in bytes."""
        return len(self.raw)


class _BlobState:
    """The writer of one blob download, kept across attempts so a resume can continue it."""

    def __init__(self, store: BlobSink, digest: Digest, size: int | None) -> None:
        self.store = store
        self.digest = digest
        self.size = size
        self.writer: SinkWriter | None = None

    def fresh(self) -> SinkWriter:
        self.writer = self.store.writer(expected=self.digest, size=self.size)
        return self.writer

    async def discard(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            await writer.abort()


def _range_start(content_range: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes <first>-<last>/<total>``."""
    if content_range is None:
        return None
    unit, _, rest = content_range.strip().partition(" ")
    first = rest.partition("-")[0].strip()
    if unit.lower() != "bytes" or not first.isdigit():
        return None
    return int(first)


def _media_type(content_type: str | None, raw: bytes) -> str:
    """A manifest's media type: the ``Content-Type`` if it names one, else from the bytes."""
    if content_type and MediaType.is_manifest(content_type):
        return MediaType.base(content_type)
    try:
        return parse_manifest(raw).media_type
    except InvalidError:
        return MediaType.base(content_type) if content_type else "application/octet-stream"


class RegistryClient:
    """An async client of one upstream registry (OCI distribution-spec, read side).

    Args:
        url: The registry's base URL (``https://ghcr.io``); Docker Hub under any of its names
            is normalised, see :func:`normalize_upstream`. Credentials in the URL are used as
            ``username`` and ``password`` and removed from it.
        username, password: Credentials for Basic challenges and token endpoints; without
            them access is anonymous.
        verify: ``True`` (system CAs via certifi), ``False`` (no TLS verification), or a CA
            bundle: a file, a directory, or PEM text; an :class:`ssl.SSLContext` works too.
        proxy: A proxy URL for every request.
        timeout: Seconds for each network operation (connect, each read, ...).
        headers: Extra headers sent with every request to the registry.
        max_retries, backoff_base, backoff_max: See :class:`RetryPolicy` (also
            :attr:`retry_policy`, which may be replaced).
        rate_limit: At most this many requests a second from this client.
        max_connections: The connection pool's size.
        transport: An httpx transport to build the client on (``verify``, ``proxy``,
            ``max_connections`` and ``http_backend`` are then the transport's business).
        client: An httpx client to use as it is; it is not closed by :meth:`aclose`.
        user_agent: The ``User-Agent`` header.
        http_backend: The HTTP stack under httpx's API, one of :data:`HTTP_BACKENDS`:
            ``"aiohttp"`` or ``"httpx"``; by default the one the environment variable
            ``OCIMIRROR_HTTP_BACKEND`` names, else :data:`DEFAULT_HTTP_BACKEND`.

    The constructor does no I/O; the httpx client is made on first use. Repository names are
    normalised for Docker Hub and validated before any request (``InvalidName``).
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        verify: bool | str | ssl.SSLContext = True,
        proxy: str | None = None,
        timeout: float = 60.0,
        headers: Mapping[str, str] | None = None,
        max_retries: int = 3,
        rate_limit: float | None = None,
        max_connections: int = 32,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        http_backend: str | None = None,
    ) -> None:
        if client is not None and transport is not None:
            raise ValueError("give either client or transport, not both")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
        parsed = httpx.URL(url.strip() if "://" in url else f"https://{url.strip()}")
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise InvalidError(
                f"registry URL must be http:// or https:// with a host, got {redact_url(url)!r}"
            )
        if parsed.userinfo:
            if username is None:
                username = parsed.username or None
                password = parsed.password if password is None else password
            parsed = parsed.copy_with(userinfo=b"")
        parsed = parsed.copy_with(query=None, fragment=None)  # paths are appended to it
        base = normalize_upstream(str(parsed), "")[0]
        if base.endswith("/v2"):
            base = base[: -len("/v2")]  # the API root was given, not the registry
        #: The registry's base URL, without a trailing slash (nor ``/v2``).
        self.url: str = base
        origin = httpx.URL(base)
        self._origin = (origin.scheme, origin.host, origin.port)
        #: Request counters, shared by everything this client does.
        self.stats = RequestStats()
        #: Retries and waits; replace it (``attrs.evolve``) to change them.
        self.retry_policy = RetryPolicy(
            max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max
        )
        self._auth = RegistryAuth(username, password, registry=base, stats=self.stats)
        self._limiter = RateLimiter(rate_limit) if rate_limit is not None else None
        self._headers = {"User-Agent": user_agent, **(headers or {})}
        self._verify = verify
        self._proxy = proxy
        self._timeout = timeout
        self._max_connections = max_connections
        self._transport = transport
        #: The HTTP stack the client is built on when given neither ``transport`` nor
        #: ``client`` (see :data:`HTTP_BACKENDS`).
        self.http_backend: str = choose_http_backend(http_backend)
        self._client = client
        self._owns_client = client is None
        self._closed = False

    def __repr__(self) -> str:
        user = f" as {self._auth.username!r}" if self._auth.username else ""
        return f"<RegistryClient {self.url}{user}>"

    @classmethod
    def from_remote(cls, remote: ConnectionSettings, **overrides: Any) -> RegistryClient:
        """A client with a remote's (or any :class:`ConnectionSettings`') TLS, proxy, retry,
        rate-limit, header and credential settings; ``overrides`` are constructor arguments
        that win."""
        verify: bool | str = (remote.ca_cert or True) if remote.tls_validation else False
        options: dict[str, Any] = {
            "username": remote.username,
            "password": remote.password,
            "verify": verify,
            "proxy": remote.proxy_url,
            "headers": dict(remote.headers),
            "max_retries": remote.max_retries,
            "rate_limit": remote.rate_limit,
        }
        options.update(overrides)
        url = options.pop("url", remote.url)
        return cls(url, **options)

    # -- lifecycle

    def new_http_client(self) -> httpx.AsyncClient:
        """A new httpx client with this client's TLS, proxy, timeout, pool size and HTTP stack
        (what it makes for itself unless given one); whoever asks closes it."""
        limits = httpx.Limits(
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
        )
        if self._transport is not None:
            return httpx.AsyncClient(
                transport=self._transport, timeout=self._timeout, limits=limits
            )
        kind = AiohttpClient if self.http_backend == "aiohttp" else httpx.AsyncClient
        return kind(
            verify=ssl_context(self._verify),
            proxy=self._proxy,
            timeout=self._timeout,
            limits=limits,
        )

    def _http(self) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._client is None:
            self._client = self.new_http_client()
        return self._client

    async def aclose(self) -> None:
        """Close the httpx client if this client made it; idempotent."""
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- plumbing

    def _repo(self, name: str) -> str:
        return validate_repository_name(normalize_upstream(self.url, name)[1])

    @staticmethod
    def _reference(reference: str | Digest) -> tuple[str, Digest | None]:
        if isinstance(reference, Digest):
            return str(reference), reference
        if is_digest_reference(reference):
            return reference, Digest.parse(reference)
        return validate_tag(reference), None

    def _is_registry(self, url: httpx.URL) -> bool:
        """Whether ``url`` is on the registry's own origin (scheme, host and port)."""
        return (url.scheme, url.host, url.port) == self._origin

    @contextlib.asynccontextmanager
    async def _open(
        self, kind: str, method: str, url: str | httpx.URL, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """One request, redirects followed, its response streamed and closed on the way out."""
        http = self._http()
        if self._limiter is not None:
            await self._limiter.acquire()
        self.stats.count(kind)
        request = http.build_request(method, url, headers={**self._headers, **(headers or {})})
        response = await send_following(http, request, auth=self._auth, home=self._is_registry)
        try:
            final = response.request.url
            _log.debug("%s %s -> %d", method, redact_url(final), response.status_code)
            remaining = response.headers.get("ratelimit-remaining")
            if remaining is not None:
                _log.debug("%s: RateLimit-Remaining %s", final.host, remaining)
            yield response
        finally:
            await response.aclose()

    def _network_error(self, exc: httpx.RequestError) -> str:
        """``Type: message`` of a network failure, naming the host it happened at when that
        is not the registry (a redirect target)."""
        text = f"{type(exc).__name__}: {redact_text(str(exc))}"
        try:
            at = exc.request.url
        except RuntimeError:  # httpx raises when the error has no request
            return text
        return text if self._is_registry(at) else f"{text} (at {redact_url(at)})"

    async def _retrying(
        self, method: str, url: str | httpx.URL, attempt: Callable[[], Awaitable[_T]]
    ) -> _T:
        """Run ``attempt`` under the retry policy; turn network failures into UpstreamError."""
        policy = self.retry_policy
        shown = redact_url(url)
        what = f"{method} {shown}"

        def on_retry(exc: BaseException, number: int, delay: float) -> None:
            self.stats.count("retry")
            _log.debug(
                "%s: %s; retry %d of %d in %.2fs",
                what,
                self._network_error(exc) if isinstance(exc, httpx.RequestError) else exc,
                number,
                policy.max_retries,
                delay,
            )

        try:
            return await policy.run(attempt, on_retry=on_retry)
        except httpx.RequestError as exc:
            raise UpstreamError(f"{what} failed: {self._network_error(exc)}", url=shown) from exc

    async def _fail(
        self, response: httpx.Response, kind: str, name: str = "", reference: str = ""
    ) -> NoReturn:
        """Raise the error a non-success response means (see :func:`raise_for_response`)."""
        await raise_for_response(
            response,
            kind,
            upstream=self.url,
            own=self._is_registry(response.request.url),
            username=self._auth.username,
            name=name,
            reference=reference,
        )

    # -- the API

    async def ping(self) -> httpx.Headers:
        """Check that the registry answers ``GET /v2/`` (authenticating if asked to); the
        answer's headers say what else it supports."""
        url = f"{self.url}/v2/"

        async def attempt() -> httpx.Headers:
            async with self._open("ping", "GET", url) as response:
                if response.status_code != 200:
                    await self._fail(response, "ping")
                return response.headers

        return await self._retrying("GET", url, attempt)

    async def supports_signatures(self) -> bool:
        """Whether ``/v2/`` announces the Docker signature API extension
        (``X-Registry-Supports-Signatures: 1``)."""
        headers = await self.ping()
        return str(headers.get("x-registry-supports-signatures", "")).strip() == "1"

    async def get_optional(
        self, kind: str, url: str, *, limit: int = MAX_SIGNATURE_SIZE
    ) -> bytes | None:
        """The body of a small document at ``url`` (a signature, a referrers index), or
        ``None`` when the answer is 404; other failures raise as for any request. A URL on
        another origin than the registry's (a lookaside sigstore) gets no credentials."""

        async def attempt() -> bytes | None:
            async with self._open(kind, "GET", url) as response:
                if response.status_code == 404:
                    return None
                if response.status_code != 200:
                    await self._fail(response, kind)
                body, over = await read_capped(response, limit)
                if over:
                    raise UpstreamError(
                        f"GET {redact_url(url)}: the answer is over the limit of {limit} bytes",
                        url=redact_url(url),
                    )
                check_complete(response)
                self.stats.add_bytes(len(body))
                return body

        return await self._retrying("GET", url, attempt)

    async def signatures(self, name: str, digest: Digest | str) -> bytes | None:
        """The signature API extension's JSON for a manifest, or ``None`` (404)."""
        url = f"{self.url}/extensions/v2/{self._repo(name)}/signatures/{Digest.parse(digest)}"
        return await self.get_optional("signature", url)

    async def referrers(self, name: str, digest: Digest | str) -> bytes | None:
        """The OCI 1.1 referrers index of a manifest, or ``None`` when the registry has no
        referrers API (it answers 404: use the referrers tag schema instead)."""
        url = f"{self.url}/v2/{self._repo(name)}/referrers/{Digest.parse(digest)}"
        return await self.get_optional("referrers", url, limit=MAX_MANIFEST_SIZE)

    async def list_tags(self, name: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of repository ``name``, following pagination to the end.

        Pages are followed through ``Link: <...>; rel="next"`` (relative or absolute). With
        ``page_size``, pages are asked for with ``n``, and when a registry sends no ``Link`` but
        a full page, the next one is asked for with ``last``. Raises
        :class:`RepositoryNotFound` when the upstream has no such repository.
        """
        if page_size is not None and page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size!r}")
        name = self._repo(name)
        first = httpx.URL(f"{self.url}/v2/{name}/tags/list")
        url: httpx.URL | None = first.copy_merge_params({"n": page_size}) if page_size else first
        tags: list[str] = []
        known: set[str] = set()
        visited: set[str] = set()
        while url is not None:
            if str(url) in visited:
                raise UpstreamError(
                    f"upstream {self.url} sends the tag list of {name} in a loop "
                    f"(at {redact_url(url)})",
                    url=redact_url(url),
                )
            visited.add(str(url))
            page_url: httpx.URL = url
            page, link = await self._retrying(
                "GET", page_url, functools.partial(self._tags_page, page_url, name)
            )
            new = [t for t in page if t not in known]
            known.update(new)
            tags.extend(new)
            url = link
            if url is None and page_size and len(page) >= page_size and new:
                url = first.copy_merge_params({"n": page_size, "last": page[-1]})
        return tags

    async def _tags_page(self, url: httpx.URL, name: str) -> tuple[list[str], httpx.URL | None]:
        async with self._open("tags", "GET", url, {"Accept": "application/json"}) as response:
            if response.status_code != 200:
                await self._fail(response, "tags", name)
            body, over = await read_capped(response, MAX_TAGS_PAGE_SIZE)
            self.stats.add_bytes(len(body))
            if over:
                raise UpstreamError(
                    f"a tag list page of {name} from {self.url} is over {MAX_TAGS_PAGE_SIZE} bytes",
                    url=redact_url(url),
                )
            check_complete(response)
            link = response.links.get("next", {}).get("url")
            next_url = response.request.url.join(link) if link else None
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
        tags = data.get("tags") if isinstance(data, dict) else []
        if tags is None:
            tags = []
        if not isinstance(data, dict) or not isinstance(tags, list):
            raise UpstreamError(
                f"the tag list of {name} from {self.url} is not a JSON object with a tags array",
                url=redact_url(url),
            )
        if not all(isinstance(t, str) for t in tags):
            raise UpstreamError(
                f"the tag list of {name} from {self.url} holds something other than strings",
                url=redact_url(url),
            )
        return tags, next_url

    async def resolve(self, name: str, reference: str | Digest) -> ManifestRef:
        """The digest, media type and size of a manifest, by tag or digest.

        Asks with ``HEAD`` (accepting every manifest type); when the answer lacks a digest,
        length or manifest media type, or ``HEAD`` is not allowed, fetches the manifest with
        :meth:`get_manifest` and computes them. Raises :class:`ManifestNotFound`.
        """
        name = self._repo(name)
        ref, asked = self._reference(reference)
        url = f"{self.url}/v2/{name}/manifests/{ref}"

        async def attempt() -> ManifestRef | None:
            headers = {"Accept": _ACCEPT_MANIFESTS}
            async with self._open("manifest_head", "HEAD", url, headers) as response:
                if response.status_code == 405:
                    return None
                if response.status_code != 200:
                    await self._fail(response, "manifest", name, ref)
                return self._head_ref(response, asked)

        found = await self._retrying("HEAD", url, attempt)
        if found is not None:
            return found
        _log.debug("HEAD %s said too little; fetching the manifest", redact_url(url))
        fetched = await self.get_manifest(name, reference)
        return ManifestRef(digest=fetched.digest, media_type=fetched.media_type, size=fetched.size)

    @staticmethod
    def _head_ref(response: httpx.Response, asked: Digest | None) -> ManifestRef | None:
        header = response.headers.get("docker-content-digest")
        content_type = response.headers.get("content-type")
        length = response.headers.get("content-length")
        if not header or not content_type or not length or not length.isdigit():
            return None
        if not MediaType.is_manifest(content_type):
            return None
        try:
            digest = Digest.parse(header.strip())
        except InvalidDigest:
            return None
        if asked is not None and digest != asked:
            return None  # let GET verify the bytes
        return ManifestRef(digest=digest, media_type=MediaType.base(content_type), size=int(length))

    async def get_manifest(
        self, name: str, reference: str | Digest, *, expected: Digest | None = None
    ) -> FetchedManifest:
        """A manifest's exact bytes, by tag or digest, verified.

        The bytes are checked against ``expected`` (or the digest asked for) and against the
        upstream's ``Docker-Content-Digest`` (with that header's algorithm). A mismatch is
        retried, then raised as :class:`DigestMismatch`. Over :data:`MAX_MANIFEST_SIZE` the
        download stops and :class:`ManifestTooLarge` is raised; a missing manifest raises
        :class:`ManifestNotFound`.
        """
        name = self._repo(name)
        ref, asked = self._reference(reference)
        want = Digest.parse(expected) if expected is not None else asked
        if asked is not None and want != asked:
            raise InvalidError(f"asked for manifest {asked} but expected {want}; they must agree")
        url = f"{self.url}/v2/{name}/manifests/{ref}"

        async def attempt() -> FetchedManifest:
            headers = {"Accept": _ACCEPT_MANIFESTS}
            async with self._open("manifest_get", "GET", url, headers) as response:
                if response.status_code != 200:
                    await self._fail(response, "manifest", name, ref)
                length = response.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
                    raise ManifestTooLarge(
                        f"manifest {name}:{ref} from {self.url} is {length} bytes; "
                        f"the limit is {MAX_MANIFEST_SIZE}"
                    )
                raw, over = await read_capped(response, MAX_MANIFEST_SIZE)
                self.stats.add_bytes(len(raw))
                if over:
                    raise ManifestTooLarge(
                        f"manifest {name}:{ref} from {self.url} is over the limit of "
                        f"{MAX_MANIFEST_SIZE} bytes"
                    )
                check_complete(response)
                header = response.headers.get("docker-content-digest")
                content_type = response.headers.get("content-type")
            return FetchedManifest(
                raw=raw,
                media_type=_media_type(content_type, raw),
                digest=self._verify_manifest(raw, want, header, f"{name}:{ref}"),
            )

        return await self._retrying("GET", url, attempt)

    def _verify_manifest(
        self, raw: bytes, want: Digest | None, header: str | None, what: str
    ) -> Digest:
        announced: Digest | None = None
        if header:
            try:
                announced = Digest.parse(header.strip())
            except InvalidDigest:
                _log.debug("ignoring unreadable Docker-Content-Digest %r for %s", header, what)
        for claim, source in ((want, "asked for"), (announced, "announced by the upstream")):
            if claim is None:
                continue
            actual = Digest.of(raw, claim.algorithm)
            if actual != claim:
                raise DigestMismatch(
                    f"manifest {what} from {self.url} has digest {actual}, "
                    f"but {claim} was {source}",
                    detail={"expected": str(claim), "actual": str(actual)},
                )
        return want or announced or Digest.of(raw)

    async def download_blob(
        self, name: str, digest: Digest | str, store: BlobSink, *, size: int | None = None
    ) -> Digest:
        """Stream a blob into ``store``, verified, and return its digest.

        Redirects (to object storage or a CDN) are followed; the registry's credentials are
        not sent to another host. A connection that breaks mid-body is resumed with a
        ``Range`` request (a server answering ``200`` instead is read again from the start).
        The store's writer checks digest and ``size`` before the blob becomes visible; a
        mismatch starts over. Resumes and restarts share the ``max_retries`` budget; when it
        runs out the last error is raised. Nothing unverified
        is ever stored, and the writer is aborted on failure. Whether to skip blobs already
        stored is the caller's decision.
        """
        name = self._repo(name)
        digest = Digest.parse(digest)
        if size is not None and size < 0:
            raise ValueError(f"size must be >= 0, got {size!r}")
        url = f"{self.url}/v2/{name}/blobs/{digest}"
        state = _BlobState(store, digest, size)
        try:
            return await self._retrying("GET", url, lambda: self._blob_attempt(url, name, state))
        finally:
            await state.discard()

    async def _blob_attempt(self, url: str, name: str, state: _BlobState) -> Digest:
        writer = state.writer or state.fresh()
        offset = writer.size
        if offset and state.size is not None and offset >= state.size:
            return await self._commit(state)  # it all arrived before the connection broke
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        async with self._open("blob", "GET", url, headers) as response:
            status = response.status_code
            if status == 416 and offset:
                await state.discard()
                raise TransientError(
                    f"GET {redact_url(url)}: the upstream cannot resume at byte {offset}; "
                    "starting over",
                    status_code=status,
                    url=redact_url(url),
                )
            if status not in (200, 206):
                await self._fail(response, "blob", name, str(state.digest))
            if status == 206 and _range_start(response.headers.get("content-range")) != offset:
                await state.discard()
                raise TransientError(
                    f"GET {redact_url(url)}: asked for bytes from {offset}, got range "
                    f"{response.headers.get('content-range')!r}; starting over",
                    status_code=status,
                    url=redact_url(url),
                )
            if status == 200 and offset:
                _log.debug("%s ignored Range: reading %s from the start", self.url, state.digest)
                await state.discard()
                writer = state.fresh()
            elif offset:
                _log.debug("resuming %s at byte %d", state.digest, offset)
            # Reading ahead lets receiving overlap the writer's flushes, which only a blob
            # past a writer's buffer has; below that it would only cost a task and a queue.
            ahead = state.size is None or state.size - offset > _READ_AHEAD_FROM
            async with (
                contextlib.aclosing(body_chunks(response)) as raw,
                contextlib.aclosing(prefetched(raw) if ahead else raw) as chunks,
            ):
                async for chunk in chunks:
                    try:
                        await writer.write(chunk)
                    except BaseException:
                        await state.discard()
                        raise
                    self.stats.add_bytes(len(chunk))
            check_complete(response)
        return await self._commit(state)

    @staticmethod
    async def _commit(state: _BlobState) -> Digest:
        writer, state.writer = state.writer, None
        assert writer is not None
        try:
            return await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def blob_exists(self, name: str, digest: Digest | str) -> int | None:
        """The size of a blob upstream (``HEAD``), or ``None`` when it has none."""
        name = self._repo(name)
        digest = Digest.parse(digest)
        url = f"{self.url}/v2/{name}/blobs/{digest}"

        async def attempt() -> int | None:
            async with self._open("blob_head", "HEAD", url) as response:
                if response.status_code == 404:
                    return None
                if response.status_code != 200:
                    await self._fail(response, "blob", name, str(digest))
                length = response.headers.get("content-length")
                if length is None or not length.isdigit():
                    raise UpstreamError(
                        f"HEAD {redact_url(url)} answered without a Content-Length",
                        status_code=200,
                        url=redact_url(url),
                    )
                return int(length)

        return await self._retrying("HEAD", url, attempt)
