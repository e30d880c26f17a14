"""Registry authentication: Bearer tokens from a realm, Basic, caching, and challenge parsing.

Each test scripts the registry and its token endpoint with pytest-httpx; a fake registry
(:class:`TokenRegistry`) hands out tokens per scope and accepts only the token for the scope a
request needs, as Distribution does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable

import httpx
import pytest
from pytest_httpx import HTTPXMock

from ocimirror.core.digest import Digest
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import UpstreamError
from ocimirror.upstream import (
    Challenge,
    RegistryAuth,
    RegistryClient,
    RequestStats,
    Token,
    TransientError,
    parse_www_authenticate,
    scope_for_path,
)

REGISTRY = "https://registry.example"
REALM = "https://auth.example/token"
SERVICE = "registry.example"
PASSWORD = "s3cret-Pa55word"

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": MediaType.OCI_MANIFEST,
        "config": {
            "mediaType": MediaType.OCI_CONFIG,
            "digest": str(Digest.of(b"{}")),
            "size": 2,
        },
        "layers": [],
    }
).encode()


def basic(username: str, password: str) -> str:
    """The Basic Authorization header for a user name and password."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def snapshot(request: httpx.Request) -> httpx.Request:
    """A copy of a request as sent (auth flows add headers to the same object later)."""
    return httpx.Request(request.method, request.url, headers=request.headers.copy())


def challenge(scope: str | None, error: str | None = None) -> str:
    """A Bearer challenge pointing at the test realm."""
    value = f'Bearer realm="{REALM}",service="{SERVICE}"'
    if scope:
        value += f',scope="{scope}"'
    if error:
        value += f',error="{error}"'
    return value


