"""Where credentials go, and what errors and logs show of a URL.

Credentials go to the registry's own origin and to token realms that are HTTPS (or plain HTTP
on the registry's own plain HTTP host); a redirect target on another host gets neither them nor
the remote's extra headers. Errors, their ``url`` and log lines show a URL's host and path
only: never its userinfo, never a signed URL's query string. Each test scripts the exchanges
with pytest-httpx.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from pytest_httpx import HTTPXMock

from ocimirror.backends.blobs import open_blob_store
from ocimirror.core.digest import Digest
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import BlobNotFound, UpstreamError
from ocimirror.upstream import RegistryAuth, RegistryClient, redact_text, redact_url

REGISTRY = "https://registry.example"
NAME = "team/app"
USER, PASSWORD = "alice", "pa55-Word-9"
API_KEY = "key-0f1e2d3c4b5a"
SECRET, ACCESS_KEY = "SECRET", "AK"
SIGNED = f"https://bucket.s3.example/blob?X-Amz-Signature={SECRET}&X-Amz-Credential={ACCESS_KEY}"

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": MediaType.OCI_MANIFEST,
        "config": {"mediaType": MediaType.OCI_CONFIG, "digest": str(Digest.of(b"{}")), "size": 2},
        "layers": [],
    }
).encode()
BLOB = b"layer bytes " * 1000
BLOB_DIGEST = Digest.of(BLOB)

_T = TypeVar("_T")


def basic(username: str = USER, password: str = PASSWORD) -> str:
    """The Basic Authorization header for a user name and password."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def snapshot(request: httpx.Request) -> httpx.Request:
    """A copy of a request as sent (auth flows add headers to the same object later)."""
    return httpx.Request(request.method, request.url, headers=request.headers.copy())


def manifest_response() -> httpx.Response:
    """A registry's answer to a manifest GET."""
    return httpx.Response(
        200,
        content=MANIFEST,
        headers={
            "Content-Type": MediaType.OCI_MANIFEST,
            "Docker-Content-Digest": str(Digest.of(MANIFEST)),
        },
    )


def run(client: RegistryClient, call: Callable[[RegistryClient], Awaitable[_T]]) -> _T:
    """Run one call against ``client`` in a fresh event loop, then close the client."""

    async def main() -> _T:
        async with client:
            return await call(client)

    return asyncio.run(main())


def client(registry: str = REGISTRY, **options: Any) -> RegistryClient:
    """A client of ``registry`` as alice, with an API key header and no retries."""
    options.setdefault("username", USER)
    options.setdefault("password", PASSWORD)
    options.setdefault("headers", {"X-Api-Key": API_KEY})
    options.setdefault("max_retries", 0)
    return RegistryClient(registry, **options)


def download(c: RegistryClient) -> Awaitable[Digest]:
    """Download the test blob into a fresh in-memory store."""
    store = open_blob_store(f"memory://credentials-{uuid.uuid4().hex}")
    return c.download_blob(NAME, BLOB_DIGEST, store)


def shown(error: BaseException) -> str:
    """Everything an error shows: its text, repr, ``url``, ``errors`` and ``detail``."""
    return " ".join(
        str(part)
        for part in (
            error,
            repr(error),
            getattr(error, "url", None),
            getattr(error, "errors", None),
            getattr(error, "detail", None),
        )
    )


class TokenRegistry:
    """A registry at ``registry`` wanting a Bearer token from ``realm``; the realm hands one
    to anybody (or, with ``anonymous=False``, only to alice's Basic credentials). The blob
    answers with a redirect to ``blob_location``; every request is recorded as sent."""

    def __init__(
        self,
        registry: str = REGISTRY,
        realm: str = "https://auth.example/token",
        *,
        anonymous: bool = True,
        blob_location: str | None = None,
    ) -> None:
        self.registry = httpx.URL(registry)
        self.realm = realm
        self.anonymous = anonymous
        self.blob_location = blob_location
        self.seen: list[httpx.Request] = []

    @property
    def token_requests(self) -> list[httpx.Request]:
        """The requests sent to the realm."""
        return [r for r in self.seen if r.url.path == "/token"]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(snapshot(request))
        if request.url.path == "/token":
            if not self.anonymous and request.headers.get("authorization") != basic():
                return httpx.Response(401, json={"details": "credentials needed"})
            return httpx.Response(200, json={"token": "tok", "expires_in": 300})
        if (request.url.scheme, request.url.host, request.url.port) != (
            self.registry.scheme,
            self.registry.host,
            self.registry.port,
        ):
            return httpx.Response(200, content=BLOB)  # the redirect target
        if request.headers.get("authorization") != "Bearer tok":
            challenge = f'Bearer realm="{self.realm}",service="reg",scope="repository:{NAME}:pull"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if "/blobs/" in request.url.path and self.blob_location is not None:
            return httpx.Response(307, headers={"Location": self.blob_location})
        if "/blobs/" in request.url.path:
            return httpx.Response(200, content=BLOB)
        return manifest_response()


