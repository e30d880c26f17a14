"""The upstream registry client at the protocol level: each test scripts the HTTP exchanges.

Registries are played by pytest-httpx; blobs land in an in-memory ``FsspecBlobStore``. Waits
between retries are recorded instead of slept.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import attrs
import httpx
import pytest
from pytest_httpx import HTTPXMock

import ocimirror.upstream as upstream
from ocimirror.backends.blobs import FsspecBlobStore, open_blob_store
from ocimirror.core.digest import Digest
from ocimirror.core.manifest import MAX_MANIFEST_SIZE
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import (
    BlobNotFound,
    DigestMismatch,
    InvalidName,
    InvalidReference,
    ManifestNotFound,
    ManifestTooLarge,
    RepositoryNotFound,
    SizeMismatch,
    UpstreamError,
)
from ocimirror.remote import Remote
from ocimirror.upstream import (
    REQUEST_KINDS,
    FetchedManifest,
    ManifestRef,
    RateLimiter,
    RegistryClient,
    TransientError,
    normalize_upstream,
    parse_retry_after,
)

REGISTRY = "https://registry.example"
NAME = "team/app"
MANIFEST_URL = f"{REGISTRY}/v2/{NAME}/manifests"
TAGS_URL = f"{REGISTRY}/v2/{NAME}/tags/list"

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": MediaType.OCI_MANIFEST,
        "config": {"mediaType": MediaType.OCI_CONFIG, "digest": str(Digest.of(b"{}")), "size": 2},
        "layers": [],
    },
    indent=2,
).encode()
MANIFEST_DIGEST = Digest.of(MANIFEST)

BLOB = bytes(range(256)) * 400  # 102,400 bytes
BLOB_DIGEST = Digest.of(BLOB)
BLOB_URL = f"{REGISTRY}/v2/{NAME}/blobs/{BLOB_DIGEST}"

_T = TypeVar("_T")


class Sleeps(list[float]):
    """Records the waits a retry policy asks for, without waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(**options: Any) -> tuple[RegistryClient, Sleeps]:
    """A client of the test registry whose waits are recorded, not slept."""
    client = RegistryClient(REGISTRY, **options)
    sleeps = Sleeps()
    client.retry_policy = attrs.evolve(client.retry_policy, sleep=sleeps)
    return client, sleeps


def run(client: RegistryClient, call: Callable[[RegistryClient], Awaitable[_T]]) -> _T:
    """Run one call against ``client`` in a fresh event loop, then close the client."""

    async def main() -> _T:
        async with client:
            return await call(client)

    return asyncio.run(main())


def manifest_headers(raw: bytes = MANIFEST, **extra: str) -> dict[str, str]:
    """The headers a registry sends with a manifest."""
    return {
        "Content-Type": MediaType.OCI_MANIFEST,
        "Docker-Content-Digest": str(Digest.of(raw)),
        **extra,
    }


def memory_store() -> FsspecBlobStore:
    """A fresh in-memory blob store."""
    return open_blob_store(f"memory://upstream-test-{uuid.uuid4().hex}")


async def stored(store: FsspecBlobStore) -> list[Digest]:
    """Every digest in the store."""
    return [digest async for digest, _ in store.list_blobs()]


class BreakingStream(httpx.AsyncByteStream):
    """Sends some chunks, then fails the way a dropped connection does."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


class EndlessStream(httpx.AsyncByteStream):
    """Never ends; counts how much of it was read."""

    def __init__(self) -> None:
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.sent += 65536
            yield b" " * 65536


# -- names


@pytest.mark.parametrize(
    ("url", "name", "expected"),
    [
        ("https://docker.io", "alpine", ("https://registry-1.docker.io", "library/alpine")),
        ("https://index.docker.io/", "alpine", ("https://registry-1.docker.io", "library/alpine")),
        (
            "https://registry-1.docker.io",
            "bitnami/redis",
            ("https://registry-1.docker.io", "bitnami/redis"),
        ),
        (
            "https://registry.hub.docker.com",
            "library/ubuntu",
            ("https://registry-1.docker.io", "library/ubuntu"),
        ),
        ("https://DOCKER.IO", "nginx", ("https://registry-1.docker.io", "library/nginx")),
        ("docker.io", "nginx", ("https://registry-1.docker.io", "library/nginx")),
        ("https://ghcr.io/", "alpine", ("https://ghcr.io", "alpine")),
        ("http://localhost:5000", "foo", ("http://localhost:5000", "foo")),
        ("https://quay.io//", "org/app", ("https://quay.io", "org/app")),
        ("https://docker.io.example.com", "alpine", ("https://docker.io.example.com", "alpine")),
    ],
)
def test_docker_hub_names_are_normalised_and_others_left_alone(
    url: str, name: str, expected: tuple[str, str]
) -> None:
    """Docker Hub's aliases become registry-1.docker.io and one-part names get library/."""
    assert normalize_upstream(url, name) == expected


