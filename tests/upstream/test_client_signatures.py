"""The upstream client's signature requests: the ``/v2/`` signature announcement, the Docker
signature API extension, the OCI referrers API, and ``get_optional`` (what reads a lookaside
sigstore, usually on another host than the registry's).

Registries and sigstores are played by pytest-httpx; waits between retries are recorded
instead of slept.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from pytest_httpx import HTTPXMock
from test_client import NAME, REGISTRY, make_client, run

from ocimirror.core.digest import Digest
from ocimirror.core.manifest import MAX_MANIFEST_SIZE
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import InvalidDigest, InvalidName, UpstreamError
from ocimirror.upstream import REQUEST_KINDS, RegistryClient, TransientError
from ocimirror.upstream.client import MAX_SIGNATURE_SIZE

DIGEST = Digest.of(b"the manifest that was signed")
SIGNATURES_URL = f"{REGISTRY}/extensions/v2/{NAME}/signatures/{DIGEST}"
REFERRERS_URL = f"{REGISTRY}/v2/{NAME}/referrers/{DIGEST}"
#: A lookaside sigstore on another host than the registry's.
SIGSTORE = "https://sigs.example/store"
LOOKASIDE_URL = f"{SIGSTORE}/{NAME}@sha256={DIGEST.hex}/signature-1"

SIGNATURE = b"\xa3\x01binary gpg signed message\x00\xff"
EXTENSION_BODY = json.dumps(
    {
        "signatures": [
            {
                "schemaVersion": 2,
                "type": "atomic",
                "name": f"{DIGEST}@{'0' * 32}",
                "content": base64.b64encode(SIGNATURE).decode(),
            }
        ]
    }
).encode()
REFERRERS_BODY = json.dumps(
    {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX, "manifests": []}
).encode()

ALICE_BASIC = "Basic " + base64.b64encode(b"alice:pw").decode()


def copy(request: httpx.Request) -> httpx.Request:
    """A request as it was sent (its headers copied: httpx reuses the object)."""
    return httpx.Request(request.method, request.url, headers=request.headers.copy())


# -- the /v2/ announcement


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Registry-Supports-Signatures": "1"}, True),
        ({"x-registry-supports-signatures": " 1 "}, True),
        ({"X-Registry-Supports-Signatures": "0"}, False),
        ({"X-Registry-Supports-Signatures": "true"}, False),
        ({}, False),
    ],
)
def test_supports_signatures_reads_the_v2_header(
    httpx_mock: HTTPXMock, headers: dict[str, str], expected: bool
) -> None:
    """Only ``X-Registry-Supports-Signatures: 1`` on ``/v2/`` announces the extension."""
    httpx_mock.add_response(url=f"{REGISTRY}/v2/", json={}, headers=headers)
    client, _ = make_client()
    assert run(client, lambda c: c.supports_signatures()) is expected
    assert client.stats.requests["ping"] == 1
    assert client.stats.requests["signature"] == 0


def test_ping_returns_the_v2_headers(httpx_mock: HTTPXMock) -> None:
    """``ping`` gives the answer's headers, to read what else the registry supports."""
    httpx_mock.add_response(
        url=f"{REGISTRY}/v2/",
        json={},
        headers={"Docker-Distribution-Api-Version": "registry/2.0", "X-Other": "yes"},
    )
    headers = run(make_client()[0], lambda c: c.ping())
    assert isinstance(headers, httpx.Headers)
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    assert headers["x-other"] == "yes"


def test_supports_signatures_raises_when_v2_fails(httpx_mock: HTTPXMock) -> None:
    """A registry that refuses ``/v2/`` is an error, not "no signature support"."""
    httpx_mock.add_response(url=f"{REGISTRY}/v2/", status_code=403, json={"errors": []})
    with pytest.raises(UpstreamError) as caught:
        run(make_client()[0], lambda c: c.supports_signatures())
    assert caught.value.status_code == 403


# -- the signature API extension