# -- where credentials go


@pytest.mark.parametrize(
    ("registry", "realm", "sent"),
    [
        pytest.param(REGISTRY, "https://auth.example/token", True, id="https realm, other host"),
        pytest.param(REGISTRY, "/token", True, id="a realm on the registry itself"),
        pytest.param(
            "http://registry.example:5000",
            "http://registry.example:5001/token",
            True,
            id="plain http realm on the host of a plain http registry",
        ),
        pytest.param(
            REGISTRY, "http://registry.example/token", False, id="plain http realm, https registry"
        ),
        pytest.param(
            "http://registry.example",
            "http://auth.example/token",
            False,
            id="plain http realm, other host",
        ),
    ],
)
def test_a_token_realm_gets_the_credentials_only_over_https_or_on_the_registrys_own_host(
    httpx_mock: HTTPXMock, registry: str, realm: str, sent: bool
) -> None:
    """Basic credentials go to an HTTPS realm or a plain HTTP realm on the host of a plain HTTP
    registry; any other realm is asked for an anonymous token, and the request still works."""
    fake = TokenRegistry(registry, realm)
    httpx_mock.add_callback(fake, is_reusable=True)

    fetched = run(client(registry), lambda c: c.get_manifest(NAME, "latest"))

    assert fetched.raw == MANIFEST
    [token_request] = fake.token_requests
    assert token_request.headers.get("authorization") == (basic() if sent else None)
    assert all(
        PASSWORD not in r.headers.get("authorization", "")
        for r in fake.seen
        if r not in fake.token_requests
    )