def test_a_client_of_docker_hub_asks_for_library_names(httpx_mock: HTTPXMock) -> None:
    """``list_tags("alpine")`` against docker.io asks registry-1.docker.io for library/alpine."""
    httpx_mock.add_response(
        url="https://registry-1.docker.io/v2/library/alpine/tags/list",
        json={"name": "library/alpine", "tags": ["3.20"]},
    )
    client = RegistryClient("https://docker.io")
    assert client.url == "https://registry-1.docker.io"
    assert run(client, lambda c: c.list_tags("alpine")) == ["3.20"]


@pytest.mark.parametrize("name", ["Team/App", "team//app", "", "team/app/"])
def test_an_invalid_repository_name_is_refused_before_any_request(
    httpx_mock: HTTPXMock, name: str
) -> None:
    """Malformed names raise InvalidName without touching the network."""
    with pytest.raises(InvalidName):
        run(RegistryClient(REGISTRY), lambda c: c.list_tags(name))
    assert httpx_mock.get_requests() == []


# -- tags


def test_tag_pages_are_followed_through_relative_and_absolute_links(
    httpx_mock: HTTPXMock,
) -> None:
    """``Link: <...>; rel="next"`` is followed whether relative or absolute, to the last page."""
    httpx_mock.add_response(
        url=TAGS_URL,
        json={"name": NAME, "tags": ["a", "b"]},
        headers={"Link": f'</v2/{NAME}/tags/list?n=2&last=b>; rel="next"'},
    )
    httpx_mock.add_response(
        url=f"{TAGS_URL}?n=2&last=b",
        json={"name": NAME, "tags": ["c", "d"]},
        headers={"Link": f'<{TAGS_URL}?n=2&last=d>; rel="next"'},
    )
    httpx_mock.add_response(url=f"{TAGS_URL}?n=2&last=d", json={"name": NAME, "tags": ["e"]})

    client, _ = make_client()
    assert run(client, lambda c: c.list_tags(NAME)) == ["a", "b", "c", "d", "e"]
    assert client.stats.requests["tags"] == 3


def test_without_links_full_pages_are_followed_with_n_and_last(httpx_mock: HTTPXMock) -> None:
    """With ``page_size`` and no Link header, a full page leads to ``?n=<size>&last=<tag>``."""
    httpx_mock.add_response(url=f"{TAGS_URL}?n=2", json={"name": NAME, "tags": ["a", "b"]})
    httpx_mock.add_response(url=f"{TAGS_URL}?n=2&last=b", json={"name": NAME, "tags": ["c", "d"]})
    httpx_mock.add_response(url=f"{TAGS_URL}?n=2&last=d", json={"name": NAME, "tags": []})

    assert run(make_client()[0], lambda c: c.list_tags(NAME, page_size=2)) == ["a", "b", "c", "d"]


def test_a_registry_that_ignores_n_is_not_asked_forever(httpx_mock: HTTPXMock) -> None:
    """A page that brings no new tags ends the listing (the registry ignored ``last``)."""
    httpx_mock.add_response(json={"name": NAME, "tags": ["a", "b"]}, is_reusable=True)

    assert run(make_client()[0], lambda c: c.list_tags(NAME, page_size=2)) == ["a", "b"]
    assert len(httpx_mock.get_requests()) == 2


def test_null_tags_mean_no_tags(httpx_mock: HTTPXMock) -> None:
    """``"tags": null`` (an empty repository on some registries) is an empty list."""
    httpx_mock.add_response(url=TAGS_URL, json={"name": NAME, "tags": None})
    assert run(make_client()[0], lambda c: c.list_tags(NAME)) == []


def test_a_link_loop_is_an_upstream_error(httpx_mock: HTTPXMock) -> None:
    """A next link back to a page already read raises instead of looping."""
    httpx_mock.add_response(
        url=TAGS_URL,
        json={"name": NAME, "tags": ["a"]},
        headers={"Link": f'<{TAGS_URL}>; rel="next"'},
    )
    with pytest.raises(UpstreamError, match="in a loop"):
        run(make_client()[0], lambda c: c.list_tags(NAME))