def test_signatures_returns_the_extension_body_as_sent(httpx_mock: HTTPXMock) -> None:
    """GET /extensions/v2/<name>/signatures/<digest>: the bytes, counted as a signature."""
    httpx_mock.add_response(method="GET", url=SIGNATURES_URL, content=EXTENSION_BODY)
    client, _ = make_client()

    assert run(client, lambda c: c.signatures(NAME, DIGEST)) == EXTENSION_BODY
    assert client.stats.requests["signature"] == 1
    assert client.stats.requests["retry"] == 0
    assert client.stats.bytes_downloaded == len(EXTENSION_BODY)
    [request] = httpx_mock.get_requests()
    assert request.method == "GET"
    assert request.url == SIGNATURES_URL


def test_signatures_take_the_digest_as_a_string_too(httpx_mock: HTTPXMock) -> None:
    """A digest given as text asks for the same URL."""
    httpx_mock.add_response(url=SIGNATURES_URL, content=b'{"signatures":[]}')
    assert run(make_client()[0], lambda c: c.signatures(NAME, str(DIGEST))) == (
        b'{"signatures":[]}'
    )


def test_signatures_of_a_registry_without_them_are_none(httpx_mock: HTTPXMock) -> None:
    """A 404 (no extension, or no such manifest) is None, not an error, and is not retried."""
    httpx_mock.add_response(url=SIGNATURES_URL, status_code=404, json={"errors": []})
    client, sleeps = make_client()

    assert run(client, lambda c: c.signatures(NAME, DIGEST)) is None
    assert client.stats.requests["signature"] == 1
    assert sleeps == []
    assert client.stats.bytes_downloaded == 0


def test_signatures_server_errors_are_retried_then_raised_as_transient(
    httpx_mock: HTTPXMock,
) -> None:
    """A 500 that never stops: max_retries retries, then a TransientError naming the status."""
    httpx_mock.add_response(
        url=SIGNATURES_URL,
        status_code=500,
        json={"errors": [{"code": "UNKNOWN", "message": "disk on fire"}]},
        is_reusable=True,
    )
    client, sleeps = make_client(max_retries=2)

    with pytest.raises(TransientError) as caught:
        run(client, lambda c: c.signatures(NAME, DIGEST))

    error = caught.value
    assert isinstance(error, UpstreamError)
    assert error.status_code == 500
    assert error.url == SIGNATURES_URL
    assert "disk on fire" in str(error)
    assert len(httpx_mock.get_requests()) == 3
    assert len(sleeps) == 2
    assert client.stats.requests["signature"] == 3
    assert client.stats.requests["retry"] == 2


def test_a_signature_server_error_that_goes_away_is_just_slower(httpx_mock: HTTPXMock) -> None:
    """503 then 200: the body arrives; one retry is counted."""
    httpx_mock.add_response(url=SIGNATURES_URL, status_code=503)
    httpx_mock.add_response(url=SIGNATURES_URL, content=EXTENSION_BODY)
    client, sleeps = make_client()

    assert run(client, lambda c: c.signatures(NAME, DIGEST)) == EXTENSION_BODY
    assert len(sleeps) == 1
    assert client.stats.requests["signature"] == 2
    assert client.stats.requests["retry"] == 1


def test_signatures_refused_access_is_an_upstream_error_at_once(httpx_mock: HTTPXMock) -> None:
    """A 403 is not "no signatures": it raises, unretried."""
    httpx_mock.add_response(
        url=SIGNATURES_URL,
        status_code=403,
        json={"errors": [{"code": "DENIED", "message": "requested access is denied"}]},
    )
    client, sleeps = make_client()
    with pytest.raises(UpstreamError) as caught:
        run(client, lambda c: c.signatures(NAME, DIGEST))
    assert not isinstance(caught.value, TransientError)
    assert caught.value.status_code == 403
    assert "DENIED" in str(caught.value)
    assert sleeps == []


def test_signatures_over_the_signature_limit_are_refused(httpx_mock: HTTPXMock) -> None:
    """The extension's answer is read up to MAX_SIGNATURE_SIZE, no further."""
    httpx_mock.add_response(url=SIGNATURES_URL, content=b" " * (MAX_SIGNATURE_SIZE + 1))
    client, sleeps = make_client()
    with pytest.raises(UpstreamError, match=f"over the limit of {MAX_SIGNATURE_SIZE} bytes"):
        run(client, lambda c: c.signatures(NAME, DIGEST))
    assert sleeps == []
    assert client.stats.requests["signature"] == 1


