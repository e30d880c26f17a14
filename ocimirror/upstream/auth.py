"""Registry authentication as an :class:`httpx.Auth` flow: Bearer tokens and Basic.

The Bearer dance (https://distribution.github.io/distribution/spec/auth/token/)::

    client                      registry                         token endpoint (realm)
      GET /v2/foo/manifests/1 ->
                              <- 401 WWW-Authenticate: Bearer realm=..,service=..,scope=..
      GET realm?service=..&scope=.. (Basic credentials, if any) ------------->
                                          <- {"token": .., "expires_in": .., "issued_at": ..}
      GET /v2/foo/manifests/1, Authorization: Bearer <token> ->
                              <- 200

Tokens are cached per (realm, service, scopes) until shortly before they expire, under the
scopes the registry's challenge named. A request's repository comes from its path
(``/v2/<name>/manifests/...`` -> ``repository:<name>:pull``), and once a challenge for that
repository has been answered, the repository maps to the token it got, whatever scopes the
challenge asked for (``repository:<name>:pull,push``, several): later requests carry the cached
token from the start. A sync of a thousand images asks for a token per repository, not per
request. Concurrent requests needing the same token fetch it once.

Where credentials go: the registry's own origin (scheme, host and port of its URL) gets Basic
credentials when it asks for them; a token realm gets them when it is HTTPS, or plain HTTP on
the registry's host when the registry itself is plain HTTP. A realm on another host over plain
HTTP is asked for an anonymous token instead. Challenges from any other origin (the host a blob
redirect led to, a tag page on another host) are not answered at all.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator
from datetime import datetime
from typing import Any

import attrs
import httpx

from ocimirror.errors import UpstreamError
from ocimirror.upstream._body import ERROR_BODY_LIMIT, cap_body, describe_errors, oci_errors
from ocimirror.upstream.challenge import Challenge, parse_www_authenticate
from ocimirror.upstream.redact import redact_json, redact_text, redact_url
from ocimirror.upstream.retry import TransientError, parse_retry_after, retryable_status
from ocimirror.upstream.stats import RequestStats

__all__ = ["DEFAULT_TOKEN_LIFETIME", "RegistryAuth", "Token", "scope_for_path"]

_log = logging.getLogger("ocimirror.upstream")

#: Seconds a token lives when the token endpoint does not say (the spec's default).
DEFAULT_TOKEN_LIFETIME = 60.0

#: The most of a token endpoint's answer that is read.
TOKEN_BODY_LIMIT = 1 << 20

#: Redirects of a token request followed here when the client follows none itself (httpx
#: leaves the Authorization header out of a redirect to another origin).
MAX_TOKEN_REDIRECTS = 5

_SCOPED_PATH = re.compile(r"/v2/(?P<name>.+)/(?:manifests|blobs|tags|referrers|signatures)/[^/]+$")

#: (realm, service, scopes)
_Key = tuple[str, str, tuple[str, ...]]

#: (origin, scope derived from the path)
_Route = tuple[str, str | None]


def scope_for_path(path: str) -> str | None:
    """The pull scope a registry API path needs, or ``None`` for paths outside a repository.

    ``/v2/library/alpine/manifests/3.20`` -> ``repository:library/alpine:pull``.
    """
    m = _SCOPED_PATH.search(path)
    return None if m is None else f"repository:{m.group('name')}:pull"


@attrs.frozen
class Token:
    """A bearer token and when to stop using it (on the owning auth's clock)."""

    value: str = attrs.field(repr=False)
    #: Clock reading after which the token is not used any more (a little before it expires).
    expires_at: float
    #: When the token endpoint says it issued the token, if it said.
    issued_at: datetime | None = None

    def valid(self, now: float) -> bool:
        """Whether the token may still be used at clock reading ``now``."""
        return now < self.expires_at


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def _may_get_credentials(realm: httpx.URL, registry: httpx.URL) -> bool:
    """Whether a token realm may be sent the registry's credentials: over HTTPS, or over plain
    HTTP on the registry's own host when the registry is plain HTTP too."""
    if realm.scheme == "https":
        return True
    return realm.scheme == "http" and registry.scheme == "http" and realm.host == registry.host


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@attrs.frozen
class _Plan:
    """What to do about a 401: answer a Bearer challenge (``key``) or send Basic.

    ``credentials`` says whether the token request carries the Basic credentials.
    """

    key: _Key | None
    sent: str | None
    credentials: bool = False


class RegistryAuth(httpx.Auth):
    """Answers registry challenges: Bearer tokens (anonymous or with credentials) and Basic.

    Works with :class:`httpx.AsyncClient` and :class:`httpx.Client`. ``registry`` is the
    registry's URL: credentials go to its origin only (and to token realms, see the module's
    docstring); without it, each request's own origin counts as the registry's. ``stats``
    counts token requests under ``"token"``; ``clock`` (seconds, monotonic) is replaceable
    for tests. The password never appears in reprs, logs or error messages.
    """

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        registry: str | None = None,
        stats: RequestStats | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._username = username or None
        self._password = password if self._username is not None else None
        self._registry = httpx.URL(registry) if registry is not None else None
        self.stats = stats if stats is not None else RequestStats()
        self._clock = clock
        self._tokens: dict[_Key, Token] = {}
        self._realms: dict[str, tuple[str, str]] = {}  # origin -> (realm, service)
        self._routes: dict[_Route, _Key] = {}  # the token a repository's challenge got
        self._basic: set[str] = set()  # origins that asked for Basic
        self._withheld: set[str] = set()  # realms told about not getting the credentials
        # asyncio locks belong to one event loop: keep a set per loop.
        self._async_locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[_Key, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()
        self._thread_locks: dict[_Key, threading.Lock] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        password = None if self._password is None else "********"
        return f"RegistryAuth(username={self._username!r}, password={password!r})"

    @property
    def username(self) -> str | None:
        """The user name credentials are sent for, or ``None`` for anonymous access."""
        return self._username

    def clear(self) -> None:
        """Forget every cached token."""
        self._tokens.clear()

    # -- shared steps of both flows

    def _basic_header(self) -> str:
        pair = f"{self._username}:{self._password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def _prepare(self, request: httpx.Request) -> tuple[str, str | None]:
        """Attach cached credentials for the request's origin and scope."""
        origin = _origin(request.url)
        scope = scope_for_path(request.url.path)
        if "authorization" not in request.headers:
            header = self._cached_header(origin, scope)
            if header is not None:
                request.headers["Authorization"] = header
        return origin, scope

    def _cached_header(self, origin: str, scope: str | None) -> str | None:
        if origin in self._basic and self._username is not None:
            return self._basic_header()
        key = self._routes.get((origin, scope))
        if key is None:
            known = self._realms.get(origin)
            if known is None:
                return None
            key = (*known, (scope,) if scope else ())
        token = self._tokens.get(key)
        if token is not None and token.valid(self._clock()):
            return f"Bearer {token.value}"
        return None

    def _registry_of(self, request: httpx.Request) -> httpx.URL:
        return self._registry if self._registry is not None else request.url

    def _is_registry(self, request: httpx.Request) -> bool:
        """Whether ``request`` goes to the registry's own origin."""
        return self._registry is None or _origin(request.url) == _origin(self._registry)

    def _plan(
        self, request: httpx.Request, response: httpx.Response, origin: str, scope: str | None
    ) -> _Plan | None:
        """How to answer a 401, or ``None`` to let it through."""
        if not self._is_registry(request) or _origin(response.request.url) != origin:
            return None  # another host's challenge (a redirect target's): not ours to answer
        challenges = parse_www_authenticate(response.headers.get_list("www-authenticate"))
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        sent = request.headers.get("authorization")
        if bearer is not None:
            key = self._bearer_key(request, bearer, origin, scope)
            realm = httpx.URL(key[0])
            credentials = self._username is not None and _may_get_credentials(
                realm, self._registry_of(request)
            )
            if self._username is not None and not credentials:
                self._withhold(realm)
            return _Plan(key=key, sent=sent, credentials=credentials)
        if any(c.scheme == "basic" for c in challenges) and self._username is not None:
            if sent == self._basic_header():
                return None  # refused already
            self._basic.add(origin)
            return _Plan(key=None, sent=sent)
        return None

    def _withhold(self, realm: httpx.URL) -> None:
        shown = redact_url(realm)
        if shown not in self._withheld:
            self._withheld.add(shown)
            _log.warning(
                "not sending the credentials of user %r to the token endpoint %s: it is plain "
                "HTTP on another host than the registry; asking for an anonymous token",
                self._username,
                shown,
            )

    def _bearer_key(
        self, request: httpx.Request, challenge: Challenge, origin: str, scope: str | None
    ) -> _Key:
        assert challenge.realm is not None
        realm = str(request.url.join(challenge.realm))
        service = challenge.service or ""
        scopes = challenge.scopes or ((scope,) if scope else ())
        self._realms[origin] = (realm, service)
        key = (realm, service, scopes)
        self._routes[(origin, scope)] = key
        return key

    def _reusable(self, plan: _Plan) -> Token | None:
        """A cached token for the plan that was not the one just refused, if any."""
        assert plan.key is not None
        token = self._tokens.get(plan.key)
        if token is None or not token.valid(self._clock()):
            return None
        if plan.sent == f"Bearer {token.value}":
            del self._tokens[plan.key]  # refused: a new one is needed
            return None
        return token

    def _token_request(self, plan: _Plan, request: httpx.Request) -> httpx.Request:
        assert plan.key is not None
        realm, service, scopes = plan.key
        url = httpx.URL(realm)
        params = list(url.params.multi_items())
        if service:
            params.append(("service", service))
        params.extend(("scope", s) for s in scopes)
        headers = {"Accept": "application/json"}
        agent = request.headers.get("user-agent")
        if agent:
            headers["User-Agent"] = agent
        if plan.credentials:
            headers["Authorization"] = self._basic_header()
        self.stats.count("token")
        _log.debug(
            "fetching a token from %s for %s as %s",
            redact_url(realm),
            " ".join(scopes) or "no scope",
            self._username if plan.credentials else "anonymous",
        )
        return httpx.Request("GET", url.copy_with(params=params), headers=headers)

    def _accept_token(self, plan: _Plan, response: httpx.Response) -> Token:
        """Read a token endpoint's answer (already read, under a cap) and cache the token."""
        key = plan.key
        assert key is not None
        url = redact_url(response.request.url)
        realm = redact_url(key[0])
        if url != realm:
            realm = f"{realm} (redirected to {url})"
        body = response.content
        status = response.status_code
        if status != 200:
            errors = redact_json(oci_errors(body))
            detail = redact_text(describe_errors(errors, body))
            said = f": {detail}" if detail else ""
            if status in (401, 403):
                if plan.credentials:
                    who = f"the credentials of user {self._username!r}"
                elif self._username is not None:
                    who = (
                        "anonymous access (the credentials of user "
                        f"{self._username!r} are not sent to it: it is plain HTTP on "
                        "another host than the registry)"
                    )
                else:
                    who = "anonymous access (give a username and password)"
                message = f"the token endpoint {realm} refused {who}: {status}{said}"
                raise UpstreamError(message, status_code=status, errors=errors, url=url)
            message = f"the token endpoint {realm} answered {status}{said}"
            if retryable_status(status):
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                raise TransientError(
                    message, status_code=status, errors=errors, url=url, retry_after=retry_after
                )
            raise UpstreamError(message, status_code=status, errors=errors, url=url)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise UpstreamError(
                f"the token endpoint {realm} answered with something that is not a JSON object",
                status_code=status,
                url=url,
            )
        value = data.get("token") or data.get("access_token")
        if not isinstance(value, str) or not value:
            raise UpstreamError(
                f"the token endpoint {realm} answered without a token",
                status_code=status,
                url=url,
            )
        lifetime = data.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        margin = min(10.0, lifetime * 0.1)  # stop using it a little early
        token = Token(
            value=value,
            expires_at=self._clock() + float(lifetime) - margin,
            issued_at=_parse_time(data.get("issued_at")),
        )
        self._tokens[key] = token
        return token

    def _async_lock(self, key: _Key) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._guard:
            locks = self._async_locks.setdefault(loop, {})
            lock = locks.get(key)
            if lock is None:
                lock = locks[key] = asyncio.Lock()
            return lock

    def _thread_lock(self, key: _Key) -> threading.Lock:
        with self._guard:
            lock = self._thread_locks.get(key)
            if lock is None:
                lock = self._thread_locks[key] = threading.Lock()
            return lock

    # -- the flows

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Send ``request``; on a challenge get credentials and send it once more."""
        origin, scope = self._prepare(request)
        response = yield request
        if response.status_code != 401:
            return
        plan = self._plan(request, response, origin, scope)
        if plan is None:
            return
        cap_body(response, ERROR_BODY_LIMIT)  # httpx reads it before the next request
        if plan.key is None:
            request.headers["Authorization"] = self._basic_header()
        else:
            async with self._async_lock(plan.key):
                token = self._reusable(plan)
                if token is None:
                    token_response = yield self._token_request(plan, request)
                    for _ in range(MAX_TOKEN_REDIRECTS):  # when the caller follows none
                        if token_response.next_request is None:
                            break
                        cap_body(token_response, ERROR_BODY_LIMIT)
                        token_response = yield token_response.next_request
                    cap_body(token_response, TOKEN_BODY_LIMIT)
                    await token_response.aread()
                    token = self._accept_token(plan, token_response)
            request.headers["Authorization"] = f"Bearer {token.value}"
        yield request

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """The blocking twin of :meth:`async_auth_flow`, for :class:`httpx.Client`."""
        origin, scope = self._prepare(request)
        response = yield request
        if response.status_code != 401:
            return
        plan = self._plan(request, response, origin, scope)
        if plan is None:
            return
        cap_body(response, ERROR_BODY_LIMIT)
        if plan.key is None:
            request.headers["Authorization"] = self._basic_header()
        else:
            with self._thread_lock(plan.key):
                token = self._reusable(plan)
                if token is None:
                    token_response = yield self._token_request(plan, request)
                    for _ in range(MAX_TOKEN_REDIRECTS):
                        if token_response.next_request is None:
                            break
                        cap_body(token_response, ERROR_BODY_LIMIT)
                        token_response = yield token_response.next_request
                    cap_body(token_response, TOKEN_BODY_LIMIT)
                    token_response.read()
                    token = self._accept_token(plan, token_response)
            request.headers["Authorization"] = f"Bearer {token.value}"
        yield request