def test_a_missing_repository_is_repository_not_found(httpx_mock: HTTPXMock) -> None:
    """404 on the tag list raises RepositoryNotFound with the upstream's message."""
    httpx_mock.add_response(
        url=TAGS_URL,
        status_code=404,
        json={"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]},
    )
    with pytest.raises(RepositoryNotFound) as caught:
        run(make_client()[0], lambda c: c.list_tags(NAME))
    assert "upstream https://registry.example has no repository 'team/app'" in str(caught.value)
    assert "repository name not known" in str(caught.value)


def test_a_tag_list_that_is_not_json_is_an_upstream_error(httpx_mock: HTTPXMock) -> None:
    """A tag list page that is not the JSON the spec describes raises UpstreamError."""
    httpx_mock.add_response(url=TAGS_URL, text="<html>proxy login</html>")
    with pytest.raises(UpstreamError, match="not a JSON object"):
        run(make_client()[0], lambda c: c.list_tags(NAME))


# -- resolve


def test_resolve_asks_with_head_accepting_every_manifest_type(httpx_mock: HTTPXMock) -> None:
    """HEAD with an Accept of every manifest type; digest, type and size come from headers."""
    httpx_mock.add_response(
        method="HEAD",
        url=f"{MANIFEST_URL}/latest",
        headers=manifest_headers(**{"Content-Length": str(len(MANIFEST))}),
    )
    client, _ = make_client()

    ref = run(client, lambda c: c.resolve(NAME, "latest"))

    assert ref == ManifestRef(
        digest=MANIFEST_DIGEST, media_type=MediaType.OCI_MANIFEST, size=len(MANIFEST)
    )
    [request] = httpx_mock.get_requests()
    accepted = [t.strip() for t in request.headers["accept"].split(",")]
    assert accepted == list(MediaType.MANIFEST_TYPES)
    assert client.stats.requests["manifest_head"] == 1
    assert client.stats.requests["manifest_get"] == 0


@pytest.mark.parametrize(
    "head",
    [
        {"status_code": 200, "headers": {"Content-Type": MediaType.OCI_MANIFEST}},
        {"status_code": 405},
    ],
    ids=["no-digest-header", "head-not-allowed"],
)
def test_resolve_falls_back_to_get_when_head_says_too_little(
    httpx_mock: HTTPXMock, head: dict[str, Any]
) -> None:
    """Without Docker-Content-Digest (or with 405) the manifest is fetched and hashed."""
    httpx_mock.add_response(method="HEAD", url=f"{MANIFEST_URL}/latest", **head)
    httpx_mock.add_response(
        method="GET",
        url=f"{MANIFEST_URL}/latest",
        content=MANIFEST,
        headers={"Content-Type": MediaType.OCI_MANIFEST},
    )

    ref = run(make_client()[0], lambda c: c.resolve(NAME, "latest"))

    assert ref == ManifestRef(MANIFEST_DIGEST, MediaType.OCI_MANIFEST, len(MANIFEST))


def test_resolve_of_a_missing_tag_is_manifest_not_found(httpx_mock: HTTPXMock) -> None:
    """404 on HEAD raises ManifestNotFound naming the reference."""
    httpx_mock.add_response(method="HEAD", url=f"{MANIFEST_URL}/nope", status_code=404)
    with pytest.raises(ManifestNotFound, match="team/app:nope"):
        run(make_client()[0], lambda c: c.resolve(NAME, "nope"))


def test_a_malformed_reference_is_refused_before_any_request(httpx_mock: HTTPXMock) -> None:
    """A reference that is neither a tag nor a digest raises InvalidReference."""
    with pytest.raises(InvalidReference):
        run(make_client()[0], lambda c: c.resolve(NAME, "sha256:short"))
    assert httpx_mock.get_requests() == []


# -- manifests


def test_a_manifest_is_fetched_with_its_bytes_type_and_verified_digest(
    httpx_mock: HTTPXMock,
) -> None:
    """GET by digest returns the exact bytes, the media type and the digest asked for."""
    httpx_mock.add_response(
        url=f"{MANIFEST_URL}/{MANIFEST_DIGEST}",
        content=MANIFEST,
        headers=manifest_headers(**{"Content-Type": f"{MediaType.OCI_MANIFEST}; charset=utf-8"}),
    )
    client, _ = make_client()

    fetched = run(client, lambda c: c.get_manifest(NAME, MANIFEST_DIGEST))

    assert fetched == FetchedManifest(
        raw=MANIFEST, media_type=MediaType.OCI_MANIFEST, digest=MANIFEST_DIGEST
    )
    assert fetched.size == len(MANIFEST)
    assert client.stats.bytes_downloaded == len(MANIFEST)


def test_a_manifest_without_a_useful_content_type_gets_its_type_from_the_bytes(
    httpx_mock: HTTPXMock,
) -> None:
    """``Content-Type: application/json`` does not hide the manifest's own mediaType."""
    httpx_mock.add_response(
        url=f"{MANIFEST_URL}/latest", content=MANIFEST, headers={"Content-Type": "application/json"}
    )
    fetched = run(make_client()[0], lambda c: c.get_manifest(NAME, "latest"))
    assert fetched.media_type == MediaType.OCI_MANIFEST
    assert fetched.digest == MANIFEST_DIGEST


def test_a_sha512_docker_content_digest_is_checked_with_sha512(httpx_mock: HTTPXMock) -> None:
    """The upstream's digest header is verified with its own algorithm, and returned."""
    sha512 = Digest("sha512", hashlib.sha512(MANIFEST).hexdigest())
    httpx_mock.add_response(
        url=f"{MANIFEST_URL}/latest",
        content=MANIFEST,
        headers=manifest_headers(**{"Docker-Content-Digest": str(sha512)}),
    )
    fetched = run(make_client()[0], lambda c: c.get_manifest(NAME, "latest"))
    assert fetched.digest == sha512


def test_bytes_that_do_not_match_docker_content_digest_are_retried_then_refused(
    httpx_mock: HTTPXMock,
) -> None:
    """A body that does not hash to Docker-Content-Digest is fetched again, then refused."""
    httpx_mock.add_response(
        url=f"{MANIFEST_URL}/latest",
        content=MANIFEST,
        headers=manifest_headers(**{"Docker-Content-Digest": str(Digest.of(b"other"))}),
        is_reusable=True,
    )
    client, sleeps = make_client(max_retries=2)

    with pytest.raises(DigestMismatch, match="announced by the upstream"):
        run(client, lambda c: c.get_manifest(NAME, "latest"))
    assert len(httpx_mock.get_requests()) == 3
    assert len(sleeps) == 2
    assert client.stats.requests["retry"] == 2


def test_bytes_that_do_not_match_the_digest_asked_for_are_retried_then_refused(
    httpx_mock: HTTPXMock,
) -> None:
    """A body that does not hash to the requested digest is refused even without a header."""
    wanted = Digest.of(b"what we asked for")
    httpx_mock.add_response(
        url=f"{MANIFEST_URL}/{wanted}",
        content=MANIFEST,
        headers={"Content-Type": MediaType.OCI_MANIFEST},
        is_reusable=True,
    )
    with pytest.raises(DigestMismatch, match="was asked for"):
        run(make_client(max_retries=1)[0], lambda c: c.get_manifest(NAME, wanted))
    assert len(httpx_mock.get_requests()) == 2


def test_a_digest_mismatch_that_goes_away_on_retry_succeeds(httpx_mock: HTTPXMock) -> None:
    """A corrupted first answer followed by a good one gives the good manifest."""
    httpx_mock.add_response(
        url=f"{MANIFEST_URL}/latest", content=b"{}" + MANIFEST[2:], headers=manifest_headers()
    )
    httpx_mock.add_response(
        url=f"{MANIFEST_URL}/latest", content=MANIFEST, headers=manifest_headers()
    )
    fetched = run(
        make_client()[0], lambda c: c.get_manifest(NAME, "latest", expected=MANIFEST_DIGEST)
    )
    assert fetched.raw == MANIFEST


def test_an_announced_oversize_manifest_is_refused_without_reading_it(
    httpx_mock: HTTPXMock,
) -> None:
    """A Content-Length over the cap raises ManifestTooLarge at once, without retrying."""
    stream = EndlessStream()
    httpx_mock.add_response(
        url=f"{MANIFEST_URL}/latest",
        stream=stream,
        headers={"Content-Length": str(MAX_MANIFEST_SIZE + 1)},
    )
    with pytest.raises(ManifestTooLarge):
        run(make_client()[0], lambda c: c.get_manifest(NAME, "latest"))
    assert stream.sent == 0
    assert len(httpx_mock.get_requests()) == 1


def test_an_endless_manifest_is_cut_off_at_the_cap(httpx_mock: HTTPXMock) -> None:
    """A body without Content-Length stops being read just past 4 MiB: ManifestTooLarge."""
    stream = EndlessStream()
    httpx_mock.add_response(url=f"{MANIFEST_URL}/latest", stream=stream)
    with pytest.raises(ManifestTooLarge):
        run(make_client()[0], lambda c: c.get_manifest(NAME, "latest"))
    assert MAX_MANIFEST_SIZE < stream.sent <= MAX_MANIFEST_SIZE + 2 * 65536


def test_a_missing_manifest_is_manifest_not_found_with_the_upstream_message(
    httpx_mock: HTTPXMock,
) -> None:
    """404 on GET raises ManifestNotFound (a NotFound) carrying the upstream's message."""
    httpx_mock.add_response(
        url=f"{MANIFEST_URL}/gone",
        status_code=404,
        json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
    )
    with pytest.raises(ManifestNotFound) as caught:
        run(make_client()[0], lambda c: c.get_manifest(NAME, "gone"))
    assert "manifest unknown" in str(caught.value)
    assert isinstance(caught.value, LookupError)


# -- retries


def test_a_burst_of_server_errors_is_retried_with_growing_jittered_waits(
    httpx_mock: HTTPXMock,
) -> None:
    """500, 502 and 503 are retried with waits within base * 2**n, then the answer arrives."""
    for status in (500, 502, 503):
        httpx_mock.add_response(url=f"{MANIFEST_URL}/latest", status_code=status)
    httpx_mock.add_response(
        url=f"{MANIFEST_URL}/latest", content=MANIFEST, headers=manifest_headers()
    )
    client, sleeps = make_client(backoff_base=0.25)

    fetched = run(client, lambda c: c.get_manifest(NAME, "latest"))

    assert fetched.raw == MANIFEST
    assert len(sleeps) == 3
    for attempt, wait in enumerate(sleeps):
        assert 0 <= wait <= 0.25 * 2**attempt
    assert client.stats.requests["manifest_get"] == 4
    assert client.stats.requests["retry"] == 3


def test_server_errors_that_never_stop_raise_a_transient_error(httpx_mock: HTTPXMock) -> None:
    """After max_retries the last 503 is raised as TransientError (an UpstreamError)."""
    httpx_mock.add_response(url=f"{MANIFEST_URL}/latest", status_code=503, is_reusable=True)
    with pytest.raises(TransientError) as caught:
        run(make_client(max_retries=2)[0], lambda c: c.get_manifest(NAME, "latest"))
    assert caught.value.status_code == 503
    assert isinstance(caught.value, UpstreamError)
    assert len(httpx_mock.get_requests()) == 3


def test_429_waits_as_long_as_retry_after_says_capped_at_backoff_max(
    httpx_mock: HTTPXMock,
) -> None:
    """Retry-After in seconds is honoured; a longer one is cut to backoff_max."""
    httpx_mock.add_response(url=TAGS_URL, status_code=429, headers={"Retry-After": "7"})
    httpx_mock.add_response(url=TAGS_URL, status_code=429, headers={"Retry-After": "3600"})
    httpx_mock.add_response(url=TAGS_URL, json={"name": NAME, "tags": ["x"]})
    client, sleeps = make_client(backoff_max=30.0)

    assert run(client, lambda c: c.list_tags(NAME)) == ["x"]
    assert sleeps == [7.0, 30.0]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(
    value: str | None, seconds: float | None
) -> None:
    """Delay-seconds and HTTP-dates both give a wait; dates in the past give none."""
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == seconds


def test_connection_errors_are_retried_then_reported_as_upstream_errors(
    httpx_mock: HTTPXMock,
) -> None:
    """ConnectError is retried; when retries run out it becomes an UpstreamError with a cause."""
    httpx_mock.add_exception(httpx.ConnectError("connection refused"), is_reusable=True)
    client, sleeps = make_client(max_retries=2)
    with pytest.raises(UpstreamError, match="ConnectError: connection refused") as caught:
        run(client, lambda c: c.ping())
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert caught.value.status_code is None
    assert len(sleeps) == 2


def test_a_timeout_then_success_is_just_slower(httpx_mock: HTTPXMock) -> None:
    """A read timeout is retried like a broken connection."""
    httpx_mock.add_exception(httpx.ReadTimeout("slow"))
    httpx_mock.add_response(url=f"{REGISTRY}/v2/")
    client, sleeps = make_client()
    run(client, lambda c: c.ping())
    assert len(sleeps) == 1
    assert client.stats.requests["ping"] == 2


def test_other_client_errors_fail_at_once_with_the_oci_errors(httpx_mock: HTTPXMock) -> None:
    """A 400 is not retried; the UpstreamError has status, URL, OCI errors and their message."""
    errors = [{"code": "MANIFEST_INVALID", "message": "manifest invalid", "detail": {"x": 1}}]
    httpx_mock.add_response(url=f"{MANIFEST_URL}/latest", status_code=400, json={"errors": errors})
    client, sleeps = make_client()

    with pytest.raises(UpstreamError) as caught:
        run(client, lambda c: c.get_manifest(NAME, "latest"))

    error = caught.value
    assert error.status_code == 400
    assert error.errors == errors
    assert error.url == f"{MANIFEST_URL}/latest"
    assert "MANIFEST_INVALID: manifest invalid" in str(error)
    assert sleeps == []
    assert len(httpx_mock.get_requests()) == 1


def test_an_error_body_that_is_not_json_is_quoted_in_the_message(httpx_mock: HTTPXMock) -> None:
    """A plain-text error body shows up (shortened) in the message; errors stay empty."""
    httpx_mock.add_response(url=TAGS_URL, status_code=418, text="I'm a teapot\n" * 100)
    with pytest.raises(UpstreamError) as caught:
        run(make_client()[0], lambda c: c.list_tags(NAME))
    assert "418" in str(caught.value)
    assert "I'm a teapot" in str(caught.value)
    assert len(str(caught.value)) < 400
    assert caught.value.errors == []


def test_403_is_reported_as_refused_access(httpx_mock: HTTPXMock) -> None:
    """403 is an UpstreamError saying access was refused, with the registry's reason."""
    httpx_mock.add_response(
        url=TAGS_URL,
        status_code=403,
        json={
            "errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]
        },
    )
    with pytest.raises(UpstreamError) as caught:
        run(make_client()[0], lambda c: c.list_tags(NAME))
    assert caught.value.status_code == 403
    assert "refused anonymous access" in str(caught.value)
    assert "DENIED" in str(caught.value)


# -- blobs


def test_a_blob_streams_into_the_store_verified(httpx_mock: HTTPXMock) -> None:
    """A blob is downloaded into the store under its digest and counted in the stats."""
    httpx_mock.add_response(url=BLOB_URL, content=BLOB)
    store = memory_store()
    client, _ = make_client()

    async def main(c: RegistryClient) -> None:
        assert await c.download_blob(NAME, BLOB_DIGEST, store, size=len(BLOB)) == BLOB_DIGEST
        assert await store.read(BLOB_DIGEST) == BLOB

    run(client, main)
    assert client.stats.requests["blob"] == 1
    assert client.stats.bytes_downloaded == len(BLOB)
    [request] = httpx_mock.get_requests()
    assert "range" not in request.headers


@pytest.mark.parametrize("failure", ["short-body", "connection-drop"])
def test_a_broken_blob_download_resumes_with_a_range_request(
    httpx_mock: HTTPXMock, failure: str
) -> None:
    """A body that stops early is continued from where it stopped with ``Range: bytes=N-``."""
    cut = 40_000
    if failure == "short-body":
        httpx_mock.add_response(
            url=BLOB_URL, content=BLOB[:cut], headers={"Content-Length": str(len(BLOB))}
        )
    else:
        httpx_mock.add_response(url=BLOB_URL, stream=BreakingStream(BLOB[:cut]))
    httpx_mock.add_response(
        url=BLOB_URL,
        status_code=206,
        content=BLOB[cut:],
        headers={"Content-Range": f"bytes {cut}-{len(BLOB) - 1}/{len(BLOB)}"},
        match_headers={"Range": f"bytes={cut}-"},
    )
    store = memory_store()
    client, sleeps = make_client()

    async def main(c: RegistryClient) -> None:
        await c.download_blob(NAME, BLOB_DIGEST, store, size=len(BLOB))
        assert await store.read(BLOB_DIGEST) == BLOB

    run(client, main)
    assert len(sleeps) == 1
    assert client.stats.requests["blob"] == 2
    assert client.stats.requests["retry"] == 1
    assert client.stats.bytes_downloaded == len(BLOB)


def test_a_server_that_ignores_range_is_read_again_from_the_start(httpx_mock: HTTPXMock) -> None:
    """If the resumed request gets 200, the partial bytes are dropped and the blob restarts."""
    httpx_mock.add_response(url=BLOB_URL, stream=BreakingStream(BLOB[:1000]))
    httpx_mock.add_response(url=BLOB_URL, content=BLOB, match_headers={"Range": "bytes=1000-"})
    store = memory_store()

    async def main(c: RegistryClient) -> None:
        await c.download_blob(NAME, BLOB_DIGEST, store)
        assert await store.read(BLOB_DIGEST) == BLOB
        assert await store.cleanup_uploads(older_than=timedelta(0)) == 0

    run(make_client()[0], main)


def test_a_range_answer_from_the_wrong_offset_starts_over(httpx_mock: HTTPXMock) -> None:
    """A 206 whose Content-Range does not start where asked is not appended: start over."""
    httpx_mock.add_response(url=BLOB_URL, stream=BreakingStream(BLOB[:1000]))
    httpx_mock.add_response(
        url=BLOB_URL,
        status_code=206,
        content=BLOB[500:],
        headers={"Content-Range": f"bytes 500-{len(BLOB) - 1}/{len(BLOB)}"},
    )
    httpx_mock.add_response(url=BLOB_URL, content=BLOB)
    store = memory_store()

    async def main(c: RegistryClient) -> None:
        await c.download_blob(NAME, BLOB_DIGEST, store)
        assert await store.read(BLOB_DIGEST) == BLOB

    run(make_client()[0], main)
    assert "range" not in httpx_mock.get_requests()[-1].headers


def test_corrupted_blob_bytes_are_retried_then_refused_and_nothing_is_stored(
    httpx_mock: HTTPXMock,
) -> None:
    """Bytes that do not hash to the digest are fetched again; in the end DigestMismatch."""
    corrupt = b"X" + BLOB[1:]
    httpx_mock.add_response(url=BLOB_URL, content=corrupt, is_reusable=True)
    store = memory_store()
    client, sleeps = make_client(max_retries=2)

    async def main(c: RegistryClient) -> None:
        with pytest.raises(DigestMismatch):
            await c.download_blob(NAME, BLOB_DIGEST, store, size=len(BLOB))
        assert not await store.exists(BLOB_DIGEST)
        assert await stored(store) == []
        assert await store.cleanup_uploads(older_than=timedelta(0)) == 0

    run(client, main)
    assert len(httpx_mock.get_requests()) == 3
    assert len(sleeps) == 2


def test_a_blob_longer_than_announced_is_refused(httpx_mock: HTTPXMock) -> None:
    """More bytes than the size given raise SizeMismatch (after retries); nothing is stored."""
    httpx_mock.add_response(url=BLOB_URL, content=BLOB, is_reusable=True)
    store = memory_store()

    async def main(c: RegistryClient) -> None:
        with pytest.raises(SizeMismatch):
            await c.download_blob(NAME, BLOB_DIGEST, store, size=len(BLOB) - 1)
        assert await stored(store) == []

    run(make_client(max_retries=1)[0], main)
    assert len(httpx_mock.get_requests()) == 2


def test_a_missing_blob_is_blob_not_found(httpx_mock: HTTPXMock) -> None:
    """404 on a blob raises BlobNotFound at once; nothing is stored."""
    httpx_mock.add_response(
        url=BLOB_URL,
        status_code=404,
        json={"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry"}]},
    )
    store = memory_store()

    async def main(c: RegistryClient) -> None:
        with pytest.raises(BlobNotFound, match="blob unknown to registry"):
            await c.download_blob(NAME, BLOB_DIGEST, store)
        assert await stored(store) == []

    run(make_client()[0], main)