def test_signatures_of_docker_hub_ask_for_library_names(httpx_mock: HTTPXMock) -> None:
    """Docker Hub's one-part names get library/, as for every other request."""
    httpx_mock.add_response(
        url=f"https://registry-1.docker.io/extensions/v2/library/alpine/signatures/{DIGEST}",
        status_code=404,
    )
    assert (
        run(RegistryClient("https://docker.io"), lambda c: c.signatures("alpine", DIGEST)) is None
    )


@pytest.mark.parametrize("name", ["Team/App", "team//app", "../escape", ""])
def test_a_bad_name_is_refused_before_any_request(httpx_mock: HTTPXMock, name: str) -> None:
    """signatures() and referrers() validate the repository name without touching the network."""
    for call in (
        lambda c: c.signatures(name, DIGEST),
        lambda c: c.referrers(name, DIGEST),
    ):
        with pytest.raises(InvalidName):
            run(make_client()[0], call)
    assert httpx_mock.get_requests() == []


@pytest.mark.parametrize("digest", ["sha256:abc", "latest", "sha256:" + "g" * 64, "../x"])
def test_a_bad_digest_is_refused_before_any_request(httpx_mock: HTTPXMock, digest: str) -> None:
    """Only a digest names a manifest here; anything else is InvalidDigest, unsent."""
    for call in (
        lambda c: c.signatures(NAME, digest),
        lambda c: c.referrers(NAME, digest),
    ):
        with pytest.raises(InvalidDigest):
            run(make_client()[0], call)
    assert httpx_mock.get_requests() == []


def test_signatures_answer_the_registrys_bearer_challenge(httpx_mock: HTTPXMock) -> None:
    """A registry behind token auth: the token is asked for with the challenge's scope and
    the signatures are fetched with it."""
    realm = "https://auth.example/token"
    scope = f"repository:{NAME}:pull"
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(copy(request))
        if request.url.host == "auth.example":
            return httpx.Response(200, json={"token": "tok-1", "expires_in": 300})
        if request.headers.get("authorization") != "Bearer tok-1":
            challenge = f'Bearer realm="{realm}",service="registry.example",scope="{scope}"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(200, content=EXTENSION_BODY)

    httpx_mock.add_callback(handler, is_reusable=True)
    client, _ = make_client(username="alice", password="pw")

    assert run(client, lambda c: c.signatures(NAME, DIGEST)) == EXTENSION_BODY
    token_requests = [r for r in seen if r.url.host == "auth.example"]
    assert len(token_requests) == 1
    assert token_requests[0].url.params.get_list("scope") == [scope]
    assert token_requests[0].headers["authorization"] == ALICE_BASIC
    assert seen[-1].headers["authorization"] == "Bearer tok-1"
    assert client.stats.requests["token"] == 1
    assert client.stats.requests["signature"] == 1


# -- the referrers API


def test_referrers_returns_the_index_as_sent(httpx_mock: HTTPXMock) -> None:
    """GET /v2/<name>/referrers/<digest>: the bytes, counted under referrers."""
    httpx_mock.add_response(
        method="GET",
        url=REFERRERS_URL,
        content=REFERRERS_BODY,
        headers={"Content-Type": MediaType.OCI_INDEX},
    )
    client, _ = make_client()

    assert run(client, lambda c: c.referrers(NAME, DIGEST)) == REFERRERS_BODY
    assert client.stats.requests["referrers"] == 1
    assert client.stats.requests["signature"] == 0
    assert client.stats.bytes_downloaded == len(REFERRERS_BODY)


def test_referrers_of_a_registry_without_the_api_are_none(httpx_mock: HTTPXMock) -> None:
    """404 means "use the referrers tag schema": None, one request."""
    httpx_mock.add_response(url=REFERRERS_URL, status_code=404)
    client, sleeps = make_client()
    assert run(client, lambda c: c.referrers(NAME, DIGEST)) is None
    assert client.stats.requests["referrers"] == 1
    assert sleeps == []