def test_a_plain_http_realm_that_wants_credentials_fails_cleanly_without_getting_them(
    httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain HTTP realm on another host that refuses anonymous access: an UpstreamError that
    says the credentials were withheld and why; they were never sent, and a warning says so."""
    fake = TokenRegistry(realm="http://auth.example/token", anonymous=False)
    httpx_mock.add_callback(fake, is_reusable=True)
    caplog.set_level(logging.DEBUG, logger="ocimirror")

    with pytest.raises(UpstreamError) as caught:
        run(client(), lambda c: c.get_manifest(NAME, "latest"))

    assert caught.value.status_code == 401
    assert "not sent to it: it is plain HTTP on another host" in str(caught.value)
    assert all("authorization" not in r.headers for r in fake.token_requests)
    assert "not sending the credentials of user 'alice'" in caplog.text
    assert PASSWORD not in shown(caught.value) + caplog.text


def test_a_blob_redirect_to_another_host_carries_no_credentials_and_no_extra_headers(
    httpx_mock: HTTPXMock,
) -> None:
    """The object store a blob redirects to gets neither the token nor the remote's extra
    headers (an API key is a credential too); the user agent still goes."""
    fake = TokenRegistry(blob_location=SIGNED)
    httpx_mock.add_callback(fake, is_reusable=True)

    assert run(client(), download) == BLOB_DIGEST

    *registry_requests, target = fake.seen
    assert target.url.host == "bucket.s3.example"
    assert "authorization" not in target.headers
    assert "x-api-key" not in target.headers
    assert target.headers["user-agent"].startswith("ocimirror/")
    assert registry_requests[-1].headers["authorization"] == "Bearer tok"
    assert registry_requests[-1].headers["x-api-key"] == API_KEY


def test_a_redirect_within_the_registry_keeps_the_credentials_and_headers(
    httpx_mock: HTTPXMock,
) -> None:
    """A redirect to another path of the registry's own origin is still the registry: the
    token and the extra headers go along."""
    fake = TokenRegistry(blob_location=f"{REGISTRY}/v2/{NAME}/blobs/elsewhere/{BLOB_DIGEST}")
    original = fake.__call__

    def handler(request: httpx.Request) -> httpx.Response:
        if "/elsewhere/" in request.url.path and request.headers.get("authorization"):
            fake.seen.append(snapshot(request))
            return httpx.Response(200, content=BLOB)
        return original(request)

    httpx_mock.add_callback(handler, is_reusable=True)

    assert run(client(), download) == BLOB_DIGEST

    last = fake.seen[-1]
    assert "/elsewhere/" in last.url.path
    assert last.headers["authorization"] == "Bearer tok"
    assert last.headers["x-api-key"] == API_KEY


@pytest.mark.parametrize(
    "challenge",
    ['Basic realm="cdn"', 'Bearer realm="https://cdn.example/token",service="cdn"'],
    ids=["basic", "bearer"],
)
def test_a_redirect_target_that_challenges_is_not_answered_and_is_named_in_the_error(
    httpx_mock: HTTPXMock, challenge: str
) -> None:
    """A host the registry redirected to that asks for credentials gets none (not even a token
    fetched with them): the 401 stands, and the error names that host."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(snapshot(request))
        if request.url.host == "cdn.example":
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if request.headers.get("authorization") != basic():
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="registry"'})
        return httpx.Response(307, headers={"Location": "https://cdn.example/blob?sig=abcdef"})

    httpx_mock.add_callback(handler, is_reusable=True)

    with pytest.raises(UpstreamError) as caught:
        run(client(), download)

    assert caught.value.status_code == 401
    assert "cdn.example refused the request" in str(caught.value)
    assert caught.value.url == "https://cdn.example/blob"
    for request in seen:
        if request.url.host != "registry.example":
            assert "authorization" not in request.headers
            assert "x-api-key" not in request.headers
    assert [r.url.host for r in seen].count("cdn.example") == 1


def test_a_tag_page_on_another_host_gets_no_credentials(httpx_mock: HTTPXMock) -> None:
    """A ``Link`` to another host is followed, but that host gets no credentials or extra
    headers."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(snapshot(request))
        if request.url.host == "pages.example":
            return httpx.Response(200, json={"tags": ["2"]})
        if request.headers.get("authorization") != basic():
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="registry"'})
        link = '<https://pages.example/v2/team/app/tags/list?last=1>; rel="next"'
        return httpx.Response(200, json={"tags": ["1"]}, headers={"Link": link})

    httpx_mock.add_callback(handler, is_reusable=True)

    assert run(client(), lambda c: c.list_tags(NAME)) == ["1", "2"]

    page = seen[-1]
    assert page.url.host == "pages.example"
    assert "authorization" not in page.headers
    assert "x-api-key" not in page.headers


def test_a_token_endpoint_that_redirects_is_followed_with_the_credentials_on_its_origin(
    httpx_mock: HTTPXMock,
) -> None:
    """The client follows no redirect blindly, so the auth flow follows the realm's own: within
    the realm's origin the credentials go along, to another origin they do not."""
    fake = TokenRegistry(anonymous=False)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(snapshot(request))
        query = request.url.query.decode()
        if request.url.host == "auth.example" and request.url.path == "/token":
            return httpx.Response(307, headers={"Location": f"/v2/token?{query}"})
        if request.url.host == "auth.example":
            return httpx.Response(
                307, headers={"Location": f"https://tokens.example/token?{query}"}
            )
        return fake(request)

    httpx_mock.add_callback(handler, is_reusable=True)

    with pytest.raises(UpstreamError, match="credentials needed") as caught:
        run(client(), lambda c: c.get_manifest(NAME, "latest"))

    assert "(redirected to https://tokens.example/token)" in str(caught.value)
    assert caught.value.url == "https://tokens.example/token"
    hops = [r for r in seen if r.url.host in ("auth.example", "tokens.example")]
    assert [(r.url.host, r.url.path) for r in hops] == [
        ("auth.example", "/token"),
        ("auth.example", "/v2/token"),
        ("tokens.example", "/token"),
    ]
    assert hops[0].headers["authorization"] == basic()
    assert hops[1].headers["authorization"] == basic()
    assert "authorization" not in hops[2].headers


def test_registry_auth_on_a_plain_httpx_client_leaves_a_redirect_targets_challenge_alone(
    httpx_mock: HTTPXMock,
) -> None:
    """With httpx following redirects itself, a 401 from the host a redirect led to is not
    answered: no token is fetched for it, with or without the credentials."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.example":
            challenge = 'Bearer realm="https://cdn.example/token",service="cdn"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(307, headers={"Location": "https://cdn.example/blob"})

    httpx_mock.add_callback(handler, is_reusable=True)

    async def main() -> httpx.Response:
        auth = RegistryAuth(USER, PASSWORD)
        async with httpx.AsyncClient(auth=auth, follow_redirects=True) as http:
            return await http.get(f"{REGISTRY}/v2/{NAME}/blobs/{BLOB_DIGEST}")

    assert asyncio.run(main()).status_code == 401
    assert [r.url.path for r in httpx_mock.get_requests()] == [
        f"/v2/{NAME}/blobs/{BLOB_DIGEST}",
        "/blob",
    ]


# -- what errors and logs show


@pytest.mark.parametrize("status", [403, 404, 500])
def test_a_signed_redirect_that_fails_shows_neither_signature_nor_credential_but_its_host(
    httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    """A blob redirect to ``https://bucket.s3.example/blob?X-Amz-Signature=SECRET&
    X-Amz-Credential=AK`` that fails: the error's text, repr and ``url``, and every log line of
    ocimirror, name the host ``bucket.s3.example`` and hold neither SECRET nor AK."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "bucket.s3.example":
            return httpx.Response(status, text="<Error><Code>AccessDenied</Code></Error>")
        return httpx.Response(307, headers={"Location": SIGNED})

    httpx_mock.add_callback(handler, is_reusable=True)
    caplog.set_level(logging.DEBUG, logger="ocimirror")

    with pytest.raises((UpstreamError, BlobNotFound)) as caught:
        run(client(max_retries=1, backoff_base=0.0), download)

    text = shown(caught.value)
    logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("ocimirror"))
    assert "bucket.s3.example" in text and "bucket.s3.example/blob" in logs
    assert "AccessDenied" in text
    for where in (text, logs):
        assert SECRET not in where
        assert f"={ACCESS_KEY}" not in where and f"Credential={ACCESS_KEY}" not in where
        assert "X-Amz" not in where
    if status != 404:
        assert caught.value.url == "https://bucket.s3.example/blob"  # type: ignore[attr-defined]
    if status == 403:
        assert "bucket.s3.example refused the request" in str(caught.value)