def test_a_redirected_blob_is_fetched_without_the_registry_credentials(
    httpx_mock: HTTPXMock,
) -> None:
    """The registry's Authorization goes to the registry, never to the CDN it redirects to."""
    cdn = f"https://cdn.example/blobs/{BLOB_DIGEST.hex}?signature=abc"
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(httpx.Request(request.method, request.url, headers=request.headers.copy()))
        if request.url.host == "cdn.example":
            return httpx.Response(200, content=BLOB)
        if request.headers.get("authorization") != "Basic YWxpY2U6cHc=":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(307, headers={"Location": cdn})

    httpx_mock.add_callback(handler, is_reusable=True)
    store = memory_store()

    async def main(c: RegistryClient) -> None:
        await c.download_blob(NAME, BLOB_DIGEST, store)
        assert await store.read(BLOB_DIGEST) == BLOB

    run(make_client(username="alice", password="pw")[0], main)
    assert [r.url.host for r in seen] == ["registry.example", "registry.example", "cdn.example"]
    assert seen[1].headers["authorization"] == "Basic YWxpY2U6cHc="
    assert "authorization" not in seen[2].headers


def test_blob_exists_gives_the_size_or_none(httpx_mock: HTTPXMock) -> None:
    """HEAD on a blob: its Content-Length when present upstream, None on 404."""
    missing = Digest.of(b"missing")
    httpx_mock.add_response(method="HEAD", url=BLOB_URL, headers={"Content-Length": str(len(BLOB))})
    httpx_mock.add_response(
        method="HEAD", url=f"{REGISTRY}/v2/{NAME}/blobs/{missing}", status_code=404
    )
    client, _ = make_client()

    async def main(c: RegistryClient) -> None:
        assert await c.blob_exists(NAME, BLOB_DIGEST) == len(BLOB)
        assert await c.blob_exists(NAME, missing) is None

    run(client, main)
    assert client.stats.requests["blob_head"] == 2


