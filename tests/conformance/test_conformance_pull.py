"""Conformance, Pull workflow: manifests and blobs come back exactly as stored.

The content is put in place before the server starts, as an administrator would (a layout
imported into a repository, served privately at ``conformance/pull``), so this workflow holds
on its own; the Push workflow pulls back what it pushed.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fixtures.distribution import digest_of
from fixtures.served import Seed, error_body, oci_error

from ocimirror import AsyncRegistry
from ocimirror.testing import Blob, Image, Index, random_image, random_index, write_layout

NAME = "conformance/pull"
IMAGES: dict[str, Image | Index] = {
    "v1": random_image(seed="conformance/pull/v1", layer_size=4096),
    "multi": random_index(seed="conformance/pull/multi"),
    "docker": random_image(seed="conformance/pull/docker", docker=True),
    "dlist": random_index(seed="conformance/pull/dlist", docker=True),
}
V1 = IMAGES["v1"]
assert isinstance(V1, Image)
LAYER = V1.layers[0]
ACCEPT = {
    "Accept": ", ".join(
        [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ]
    )
}
MISSING = digest_of(b"conformance/pull: never stored")


async def _fill(registry: AsyncRegistry, tmp: Path) -> None:
    write_layout(tmp / "pull-layout", IMAGES)
    repository = await registry.create_repository("pull")
    await repository.import_layout(tmp / "pull-layout")
    await registry.create_distribution("pull", base_path=NAME, repository="pull", private=True)


@pytest.fixture(scope="module")
def seed() -> Seed:
    """The Pull workflow's content: :data:`IMAGES`, tagged, at :data:`NAME`."""
    return _fill


def _every_manifest() -> list[tuple[str, Image | Index]]:
    by_tag = [(tag, image) for tag, image in IMAGES.items()]
    by_digest = {str(m.digest): m for image in IMAGES.values() for m in image.manifests()}
    return by_tag + list(by_digest.items())


def _every_blob() -> list[Blob]:
    return list({blob.digest: blob for i in IMAGES.values() for blob in i.blobs()}.values())


MANIFESTS = _every_manifest()
MANIFEST_IDS = [f"{ref[:19]}-{image.media_type.rsplit('.', 2)[-2]}" for ref, image in MANIFESTS]


def test_the_base_endpoint_answers_200(client: httpx.Client) -> None:
    assert client.get("/v2/").status_code == 200


@pytest.mark.parametrize(("reference", "image"), MANIFESTS, ids=MANIFEST_IDS)
def test_get_manifest_returns_the_exact_bytes_with_its_type_and_digest(
    client: httpx.Client, reference: str, image: Image | Index
) -> None:
    response = client.get(f"/v2/{NAME}/manifests/{reference}", headers=ACCEPT)
    assert response.status_code == 200
    assert response.content == image.manifest
    assert response.headers["content-type"] == image.media_type
    assert response.headers["docker-content-digest"] == str(image.digest)


@pytest.mark.parametrize(("reference", "image"), MANIFESTS, ids=MANIFEST_IDS)
def test_head_manifest_returns_its_digest_and_length_and_no_body(
    client: httpx.Client, reference: str, image: Image | Index
) -> None:
    response = client.head(f"/v2/{NAME}/manifests/{reference}", headers=ACCEPT)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["docker-content-digest"] == str(image.digest)
    assert response.headers["content-length"] == str(image.size)
    assert response.headers["content-type"] == image.media_type


@pytest.mark.parametrize("reference", ["no-such-tag", MISSING], ids=["by-tag", "by-digest"])
def test_a_manifest_that_is_not_there_is_404_manifest_unknown(
    client: httpx.Client, reference: str
) -> None:
    response = client.get(f"/v2/{NAME}/manifests/{reference}", headers=ACCEPT)
    assert response.status_code == 404
    oci_error(response, "MANIFEST_UNKNOWN")
    head = client.head(f"/v2/{NAME}/manifests/{reference}", headers=ACCEPT)
    assert (head.status_code, head.content) == (404, b"")


def test_a_repository_that_is_not_there_is_404(client: httpx.Client) -> None:
    response = client.get("/v2/conformance/not-a-repository/manifests/v1", headers=ACCEPT)
    assert response.status_code == 404
    oci_error(response, "NAME_UNKNOWN", "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("blob", _every_blob(), ids=lambda b: b.digest.short)
def test_get_blob_returns_its_bytes_and_digest(client: httpx.Client, blob: Blob) -> None:
    response = client.get(f"/v2/{NAME}/blobs/{blob.digest}")
    assert response.status_code == 200
    assert response.content == blob.data
    assert response.headers["docker-content-digest"] == str(blob.digest)


@pytest.mark.parametrize("blob", _every_blob(), ids=lambda b: b.digest.short)
def test_head_blob_returns_its_digest_and_length_and_no_body(
    client: httpx.Client, blob: Blob
) -> None:
    response = client.head(f"/v2/{NAME}/blobs/{blob.digest}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["docker-content-digest"] == str(blob.digest)
    assert response.headers["content-length"] == str(blob.size)


def test_a_blob_that_is_not_there_is_404_blob_unknown(client: httpx.Client) -> None:
    response = client.get(f"/v2/{NAME}/blobs/{MISSING}")
    assert response.status_code == 404
    oci_error(response, "BLOB_UNKNOWN")
    head = client.head(f"/v2/{NAME}/blobs/{MISSING}")
    assert (head.status_code, head.content) == (404, b"")


SIZE = LAYER.size
# (Range header, the bytes it selects); each is answered 206 with a Content-Range.
PARTIAL = [
    ("bytes=500-1499", (500, 1500)),
    ("bytes=500-", (500, SIZE)),
    ("bytes=-500", (SIZE - 500, SIZE)),
    ("bytes=0-0", (0, 1)),
    (f"bytes={SIZE - 100}-{SIZE + 5000}", (SIZE - 100, SIZE)),  # past the end: cut at the end
]


@pytest.mark.parametrize(("header", "span"), PARTIAL, ids=[h for h, _ in PARTIAL])
def test_get_blob_with_a_range_returns_206_and_those_bytes(
    client: httpx.Client, header: str, span: tuple[int, int]
) -> None:
    start, end = span
    response = client.get(f"/v2/{NAME}/blobs/{LAYER.digest}", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == LAYER.data[start:end]
    assert response.headers["content-length"] == str(end - start)
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{SIZE}"


@pytest.mark.parametrize("header", ["bytes=500-0", f"bytes={SIZE}-{SIZE + 100}"])
def test_get_blob_with_a_range_it_cannot_satisfy_is_416(client: httpx.Client, header: str) -> None:
    response = client.get(f"/v2/{NAME}/blobs/{LAYER.digest}", headers={"Range": header})
    assert response.status_code == 416
    error_body(response)


def test_a_malformed_digest_reference_is_400_or_404_with_an_oci_error_body(
    client: httpx.Client,
) -> None:
    response = client.get(f"/v2/{NAME}/manifests/sha256:totallywrong", headers=ACCEPT)
    assert response.status_code in (400, 404)
    oci_error(response)
