"""Conformance, Push workflow: blob uploads (monolithic, chunked, streamed), cross-repository
mounts, and manifests by tag and by digest.

Every test pushes to a fresh repository name, which the push creates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import pytest
from fixtures.distribution import (
    EMPTY_JSON,
    INDEX,
    MANIFEST,
    OCTETS,
    blob_bytes,
    digest_of,
    image_manifest,
    location,
    new_name,
    push_blob,
    put_manifest,
    start_upload,
    with_digest,
)
from fixtures.served import error_body, oci_error

from ocimirror.testing import Blob, Image, Index, artifact, random_image, random_index

# -- blob uploads ------------------------------------------------------------------------------

BLOBS = {
    "4KiB": blob_bytes("push/4KiB", 4096),
    "empty-json": b"{}",
    "empty": b"",
}


def _upload_id(url: httpx.URL) -> str:
    return url.path.rstrip("/").rsplit("/", 1)[-1]


def _assert_blob(client: httpx.Client, name: str, data: bytes) -> None:
    digest = digest_of(data)
    head = client.head(f"/v2/{name}/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))
    assert head.headers["docker-content-digest"] == digest
    response = client.get(f"/v2/{name}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == data


def _assert_no_blob(client: httpx.Client, name: str, digest: str) -> None:
    response = client.get(f"/v2/{name}/blobs/{digest}")
    assert response.status_code == 404, (digest, response.status_code)


def test_post_opens_an_upload_202_with_its_location_id_and_range(client: httpx.Client) -> None:
    name = new_name()
    response = client.post(f"/v2/{name}/blobs/uploads/", headers={"Content-Length": "0"})
    assert response.status_code == 202
    url = location(response)
    assert url.path.startswith(f"/v2/{name}/blobs/uploads/")
    assert _upload_id(url)
    assert response.headers["docker-upload-uuid"] == _upload_id(url)
    assert response.headers["range"] == "0-0"  # Docker's way of saying "nothing yet"


@pytest.mark.parametrize("data", BLOBS.values(), ids=BLOBS.keys())
def test_post_then_put_with_the_digest_and_body_stores_the_blob_201(
    client: httpx.Client, data: bytes
) -> None:
    name = new_name()
    digest = digest_of(data)
    upload = start_upload(client, name)
    response = client.put(with_digest(upload, digest), content=data, headers=OCTETS)
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == digest
    pulled = client.get(location(response))
    assert (pulled.status_code, pulled.content) == (200, data)
    _assert_blob(client, name, data)


def test_a_single_post_with_the_digest_and_body_stores_the_blob_201(client: httpx.Client) -> None:
    # The spec makes single-POST uploads optional (a registry may answer 202 and take the blob
    # with a PUT); ocimirror offers them.
    name = new_name()
    data = blob_bytes("push/single-post-201")
    digest = digest_of(data)
    response = client.post(
        f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data, headers=OCTETS
    )
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == digest
    _assert_blob(client, name, data)


def _chunk_size(response: httpx.Response) -> int:
    # Three chunks of 1000 bytes, or of the registry's minimum if it has one.
    minimum = response.headers.get("oci-chunk-min-length")
    return max(1000, int(minimum)) if minimum else 1000


@dataclass(frozen=True)
class Chunked:
    """An upload opened in a fresh repository, and a blob to send it in three chunks."""

    name: str
    url: httpx.URL
    data: bytes
    #: The chunk size: the last chunk is 5 bytes shorter.
    size: int


@pytest.fixture
def chunked(client: httpx.Client) -> Chunked:
    """An upload opened in a fresh repository, and a blob of three chunks."""
    name = new_name()
    response = client.post(f"/v2/{name}/blobs/uploads/", headers={"Content-Length": "0"})
    assert response.status_code == 202
    size = _chunk_size(response)
    return Chunked(name, location(response), blob_bytes(f"push/chunked/{name}", 3 * size - 5), size)


def _chunk(
    client: httpx.Client, url: httpx.URL, data: bytes, start: int, end: int
) -> httpx.Response:
    return client.patch(
        url,
        content=data[start:end],
        headers={**OCTETS, "Content-Range": f"{start}-{end - 1}"},
    )


def test_chunks_in_order_then_put_store_the_blob(client: httpx.Client, chunked: Chunked) -> None:
    name, url, data, size = chunked.name, chunked.url, chunked.data, chunked.size
    for start in range(0, len(data), size):
        end = min(start + size, len(data))
        response = _chunk(client, url, data, start, end)
        assert response.status_code == 202, (start, response.content[:300])
        assert response.headers["range"] == f"0-{end - 1}"
        url = location(response)
    response = client.put(with_digest(url, digest_of(data)), headers={"Content-Length": "0"})
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == digest_of(data)
    _assert_blob(client, name, data)


def test_the_last_chunk_may_come_with_the_closing_put(
    client: httpx.Client, chunked: Chunked
) -> None:
    name, url, data, size = chunked.name, chunked.url, chunked.data, chunked.size
    response = _chunk(client, url, data, 0, 2 * size)
    assert response.status_code == 202
    response = client.put(
        with_digest(location(response), digest_of(data)),
        content=data[2 * size :],
        headers={**OCTETS, "Content-Range": f"{2 * size}-{len(data) - 1}"},
    )
    assert response.status_code == 201
    _assert_blob(client, name, data)


def test_a_first_chunk_that_does_not_start_at_0_is_416(
    client: httpx.Client, chunked: Chunked
) -> None:
    url, data, size = chunked.url, chunked.data, chunked.size
    response = _chunk(client, url, data, size, 2 * size)
    assert response.status_code == 416
    error_body(response)


def test_a_repeated_chunk_is_416_and_the_upload_keeps_its_range(
    client: httpx.Client, chunked: Chunked
) -> None:
    name, url, data, size = chunked.name, chunked.url, chunked.data, chunked.size
    first = _chunk(client, url, data, 0, size)
    assert first.status_code == 202
    again = _chunk(client, url, data, 0, size)
    assert again.status_code == 416
    error_body(again)
    status = client.get(url)
    assert status.status_code == 204
    assert status.headers["range"] == f"0-{size - 1}"
    rest = _chunk(client, location(status), data, size, len(data))
    assert rest.status_code == 202
    assert rest.headers["range"] == f"0-{len(data) - 1}"
    done = client.put(with_digest(location(rest), digest_of(data)))
    assert done.status_code == 201
    _assert_blob(client, name, data)


def test_a_closing_put_with_an_out_of_order_chunk_is_416(
    client: httpx.Client, chunked: Chunked
) -> None:
    url, data, size = chunked.url, chunked.data, chunked.size
    first = _chunk(client, url, data, 0, size)
    assert first.status_code == 202
    response = client.put(
        with_digest(location(first), digest_of(data)),
        content=data[2 * size :],
        headers={**OCTETS, "Content-Range": f"{2 * size}-{len(data) - 1}"},
    )
    assert response.status_code == 416
    error_body(response)


def test_get_on_an_upload_is_204_with_its_location_and_range(
    client: httpx.Client, chunked: Chunked
) -> None:
    url, data, size = chunked.url, chunked.data, chunked.size
    assert _chunk(client, url, data, 0, size).status_code == 202
    response = client.get(url)
    assert response.status_code == 204
    assert response.headers["range"] == f"0-{size - 1}"
    assert location(response).path.startswith(url.path.rsplit("/", 1)[0])


STREAMS = {
    "with-content-length": lambda data: data,
    "chunked-transfer-encoding": lambda data: iter([data[:700], data[700:]]),
}


@pytest.mark.parametrize("body", STREAMS.values(), ids=STREAMS.keys())
def test_a_streamed_patch_without_content_range_then_put_stores_the_blob(
    client: httpx.Client, body: object
) -> None:
    name = new_name()
    data = blob_bytes(f"push/stream/{name}", 2000)
    upload = start_upload(client, name)
    response = client.patch(upload, content=body(data), headers=OCTETS)  # type: ignore[operator]
    assert response.status_code == 202
    assert response.headers["range"] == f"0-{len(data) - 1}"
    done = client.put(with_digest(location(response), digest_of(data)))
    assert done.status_code == 201
    _assert_blob(client, name, data)


def test_delete_cancels_an_upload_204_and_it_is_gone(client: httpx.Client) -> None:
    name = new_name()
    data = blob_bytes("push/cancelled")
    upload = start_upload(client, name)
    assert _chunk(client, upload, data, 0, len(data)).status_code == 202
    assert client.delete(upload).status_code == 204
    status = client.get(upload)
    assert status.status_code == 404
    oci_error(status, "BLOB_UPLOAD_UNKNOWN")
    finish = client.put(with_digest(upload, digest_of(data)))
    assert finish.status_code == 404
    oci_error(finish, "BLOB_UPLOAD_UNKNOWN")
    _assert_no_blob(client, name, digest_of(data))


def _wrong_digest_post_put(
    client: httpx.Client, name: str, data: bytes, claim: str
) -> httpx.Response:
    upload = start_upload(client, name)
    return client.put(with_digest(upload, claim), content=data, headers=OCTETS)


def _wrong_digest_single_post(
    client: httpx.Client, name: str, data: bytes, claim: str
) -> httpx.Response:
    return client.post(
        f"/v2/{name}/blobs/uploads/", params={"digest": claim}, content=data, headers=OCTETS
    )


def _wrong_digest_chunked(
    client: httpx.Client, name: str, data: bytes, claim: str
) -> httpx.Response:
    upload = start_upload(client, name)
    response = _chunk(client, upload, data, 0, len(data))
    assert response.status_code == 202
    return client.put(with_digest(location(response), claim))


def _wrong_digest_streamed(
    client: httpx.Client, name: str, data: bytes, claim: str
) -> httpx.Response:
    upload = start_upload(client, name)
    response = client.patch(upload, content=data, headers=OCTETS)
    assert response.status_code == 202
    return client.put(with_digest(location(response), claim))


WRONG_DIGEST = {
    "post-then-put": _wrong_digest_post_put,
    "single-post": _wrong_digest_single_post,
    "chunked": _wrong_digest_chunked,
    "streamed": _wrong_digest_streamed,
}


@pytest.mark.parametrize("upload", WRONG_DIGEST.values(), ids=WRONG_DIGEST.keys())
def test_an_upload_closed_with_another_blobs_digest_is_400_digest_invalid_and_stores_nothing(
    client: httpx.Client, upload: object
) -> None:
    name = new_name()
    data = blob_bytes(f"push/wrong-digest/{name}")
    claim = digest_of(data + b"oh no")
    response = upload(client, name, data, claim)  # type: ignore[operator]
    assert response.status_code == 400
    oci_error(response, "DIGEST_INVALID")
    _assert_no_blob(client, name, claim)
    _assert_no_blob(client, name, digest_of(data))


@pytest.mark.parametrize(
    "claim",
    ["sha256:baddigeststring", "sha256:" + "A" * 64, "sha256:" + "0" * 63, "md5:" + "0" * 32],
    ids=["not-hex", "uppercase", "short", "unsupported-algorithm"],
)
def test_closing_an_upload_with_a_malformed_digest_is_400(client: httpx.Client, claim: str) -> None:
    name = new_name()
    data = blob_bytes(f"push/bad-digest/{claim}")
    response = _wrong_digest_post_put(client, name, data, claim)
    assert response.status_code == 400
    oci_error(response, "DIGEST_INVALID", "UNSUPPORTED")
    _assert_no_blob(client, name, digest_of(data))


# -- cross-repository mounts -------------------------------------------------------------------


def test_mount_from_a_repository_that_has_the_blob_is_201(client: httpx.Client) -> None:
    source, target = new_name(), new_name()
    data = blob_bytes(f"push/mount/{source}")
    digest = push_blob(client, source, data)
    response = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert response.status_code == 201
    assert location(response).path == f"/v2/{target}/blobs/{digest}"
    assert response.headers["docker-content-digest"] == digest
    _assert_blob(client, target, data)


def test_mount_of_a_blob_the_source_does_not_have_opens_an_upload_202(
    client: httpx.Client,
) -> None:
    source, target = new_name(), new_name()
    push_blob(client, source, blob_bytes(f"push/mount-source/{source}"))
    data = blob_bytes(f"push/mount-missing/{target}")
    digest = digest_of(data)
    response = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})
    assert response.status_code == 202
    upload = location(response)
    assert upload.path.startswith(f"/v2/{target}/blobs/uploads/")
    _assert_no_blob(client, target, digest)
    finished = client.put(with_digest(upload, digest), content=data, headers=OCTETS)
    assert finished.status_code == 201
    _assert_blob(client, target, data)


@pytest.mark.parametrize(
    "params",
    [
        {"mount": digest_of(b"push/mount: no such blob")},
        {"mount": digest_of(b"push/mount: no such blob"), "from": "conformance/no-such-repo"},
    ],
    ids=["without-from", "from-a-repository-that-is-not-there"],
)
def test_mount_of_an_unknown_blob_opens_an_upload_202(
    client: httpx.Client, params: dict[str, str]
) -> None:
    name = new_name()
    response = client.post(f"/v2/{name}/blobs/uploads/", params=params)
    assert response.status_code == 202
    assert location(response).path.startswith(f"/v2/{name}/blobs/uploads/")


# -- manifests ---------------------------------------------------------------------------------

PUSHED: dict[str, Image | Index] = {
    "oci-image": random_image(seed="push/oci-image"),
    "oci-index": random_index(seed="push/oci-index"),
    "docker-image": random_image(seed="push/docker-image", docker=True),
    "docker-list": random_index(seed="push/docker-list", docker=True),
}


def _push_contents(client: httpx.Client, name: str, image: Image | Index) -> None:
    """Everything ``image`` refers to: its blobs and, for an index, its children."""
    for blob in image.blobs():
        push_blob(client, name, blob.data)
    if isinstance(image, Index):
        for child in image.manifests()[:-1]:
            response = put_manifest(
                client, name, str(child.digest), child.manifest, child.media_type
            )
            assert response.status_code == 201


def _assert_manifest(client: httpx.Client, name: str, reference: str, image: Image | Index) -> None:
    accept = {"Accept": image.media_type}
    response = client.get(f"/v2/{name}/manifests/{reference}", headers=accept)
    assert response.status_code == 200
    assert response.content == image.manifest
    assert response.headers["content-type"] == image.media_type
    assert response.headers["docker-content-digest"] == str(image.digest)
    head = client.head(f"/v2/{name}/manifests/{reference}", headers=accept)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(image.size)


@pytest.mark.parametrize("image", PUSHED.values(), ids=PUSHED.keys())
def test_put_manifest_by_tag_is_201_and_it_pulls_back_by_tag_and_digest(
    client: httpx.Client, image: Image | Index
) -> None:
    name = new_name()
    _push_contents(client, name, image)
    assert client.get(f"/v2/{name}/manifests/v1").status_code == 404
    response = put_manifest(client, name, "v1", image.manifest, image.media_type)
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == str(image.digest)
    assert client.get(location(response)).content == image.manifest
    _assert_manifest(client, name, "v1", image)
    _assert_manifest(client, name, str(image.digest), image)
    for blob in image.blobs():
        _assert_blob(client, name, blob.data)


@pytest.mark.parametrize("image", PUSHED.values(), ids=PUSHED.keys())
def test_put_manifest_by_digest_is_201_and_it_pulls_back(
    client: httpx.Client, image: Image | Index
) -> None:
    name = new_name()
    _push_contents(client, name, image)
    response = put_manifest(client, name, str(image.digest), image.manifest, image.media_type)
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == str(image.digest)
    assert location(response).path == f"/v2/{name}/manifests/{image.digest}"
    _assert_manifest(client, name, str(image.digest), image)


def test_a_manifest_is_stored_in_the_exact_bytes_pushed(client: httpx.Client) -> None:
    name = new_name()
    config = Blob("application/vnd.oci.image.config.v1+json", b'{"architecture":"amd64"}')
    layer = Blob("application/vnd.oci.image.layer.v1.tar", blob_bytes("push/exact-layer"))
    push_blob(client, name, config.data)
    push_blob(client, name, layer.data)
    # Not the canonical form: indented, keys in an unusual order, a trailing newline.
    document = {
        "layers": [layer.descriptor()],
        "config": config.descriptor(),
        "mediaType": MANIFEST,
        "schemaVersion": 2,
    }
    data = (json.dumps(document, indent=3) + "\n").encode()
    response = put_manifest(client, name, "exact", data)
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == digest_of(data)
    pulled = client.get(f"/v2/{name}/manifests/{digest_of(data)}")
    assert pulled.content == data


def test_a_manifest_with_no_layers_is_accepted(client: httpx.Client) -> None:
    name = new_name()
    push_blob(client, name, EMPTY_JSON.data)
    data = image_manifest(EMPTY_JSON, [], artifactType="application/vnd.example.nothing")
    response = put_manifest(client, name, "no-layers", data)
    assert response.status_code == 201
    assert client.get(f"/v2/{name}/manifests/no-layers").content == data


def test_a_tag_pushed_again_moves_to_the_new_manifest(client: httpx.Client) -> None:
    name = new_name()
    first, second = random_image(seed="push/move/1"), random_image(seed="push/move/2")
    for image in (first, second):
        _push_contents(client, name, image)
        assert put_manifest(client, name, "latest", image.manifest).status_code == 201
    _assert_manifest(client, name, "latest", second)
    _assert_manifest(client, name, str(first.digest), first)


def _unknown_layer() -> bytes:
    config = Blob("application/vnd.oci.image.config.v1+json", b'{"architecture":"arm64"}')
    missing = Blob("application/vnd.oci.image.layer.v1.tar", blob_bytes("push/never-pushed"))
    return image_manifest(config, [missing])


def _unknown_config() -> bytes:
    config = Blob("application/vnd.oci.image.config.v1+json", b'{"never":"pushed"}')
    return image_manifest(config, [])


def _unknown_child() -> bytes:
    child = random_image(seed="push/never-pushed-child")
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [child.descriptor()]}
    return json.dumps(index).encode()


UNKNOWN_REFERENCES = {
    "layer": (_unknown_layer, MANIFEST),
    "config": (_unknown_config, MANIFEST),
    "index-child": (_unknown_child, INDEX),
}


@pytest.mark.parametrize(
    ("body", "media_type"), UNKNOWN_REFERENCES.values(), ids=UNKNOWN_REFERENCES.keys()
)
def test_a_manifest_referring_to_content_not_pushed_is_400_and_not_stored(
    client: httpx.Client, body: object, media_type: str
) -> None:
    name = new_name()
    push_blob(client, name, b'{"architecture":"arm64"}')
    data: bytes = body()  # type: ignore[operator]
    response = put_manifest(client, name, "broken", data, media_type)
    assert response.status_code == 400
    oci_error(response, "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID")
    assert client.get(f"/v2/{name}/manifests/broken").status_code == 404
    assert client.get(f"/v2/{name}/manifests/{digest_of(data)}").status_code == 404


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"[]", json.dumps({"schemaVersion": 2, "mediaType": MANIFEST}).encode()],
    ids=["not-json", "not-an-object", "no-config"],
)
def test_a_manifest_that_is_not_valid_is_400_manifest_invalid(
    client: httpx.Client, data: bytes
) -> None:
    name = new_name()
    response = put_manifest(client, name, "invalid", data)
    assert response.status_code == 400
    oci_error(response, "MANIFEST_INVALID")
    assert client.get(f"/v2/{name}/manifests/invalid").status_code == 404


@pytest.mark.parametrize(
    "reference",
    [digest_of(b"push: some other manifest"), "sha256:baddigeststring"],
    ids=["another-manifests-digest", "malformed-digest"],
)
def test_put_manifest_by_a_digest_that_is_not_its_own_is_400(
    client: httpx.Client, reference: str
) -> None:
    name = new_name()
    image = random_image(seed="push/wrong-reference")
    _push_contents(client, name, image)
    response = put_manifest(client, name, reference, image.manifest)
    assert response.status_code == 400
    oci_error(response, "DIGEST_INVALID", "MANIFEST_INVALID")
    assert client.get(f"/v2/{name}/manifests/{image.digest}").status_code == 404


def test_a_manifest_with_a_subject_not_yet_pushed_is_201_with_oci_subject(
    client: httpx.Client,
) -> None:
    name = new_name()
    subject = random_image(seed="push/absent-subject")
    referrer = artifact(subject, payload=b'{"sbom":true}')
    for blob in referrer.blobs():
        push_blob(client, name, blob.data)
    response = put_manifest(client, name, str(referrer.digest), referrer.manifest)
    assert response.status_code == 201
    assert response.headers["oci-subject"] == str(subject.digest)
    _assert_manifest(client, name, str(referrer.digest), referrer)