# -- the client itself


def test_stats_count_requests_by_kind_and_serialise_to_json(httpx_mock: HTTPXMock) -> None:
    """Every kind is counted; ``to_json`` gives plain dicts and ints."""
    httpx_mock.add_response(url=f"{REGISTRY}/v2/")
    httpx_mock.add_response(url=TAGS_URL, content=b'{"tags": ["1"]}')
    httpx_mock.add_response(url=f"{MANIFEST_URL}/1", status_code=500)
    httpx_mock.add_response(url=f"{MANIFEST_URL}/1", content=MANIFEST, headers=manifest_headers())
    client, _ = make_client()

    async def main(c: RegistryClient) -> None:
        await c.ping()
        await c.list_tags(NAME)
        await c.get_manifest(NAME, "1")

    run(client, main)
    data = client.stats.to_json()
    assert json.loads(json.dumps(data)) == data
    assert set(data["requests"]) == set(REQUEST_KINDS)
    assert data["requests"]["ping"] == 1
    assert data["requests"]["tags"] == 1
    assert data["requests"]["manifest_get"] == 2
    assert data["requests"]["retry"] == 1
    assert data["requests"]["token"] == 0
    assert data["bytes_downloaded"] == len(MANIFEST) + len(b'{"tags": ["1"]}')