def test_referrers_server_errors_are_retried_then_raised(httpx_mock: HTTPXMock) -> None:
    """502 every time: retried max_retries times, counted under referrers and retry."""
    httpx_mock.add_response(url=REFERRERS_URL, status_code=502, is_reusable=True)
    client, _ = make_client(max_retries=1)
    with pytest.raises(TransientError) as caught:
        run(client, lambda c: c.referrers(NAME, DIGEST))
    assert caught.value.status_code == 502
    assert client.stats.requests["referrers"] == 2
    assert client.stats.requests["retry"] == 1


def test_a_referrers_index_is_capped_like_a_manifest(httpx_mock: HTTPXMock) -> None:
    """A referrers index is read up to MAX_MANIFEST_SIZE: one at the cap is read whole, one
    byte over it is refused."""
    httpx_mock.add_response(url=REFERRERS_URL, content=b" " * MAX_MANIFEST_SIZE)
    httpx_mock.add_response(url=REFERRERS_URL, content=b" " * (MAX_MANIFEST_SIZE + 1))
    client, _ = make_client()

    async def main(c: RegistryClient) -> None:
        assert len(await c.referrers(NAME, DIGEST) or b"") == MAX_MANIFEST_SIZE
        with pytest.raises(UpstreamError, match=f"over the limit of {MAX_MANIFEST_SIZE} bytes"):
            await c.referrers(NAME, DIGEST)

    run(client, main)
    assert client.stats.requests["referrers"] == 2


# -- get_optional: the plumbing, and what goes to another host


def test_get_optional_refuses_a_body_over_the_limit_without_retrying(
    httpx_mock: HTTPXMock,
) -> None:
    """One byte over ``limit`` is an UpstreamError naming the limit; at the limit it is fine."""
    httpx_mock.add_response(url=LOOKASIDE_URL, content=b"x" * 11)
    httpx_mock.add_response(url=LOOKASIDE_URL, content=b"x" * 10)
    client, sleeps = make_client()

    async def main(c: RegistryClient) -> None:
        with pytest.raises(UpstreamError) as caught:
            await c.get_optional("signature", LOOKASIDE_URL, limit=10)
        assert not isinstance(caught.value, TransientError)
        assert "over the limit of 10 bytes" in str(caught.value)
        assert caught.value.url == LOOKASIDE_URL
        assert await c.get_optional("signature", LOOKASIDE_URL, limit=10) == b"x" * 10

    run(client, main)
    assert sleeps == []
    assert client.stats.requests["signature"] == 2
    assert client.stats.bytes_downloaded == 10


def test_get_optional_counts_under_the_kind_it_is_given(httpx_mock: HTTPXMock) -> None:
    """Requests are counted by the kind asked for; every kind stays in the JSON."""
    httpx_mock.add_response(url=LOOKASIDE_URL, content=SIGNATURE)
    httpx_mock.add_response(url=f"{SIGSTORE}/index", status_code=404)
    httpx_mock.add_response(url=SIGNATURES_URL, status_code=404)
    client, _ = make_client()

    async def main(c: RegistryClient) -> None:
        assert await c.get_optional("signature", LOOKASIDE_URL) == SIGNATURE
        assert await c.get_optional("referrers", f"{SIGSTORE}/index") is None
        assert await c.signatures(NAME, DIGEST) is None

    run(client, main)
    data = client.stats.to_json()
    assert set(data["requests"]) == set(REQUEST_KINDS)
    assert {"signature", "referrers"} <= set(REQUEST_KINDS)
    assert data["requests"]["signature"] == 2
    assert data["requests"]["referrers"] == 1
    assert data["requests"]["manifest_get"] == 0
    assert data["bytes_downloaded"] == len(SIGNATURE)