def test_an_object_store_body_that_quotes_the_signature_is_shown_without_it(
    httpx_mock: HTTPXMock,
) -> None:
    """S3 quotes the access key and signature it refused; the error keeps the rest."""
    signature = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    access_key = "AKIAIOSFODNN7EXAMPLE"
    location = (
        f"https://bucket.s3.example/blob?X-Amz-Signature={signature}"
        f"&X-Amz-Credential={access_key}%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
    )
    body = (
        "<Error><Code>SignatureDoesNotMatch</Code>"
        f"<AWSAccessKeyId>{access_key}</AWSAccessKeyId>"
        f"<SignatureProvided>{signature}</SignatureProvided></Error>"
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "bucket.s3.example":
            return httpx.Response(403, text=body)
        return httpx.Response(307, headers={"Location": location})

    httpx_mock.add_callback(handler, is_reusable=True)

    with pytest.raises(UpstreamError) as caught:
        run(client(), download)

    text = shown(caught.value)
    assert "SignatureDoesNotMatch" in text
    assert signature not in text and access_key not in text


def test_a_network_failure_at_a_redirect_target_names_the_host_without_the_query(
    httpx_mock: HTTPXMock,
) -> None:
    """A connection error at the object store: the error says where it happened, by host and
    path, even when the exception's own text quotes the signed URL."""
    httpx_mock.add_response(
        url=f"{REGISTRY}/v2/{NAME}/blobs/{BLOB_DIGEST}",
        status_code=307,
        headers={"Location": SIGNED},
    )
    httpx_mock.add_exception(httpx.ConnectError(f"cannot reach {SIGNED}"))

    with pytest.raises(UpstreamError) as caught:
        run(client(), download)

    text = shown(caught.value)
    assert "ConnectError" in text
    assert "(at https://bucket.s3.example/blob)" in str(caught.value)
    assert SECRET not in text and "X-Amz" not in text


def test_credentials_in_a_bad_registry_url_do_not_show_in_the_error() -> None:
    """A registry URL that is refused is quoted without its userinfo."""
    with pytest.raises(Exception) as caught:
        RegistryClient(f"ftp://bob:{PASSWORD}@registry.example")
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (SIGNED, "https://bucket.s3.example/blob"),
        ("https://bob:hunter2@host.example:8443/v2/x?a=1#f", "https://host.example:8443/v2/x"),
        ("https://registry.example", "https://registry.example"),
        (httpx.URL("https://u:p@h.example/p?q=1"), "https://h.example/p"),
        ("http://user@h.example/a@b", "http://h.example/a@b"),
        ("not a url?token=1", "not a url"),
    ],
)
def test_a_redacted_url_keeps_scheme_host_port_and_path(url: str, expected: str) -> None:
    """Userinfo, query string and fragment go; whatever the input, it never raises."""
    assert redact_url(url) == expected


def test_redacted_text_redacts_every_url_in_it_and_the_query_values_it_repeats() -> None:
    """URLs in free text lose userinfo and query; with the request's URL, its query values
    (and each part of an S3 credential) are cut out wherever the text repeats them."""
    url = httpx.URL("https://s3.example/b?X-Amz-Credential=AKIAEXAMPLE/20240101/s3&sig=abcdef")
    text = f"GET {url} failed: key AKIAEXAMPLE, signature abcdef; see https://a.example/x"
    redacted = redact_text(text, url=url)
    assert redacted == (
        "GET https://s3.example/b failed: key ..., signature ...; see https://a.example/x"
    )