def test_every_request_carries_the_user_agent_and_extra_headers(httpx_mock: HTTPXMock) -> None:
    """The user agent and the extra headers go with every request."""
    httpx_mock.add_response(
        url=f"{REGISTRY}/v2/",
        match_headers={"User-Agent": "mirror/9", "X-Tenant": "blue"},
    )
    client = RegistryClient(REGISTRY, user_agent="mirror/9", headers={"X-Tenant": "blue"})
    run(client, lambda c: c.ping())


def test_from_remote_takes_the_remotes_settings(httpx_mock: HTTPXMock) -> None:
    """URL, credentials, headers, proxy and retries come from the Remote; overrides win."""
    remote = Remote(
        name="hub",
        url="https://index.docker.io",
        upstream_name="library/alpine",
        username="alice",
        password="pw",
        proxy_url="http://proxy.example:3128",
        max_retries=5,
        headers={"X-Tenant": "blue"},
    )
    httpx_mock.add_response(
        url="https://registry-1.docker.io/v2/library/alpine/tags/list",
        proxy_url="http://proxy.example:3128/",
        match_headers={"X-Tenant": "blue"},
        status_code=401,
        headers={"WWW-Authenticate": 'Basic realm="hub"'},
    )
    httpx_mock.add_response(
        url="https://registry-1.docker.io/v2/library/alpine/tags/list",
        match_headers={"Authorization": "Basic YWxpY2U6cHc="},
        json={"tags": ["3.20"]},
    )
    client = RegistryClient.from_remote(remote, max_retries=1)

    assert client.url == "https://registry-1.docker.io"
    assert client.retry_policy.max_retries == 1
    assert RegistryClient.from_remote(remote).retry_policy.max_retries == 5
    assert run(client, lambda c: c.list_tags("alpine")) == ["3.20"]