def test_the_registrys_basic_credentials_never_go_to_a_lookaside_host(
    httpx_mock: HTTPXMock,
) -> None:
    """After the registry asked for Basic credentials (and got them), a sigstore on another
    host, or on the registry's host at another port, gets no Authorization."""
    other_port = f"https://registry.example:8443/sigs/{NAME}@sha256={DIGEST.hex}/signature-1"
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(copy(request))
        if request.url.host == "sigs.example" or request.url.port == 8443:
            if "authorization" in request.headers:
                return httpx.Response(418)
            return httpx.Response(200, content=SIGNATURE)
        if request.headers.get("authorization") != ALICE_BASIC:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(200, content=EXTENSION_BODY)

    httpx_mock.add_callback(handler, is_reusable=True)
    client, _ = make_client(username="alice", password="pw")

    async def main(c: RegistryClient) -> None:
        assert await c.signatures(NAME, DIGEST) == EXTENSION_BODY
        assert await c.get_optional("signature", LOOKASIDE_URL) == SIGNATURE
        assert await c.get_optional("signature", other_port) == SIGNATURE
        # The registry still gets them, first time (its origin asked for Basic).
        assert await c.signatures(NAME, DIGEST) == EXTENSION_BODY

    run(client, main)
    hosts = [(r.url.host, r.url.port) for r in seen]
    assert hosts == [
        ("registry.example", None),
        ("registry.example", None),
        ("sigs.example", None),
        ("registry.example", 8443),
        ("registry.example", None),
    ]
    assert seen[1].headers["authorization"] == ALICE_BASIC
    assert seen[4].headers["authorization"] == ALICE_BASIC
    for request in (seen[2], seen[3]):
        assert "authorization" not in request.headers
        assert "alice" not in str(request.url)


def test_the_remotes_extra_headers_never_go_to_a_lookaside_host(httpx_mock: HTTPXMock) -> None:
    """An Authorization or API key given in ``headers=`` goes to the registry only; the
    sigstore gets the User-Agent and nothing else of them."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(copy(request))
        if request.url.host == "sigs.example":
            return httpx.Response(200, content=SIGNATURE)
        return httpx.Response(200, content=EXTENSION_BODY)

    httpx_mock.add_callback(handler, is_reusable=True)
    client, _ = make_client(
        headers={"Authorization": "Bearer api-secret", "X-Api-Key": "key-secret"},
        user_agent="mirror/9",
    )

    async def main(c: RegistryClient) -> None:
        assert await c.signatures(NAME, DIGEST) == EXTENSION_BODY
        assert await c.get_optional("signature", LOOKASIDE_URL) == SIGNATURE

    run(client, main)
    registry, sigstore = seen
    assert registry.headers["authorization"] == "Bearer api-secret"
    assert registry.headers["x-api-key"] == "key-secret"
    assert sigstore.url == LOOKASIDE_URL
    assert "authorization" not in sigstore.headers
    assert "x-api-key" not in sigstore.headers
    assert sigstore.headers["user-agent"] == "mirror/9"
    assert "secret" not in repr(list(sigstore.headers.items()))


def test_a_lookaside_host_asking_for_credentials_gets_none(httpx_mock: HTTPXMock) -> None:
    """A sigstore's 401 Basic challenge is not answered with the registry's credentials:
    it is raised, after one request."""
    httpx_mock.add_response(
        url=LOOKASIDE_URL, status_code=401, headers={"WWW-Authenticate": 'Basic realm="sigs"'}
    )
    client, _ = make_client(username="alice", password="pw")
    with pytest.raises(UpstreamError) as caught:
        run(client, lambda c: c.get_optional("signature", LOOKASIDE_URL))
    assert caught.value.status_code == 401
    [request] = httpx_mock.get_requests()
    assert "authorization" not in request.headers
    assert "pw" not in str(caught.value)


def test_a_lookaside_url_password_is_not_in_the_error(httpx_mock: HTTPXMock) -> None:
    """Credentials in a sigstore URL's userinfo do not show in the error it fails with."""
    url = f"https://reader:sig-Pa55-3e1f@sigs.example/store/{NAME}@sha256={DIGEST.hex}/signature-1"
    httpx_mock.add_response(status_code=500, is_reusable=True)
    client, _ = make_client(max_retries=0)
    with pytest.raises(TransientError) as caught:
        run(client, lambda c: c.get_optional("signature", url))
    assert "sig-Pa55-3e1f" not in str(caught.value)
    assert "sig-Pa55-3e1f" not in (caught.value.url or "")
    assert caught.value.status_code == 500