class TokenRegistry:
    """A registry that wants a Bearer token for the scope of each request, and its realm.

    Tokens are ``token-<n>``; the realm records every token request. With ``username`` the
    realm refuses requests without those Basic credentials. ``scopes`` gives the scopes the
    challenge names for the scope a request's path needs (by default just that one).
    """

    def __init__(
        self,
        *,
        field: str = "token",
        expires_in: float | None = 300,
        username: str | None = None,
        password: str | None = None,
        scopes: Callable[[str], tuple[str, ...]] | None = None,
    ) -> None:
        self.field = field
        self.expires_in = expires_in
        self.username = username
        self.password = password
        self.scopes = scopes or (lambda scope: (scope,))
        self.granted: dict[str, tuple[str, ...]] = {}
        self.token_requests: list[httpx.Request] = []
        self.registry_requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return self.token(request)
        self.registry_requests.append(snapshot(request))
        scope = scope_for_path(request.url.path)
        needed = self.scopes(scope) if scope else ()
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer ") and self.granted.get(auth[7:]) == needed:
            return httpx.Response(
                200,
                content=MANIFEST,
                headers={
                    "Content-Type": MediaType.OCI_MANIFEST,
                    "Docker-Content-Digest": str(Digest.of(MANIFEST)),
                },
            )
        error = "invalid_token" if auth.startswith("Bearer ") else None
        return httpx.Response(
            401,
            headers={"WWW-Authenticate": challenge(" ".join(needed) or None, error)},
            json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
        )

    def token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request)
        if self.username is not None and request.headers.get("authorization") != basic(
            self.username, self.password or ""
        ):
            return httpx.Response(401, json={"details": "incorrect username or password"})
        value = f"token-{len(self.token_requests)}"
        self.granted[value] = tuple(request.url.params.get_list("scope"))
        body: dict[str, object] = {self.field: value, "issued_at": "2024-01-01T00:00:00Z"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return httpx.Response(200, json=body)

    def revoke(self) -> None:
        """Make every token handed out so far invalid."""
        self.granted.clear()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def get(auth: RegistryAuth, path: str) -> httpx.Response:
    """GET ``path`` on the test registry through ``auth``."""
    async with httpx.AsyncClient(auth=auth) as http:
        return await http.get(f"{REGISTRY}{path}", headers={"User-Agent": "test-agent/1"})


def test_an_anonymous_bearer_challenge_is_answered_with_a_token_and_the_request_sent_again(
    httpx_mock: HTTPXMock,
) -> None:
    """A 401 Bearer challenge makes the flow ask the realm for the scope, then retry with it."""
    fake = TokenRegistry()
    httpx_mock.add_callback(fake, is_reusable=True)
    stats = RequestStats()

    response = asyncio.run(get(RegistryAuth(stats=stats), "/v2/library/alpine/manifests/latest"))

    assert response.status_code == 200
    assert response.content == MANIFEST
    [token_request] = fake.token_requests
    assert token_request.url.copy_with(query=None) == httpx.URL(REALM)
    assert token_request.url.params.get("service") == SERVICE
    assert token_request.url.params.get_list("scope") == ["repository:library/alpine:pull"]
    assert "authorization" not in token_request.headers
    assert token_request.headers["user-agent"] == "test-agent/1"
    first, retry = fake.registry_requests
    assert "authorization" not in first.headers
    assert retry.headers["authorization"] == "Bearer token-1"
    assert stats.requests["token"] == 1


def test_fifty_manifest_requests_need_one_token_and_another_repository_needs_one_more(
    httpx_mock: HTTPXMock,
) -> None:
    """Tokens are cached per scope and attached up front: one token request per repository."""
    fake = TokenRegistry()
    httpx_mock.add_callback(fake, is_reusable=True)

    async def main() -> RegistryClient:
        async with RegistryClient(REGISTRY) as client:
            for _ in range(50):
                await client.get_manifest("team/app", "latest")
            assert client.stats.requests["token"] == 1
            await client.get_manifest("team/other", "latest")
            await client.get_manifest("team/other", "v2")
            return client

    client = asyncio.run(main())
    assert client.stats.requests["token"] == 2
    assert [r.url.params.get("scope") for r in fake.token_requests] == [
        "repository:team/app:pull",
        "repository:team/other:pull",
    ]
    # Only the first request to each repository went out without a token.
    assert len(fake.registry_requests) == 52 + 2


@pytest.mark.parametrize(
    "scopes",
    [
        pytest.param(lambda scope: (f"{scope},push",), id="pull,push"),
        pytest.param(lambda scope: (scope, "repository:library/base:pull"), id="an extra scope"),
    ],
)
def test_a_token_for_a_challenge_with_other_scopes_is_sent_up_front_next_time(
    httpx_mock: HTTPXMock, scopes: Callable[[str], tuple[str, ...]]
) -> None:
    """When the challenge names other scopes than the path's ``repository:<name>:pull``, the
    token it got still goes up front with the next requests for that repository: three GETs
    cost one 401, one token and three GETs, not a 401 each."""
    fake = TokenRegistry(scopes=scopes)
    httpx_mock.add_callback(fake, is_reusable=True)

    async def main() -> None:
        async with RegistryClient(REGISTRY) as client:
            for tag in ("1", "2", "3"):
                await client.get_manifest("library/x", tag)

    asyncio.run(main())
    [token_request] = fake.token_requests
    assert tuple(token_request.url.params.get_list("scope")) == scopes("repository:library/x:pull")
    sent = [r.headers.get("authorization") for r in fake.registry_requests]
    assert sent == [None, "Bearer token-1", "Bearer token-1", "Bearer token-1"]
    assert len(httpx_mock.get_requests()) == 5


def test_concurrent_requests_needing_the_same_token_fetch_it_once(httpx_mock: HTTPXMock) -> None:
    """Twenty requests that all hit the challenge at once share one token request."""
    fake = TokenRegistry()
    httpx_mock.add_callback(fake, is_reusable=True)

    async def main() -> None:
        async with RegistryClient(REGISTRY) as client:
            results = await asyncio.gather(
                *(client.get_manifest("team/app", f"v{i}") for i in range(20))
            )
            assert all(r.raw == MANIFEST for r in results)

    asyncio.run(main())
    assert len(fake.token_requests) == 1


def test_one_auth_serves_several_event_loops(httpx_mock: HTTPXMock) -> None:
    """Concurrent challenges in one event loop, then in another, both work (locks per loop)."""
    fake = TokenRegistry()
    httpx_mock.add_callback(fake, is_reusable=True)
    auth = RegistryAuth()

    async def burst() -> None:
        async with httpx.AsyncClient(auth=auth) as http:
            responses = await asyncio.gather(
                *(http.get(f"{REGISTRY}/v2/team/app/manifests/{i}") for i in range(5))
            )
        assert all(r.status_code == 200 for r in responses)

    asyncio.run(burst())
    fake.revoke()
    asyncio.run(burst())
    assert len(fake.token_requests) == 2


@pytest.mark.parametrize(("expires_in", "lifetime"), [(None, 60), (300, 300)])
def test_an_expired_token_is_fetched_again(
    httpx_mock: HTTPXMock, expires_in: float | None, lifetime: float
) -> None:
    """A token is reused while valid (60 s when the realm does not say) and replaced after."""
    fake = TokenRegistry(expires_in=expires_in)
    httpx_mock.add_callback(fake, is_reusable=True)
    clock = Clock()
    auth = RegistryAuth(clock=clock)
    path = "/v2/team/app/manifests/latest"

    async def main() -> None:
        await get(auth, path)
        clock.now += lifetime / 2
        await get(auth, path)
        assert len(fake.token_requests) == 1
        clock.now += lifetime / 2 + 1
        response = await get(auth, path)
        assert response.status_code == 200

    asyncio.run(main())
    assert len(fake.token_requests) == 2
    # The second token went out with the request up front: no second 401 round trip.
    assert fake.registry_requests[-1].headers["authorization"] == "Bearer token-2"
    assert "authorization" not in fake.registry_requests[-2].headers


def test_the_access_token_field_is_accepted(httpx_mock: HTTPXMock) -> None:
    """Token endpoints that answer with OAuth2's ``access_token`` work too."""
    fake = TokenRegistry(field="access_token")
    httpx_mock.add_callback(fake, is_reusable=True)

    response = asyncio.run(get(RegistryAuth(), "/v2/team/app/manifests/latest"))

    assert response.status_code == 200
    assert fake.registry_requests[-1].headers["authorization"] == "Bearer token-1"


def test_credentials_are_sent_to_the_token_endpoint_as_basic_auth(httpx_mock: HTTPXMock) -> None:
    """With a username and password, the token request carries them as Basic auth."""
    fake = TokenRegistry(username="alice", password=PASSWORD)
    httpx_mock.add_callback(fake, is_reusable=True)

    response = asyncio.run(get(RegistryAuth("alice", PASSWORD), "/v2/team/app/manifests/1"))

    assert response.status_code == 200
    [token_request] = fake.token_requests
    assert token_request.headers["authorization"] == basic("alice", PASSWORD)
    # The registry itself never sees the password.
    assert all(PASSWORD not in r.headers.get("authorization", "") for r in fake.registry_requests)


def test_a_basic_challenge_is_answered_with_the_credentials_and_then_sent_up_front(
    httpx_mock: HTTPXMock,
) -> None:
    """A Basic challenge is answered with the credentials, and later requests carry them."""
    expected = basic("alice", PASSWORD)
    seen: list[httpx.Request] = []

    def registry(request: httpx.Request) -> httpx.Response:
        seen.append(snapshot(request))
        if request.headers.get("authorization") == expected:
            return httpx.Response(200, json={"name": "team/app", "tags": ["1"]})
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="Registry"'})

    httpx_mock.add_callback(registry, is_reusable=True)

    async def main() -> None:
        async with RegistryClient(REGISTRY, username="alice", password=PASSWORD) as client:
            assert await client.list_tags("team/app") == ["1"]
            assert await client.list_tags("team/app") == ["1"]

    asyncio.run(main())
    first, retry, second = seen
    assert "authorization" not in first.headers
    assert retry.headers["authorization"] == expected
    assert second.headers["authorization"] == expected


def test_a_basic_challenge_without_credentials_is_a_401_upstream_error(
    httpx_mock: HTTPXMock,
) -> None:
    """Without credentials a Basic challenge cannot be answered: UpstreamError with status 401."""
    httpx_mock.add_response(status_code=401, headers={"WWW-Authenticate": 'Basic realm="Registry"'})

    async def main() -> None:
        async with RegistryClient(REGISTRY) as client:
            await client.list_tags("team/app")

    with pytest.raises(UpstreamError) as caught:
        asyncio.run(main())
    assert caught.value.status_code == 401
    assert "refused anonymous access" in str(caught.value)


def test_refused_credentials_raise_an_error_that_never_shows_the_password(
    httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused credentials give a 401 UpstreamError; the password is in no message or repr."""
    fake = TokenRegistry(username="alice", password="the-right-one")
    httpx_mock.add_callback(fake, is_reusable=True)
    caplog.set_level(logging.DEBUG, logger="ocimirror")
    client = RegistryClient(REGISTRY, username="alice", password=PASSWORD)

    async def main() -> None:
        async with client:
            await client.get_manifest("team/app", "latest")

    with pytest.raises(UpstreamError) as caught:
        asyncio.run(main())
    error = caught.value
    assert error.status_code == 401
    assert "refused the credentials of user 'alice'" in str(error)
    assert "incorrect username or password" in str(error)
    encoded = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    for text in (
        str(error),
        repr(error),
        repr(error.args),
        repr(error.errors),
        repr(client),
        repr(RegistryAuth("alice", PASSWORD)),
        caplog.text,
    ):
        assert PASSWORD not in text
        assert encoded not in text
    assert "alice" in repr(RegistryAuth("alice", PASSWORD))


def test_a_token_endpoint_that_fails_is_retried_then_reported_with_its_status(
    httpx_mock: HTTPXMock,
) -> None:
    """A 503 from the realm is transient (retried); the final error carries status and text."""
    httpx_mock.add_response(
        url=f"{REGISTRY}/v2/team/app/tags/list",
        status_code=401,
        headers={"WWW-Authenticate": challenge("repository:team/app:pull")},
        is_reusable=True,
    )
    httpx_mock.add_response(
        url=f"{REALM}?service={SERVICE}&scope=repository:team/app:pull",
        status_code=503,
        text="token service is down for maintenance",
        is_reusable=True,
    )

    async def main() -> None:
        async with RegistryClient(REGISTRY, max_retries=2, backoff_base=0.0) as client:
            await client.list_tags("team/app")

    with pytest.raises(TransientError) as caught:
        asyncio.run(main())
    assert caught.value.status_code == 503
    assert "token service is down for maintenance" in str(caught.value)
    assert caught.value.url == REALM
    assert len([r for r in httpx_mock.get_requests() if r.url.host == "auth.example"]) == 3


def test_a_token_answer_without_a_token_is_an_upstream_error(httpx_mock: HTTPXMock) -> None:
    """A realm that answers 200 without ``token`` or ``access_token`` gives UpstreamError."""
    httpx_mock.add_response(
        url=f"{REGISTRY}/v2/",
        status_code=401,
        headers={"WWW-Authenticate": challenge(None)},
    )
    httpx_mock.add_response(url=f"{REALM}?service={SERVICE}", json={"expires_in": 60})

    async def main() -> None:
        async with RegistryClient(REGISTRY) as client:
            await client.ping()

    with pytest.raises(UpstreamError, match="without a token"):
        asyncio.run(main())


def test_a_revoked_cached_token_is_replaced_once(httpx_mock: HTTPXMock) -> None:
    """A cached token the registry refuses is dropped, a new one fetched, the request resent."""
    fake = TokenRegistry()
    httpx_mock.add_callback(fake, is_reusable=True)
    auth = RegistryAuth()

    async def main() -> None:
        await get(auth, "/v2/team/app/manifests/1")
        fake.revoke()
        response = await get(auth, "/v2/team/app/manifests/1")
        assert response.status_code == 200

    asyncio.run(main())
    assert len(fake.token_requests) == 2
    sent = [r.headers.get("authorization") for r in fake.registry_requests]
    assert sent == [None, "Bearer token-1", "Bearer token-1", "Bearer token-2"]


def test_a_registry_that_refuses_every_token_is_asked_only_twice(httpx_mock: HTTPXMock) -> None:
    """If the fresh token is refused too, the 401 stands: no endless token loop."""
    httpx_mock.add_response(
        url=f"{REGISTRY}/v2/team/app/manifests/1",
        status_code=401,
        headers={"WWW-Authenticate": challenge("repository:team/app:pull")},
        is_reusable=True,
    )
    httpx_mock.add_response(
        url=f"{REALM}?service={SERVICE}&scope=repository:team/app:pull",
        json={"token": "useless"},
    )

    response = asyncio.run(get(RegistryAuth(), "/v2/team/app/manifests/1"))

    assert response.status_code == 401
    registry_requests = [r for r in httpx_mock.get_requests() if r.url.host == "registry.example"]
    assert len(registry_requests) == 2


def test_a_huge_401_body_is_read_only_up_to_the_cap(httpx_mock: HTTPXMock) -> None:
    """The body of a challenge is read at most 64 KiB, however much the registry sends."""
    fake = TokenRegistry()

    def registry(request: httpx.Request) -> httpx.Response:
        response = fake(request)
        if response.status_code == 401:
            return httpx.Response(401, headers=response.headers, content=b"x" * (1 << 20))
        return response

    httpx_mock.add_callback(registry, is_reusable=True)

    response = asyncio.run(get(RegistryAuth(), "/v2/team/app/manifests/1"))

    assert response.status_code == 200
    assert len(response.history[0].content) == 64 * 1024


def test_the_blocking_flow_answers_challenges_for_an_httpx_client(httpx_mock: HTTPXMock) -> None:
    """``RegistryAuth`` works with a blocking ``httpx.Client`` too, caching the same way."""
    fake = TokenRegistry()
    httpx_mock.add_callback(fake, is_reusable=True)

    with httpx.Client(auth=RegistryAuth()) as http:
        for _ in range(3):
            assert http.get(f"{REGISTRY}/v2/team/app/manifests/1").status_code == 200

    assert len(fake.token_requests) == 1
    assert len(fake.registry_requests) == 4


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/alpine:pull"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/alpine:pull",
                    },
                )
            ],
        ),
        (
            'Bearer realm="https://a/token",scope="repository:foo:pull,push"',
            [
                Challenge(
                    "bearer", {"realm": "https://a/token", "scope": "repository:foo:pull,push"}
                )
            ],
        ),
        (
            'Basic realm="a, b", Bearer realm="https://a/token",service="s"',
            [
                Challenge("basic", {"realm": "a, b"}),
                Challenge("bearer", {"realm": "https://a/token", "service": "s"}),
            ],
        ),
        ('BEARER Realm="x",SERVICE="y"', [Challenge("bearer", {"realm": "x", "service": "y"})]),
        (r'Bearer realm="say \"hi\"\\"', [Challenge("bearer", {"realm": 'say "hi"\\'})]),
        (
            'Bearer realm = "x" ,  service = "y" ,',
            [Challenge("bearer", {"realm": "x", "service": "y"})],
        ),
        (
            "Bearer realm=https://auth.example/token,service=reg",
            [Challenge("bearer", {"realm": "https://auth.example/token", "service": "reg"})],
        ),
        (
            'Negotiate abc123==, Bearer realm="x"',
            [Challenge("negotiate", {}, "abc123=="), Challenge("bearer", {"realm": "x"})],
        ),
        ("Basic", [Challenge("basic", {})]),
        ('Bearer realm="x" service="y"', [Challenge("bearer", {"realm": "x", "service": "y"})]),
        ('Bearer realm="unterminated', [Challenge("bearer", {"realm": "unterminated"})]),
        ('Bearer realm="first",realm="second"', [Challenge("bearer", {"realm": "first"})]),
        (
            'Bearer error="invalid_token",realm="x"',
            [Challenge("bearer", {"error": "invalid_token", "realm": "x"})],
        ),
        ("", []),
        (" , ,", []),
    ],
)
def test_www_authenticate_values_parse_into_challenges(
    header: str, expected: list[Challenge]
) -> None:
    """Quoted commas, escapes, several challenges, odd spacing and bare values all parse."""
    assert parse_www_authenticate(header) == expected


def test_several_www_authenticate_headers_give_all_their_challenges() -> None:
    """Challenges from several headers come back in order, with scopes split on spaces."""
    found = parse_www_authenticate(
        ['Basic realm="r"', 'Bearer realm="x",scope="repository:a:pull repository:b:pull"']
    )
    assert [c.scheme for c in found] == ["basic", "bearer"]
    assert found[1].scopes == ("repository:a:pull", "repository:b:pull")
    assert found[1].realm == "x"
    assert found[1].service is None


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/v2/library/alpine/manifests/3.20", "repository:library/alpine:pull"),
        ("/v2/a/b/c/blobs/sha256:" + "0" * 64, "repository:a/b/c:pull"),
        ("/v2/team/app/tags/list", "repository:team/app:pull"),
        ("/v2/blobs/manifests/latest", "repository:blobs:pull"),
        ("/v2/a/manifests/b/manifests/latest", "repository:a/manifests/b:pull"),
        ("/v2/", None),
        ("/v2/_catalog", None),
        ("/token", None),
    ],
)
def test_the_scope_of_a_request_comes_from_its_path(path: str, scope: str | None) -> None:
    """Repository paths need ``repository:<name>:pull``; others need no repository scope."""
    assert scope_for_path(path) == scope


def test_a_token_never_shows_its_value() -> None:
    """A cached token's repr leaves out the token itself."""
    token = Token("eyJhbGciOiJFUzI1NiJ9.secret", expires_at=60.0)
    assert "secret" not in repr(token)