def test_credentials_in_the_url_are_used_and_removed_from_it() -> None:
    """``https://user:pass@host`` gives the credentials and a URL without them (or /v2)."""
    client = RegistryClient("https://alice:pw@registry.example/")
    assert client.url == REGISTRY
    assert RegistryClient(f"{REGISTRY}/v2/").url == REGISTRY
    assert "pw" not in repr(client)
    assert "alice" in repr(client)


def test_the_client_closes_only_the_httpx_client_it_made() -> None:
    """A caller's httpx client stays open; the client's own is closed; closed means closed."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = RegistryClient(REGISTRY, client=http)
            await client.ping()
            await client.aclose()
            assert not http.is_closed

        own = RegistryClient(REGISTRY, transport=httpx.MockTransport(handler))
        async with own:
            await own.ping()
        with pytest.raises(RuntimeError, match="closed"):
            await own.ping()

    asyncio.run(main())


def test_the_constructor_does_no_io() -> None:
    """Building a client opens nothing, even with a CA bundle path that does not exist."""
    client = RegistryClient(REGISTRY, verify="/nonexistent/ca.pem", proxy="http://p:1")
    assert client._client is None
    asyncio.run(client.aclose())


def test_rate_limited_requests_are_spaced_evenly() -> None:
    """At 2 requests a second, three requests at once wait 0, 0.5 and 1 second."""
    now = [100.0]
    waits = Sleeps()
    limiter = RateLimiter(2.0, clock=lambda: now[0], sleep=waits)

    async def main() -> None:
        for _ in range(3):
            await limiter.acquire()
        now[0] += 10
        await limiter.acquire()

    asyncio.run(main())
    assert waits == [0.5, 1.0]


def test_a_rate_limited_client_still_gets_its_answers(httpx_mock: HTTPXMock) -> None:
    """A client with a rate limit sends every request (just not faster than allowed)."""
    httpx_mock.add_response(url=f"{REGISTRY}/v2/", is_reusable=True)

    async def main(c: RegistryClient) -> None:
        await asyncio.gather(*(c.ping() for _ in range(3)))

    run(make_client(rate_limit=1000.0)[0], main)
    assert len(httpx_mock.get_requests()) == 3


def test_the_package_exports_its_public_api_each_name_with_a_docstring() -> None:
    """Every name in ``ocimirror.upstream.__all__`` exists; classes, functions and their public
    methods and properties are documented."""
    assert len(upstream.__all__) == len(set(upstream.__all__))
    for name in upstream.__all__:
        value = getattr(upstream, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        assert inspect.getdoc(value), f"{name} has no docstring"
        if not inspect.isclass(value):
            continue
        for attr, member in vars(value).items():
            member = getattr(member, "__func__", member)  # classmethod, staticmethod
            if attr.startswith("_") or not (
                inspect.isfunction(member) or isinstance(member, property)
            ):
                continue
            assert inspect.getdoc(member), f"{name}.{attr} has no docstring"


@pytest.mark.parametrize("status", [403, 500])
def test_an_error_from_a_signed_redirect_target_does_not_show_its_signature(
    httpx_mock: HTTPXMock, status: int
) -> None:
    """A CDN or object store answering an error after a redirect: the error names the URL
    without its query string (the signature) and without userinfo."""
    cdn = f"https://user:hunter2@cdn.example/blobs/{BLOB_DIGEST.hex}?X-Amz-Signature=s3cr3t"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.example":
            return httpx.Response(status, content=b"nope")
        return httpx.Response(307, headers={"Location": cdn})

    httpx_mock.add_callback(handler, is_reusable=True)
    store = memory_store()

    async def main(c: RegistryClient) -> None:
        with pytest.raises(UpstreamError) as caught:
            await c.download_blob(NAME, BLOB_DIGEST, store)
        shown = f"{caught.value} {caught.value.url} {caught.value!r}"
        assert "cdn.example/blobs/" in shown
        assert "s3cr3t" not in shown and "X-Amz-Signature" not in shown
        assert "hunter2" not in shown

    client, _ = make_client(max_retries=0)
    run(client, main)
