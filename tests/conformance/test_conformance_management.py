"""Conformance, Content Management workflow: deleting tags, manifests and blobs."""

from __future__ import annotations

import httpx
from fixtures.distribution import (
    blob_bytes,
    digest_of,
    new_name,
    push_blob,
    push_image,
    put_manifest,
)
from fixtures.served import oci_error

from ocimirror.testing import artifact, random_image

IMAGE = random_image(seed="management/image", layers=1)
DIGEST = str(IMAGE.digest)


def _tagged(client: httpx.Client, *tags: str) -> str:
    """A fresh repository holding :data:`IMAGE` under ``tags``."""
    name = new_name()
    push_image(client, name, IMAGE, tags[0])
    for tag in tags[1:]:
        assert put_manifest(client, name, tag, IMAGE.manifest).status_code == 201
    return name


def _tags(client: httpx.Client, name: str) -> list[str]:
    response = client.get(f"/v2/{name}/tags/list")
    assert response.status_code == 200
    tags: list[str] = response.json()["tags"]
    return tags


def test_delete_of_a_tag_is_202_and_removes_only_that_tag(client: httpx.Client) -> None:
    name = _tagged(client, "t1", "t2")
    assert client.delete(f"/v2/{name}/manifests/t1").status_code == 202
    gone = client.get(f"/v2/{name}/manifests/t1")
    assert gone.status_code == 404
    oci_error(gone, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{name}/manifests/t2").content == IMAGE.manifest
    assert client.get(f"/v2/{name}/manifests/{DIGEST}").status_code == 200
    assert _tags(client, name) == ["t2"]


def test_delete_of_a_manifest_by_digest_is_202_then_it_and_every_tag_of_it_are_404(
    client: httpx.Client,
) -> None:
    name = _tagged(client, "t1", "t2")
    assert client.delete(f"/v2/{name}/manifests/{DIGEST}").status_code == 202
    for reference in (DIGEST, "t1", "t2"):
        response = client.get(f"/v2/{name}/manifests/{reference}")
        assert response.status_code == 404, reference
        oci_error(response, "MANIFEST_UNKNOWN")
        assert client.head(f"/v2/{name}/manifests/{reference}").status_code == 404
    assert _tags(client, name) == []


def test_a_deleted_manifest_can_be_pushed_again(client: httpx.Client) -> None:
    name = _tagged(client, "again")
    assert client.delete(f"/v2/{name}/manifests/{DIGEST}").status_code == 202
    assert put_manifest(client, name, "again", IMAGE.manifest).status_code == 201
    assert client.get(f"/v2/{name}/manifests/again").content == IMAGE.manifest


def test_deleting_a_manifest_in_one_repository_leaves_it_in_another(client: httpx.Client) -> None:
    first, second = _tagged(client, "shared"), _tagged(client, "shared")
    assert client.delete(f"/v2/{first}/manifests/{DIGEST}").status_code == 202
    assert client.get(f"/v2/{first}/manifests/shared").status_code == 404
    assert client.get(f"/v2/{second}/manifests/shared").content == IMAGE.manifest


def test_delete_of_a_manifest_or_tag_that_is_not_there_is_404(client: httpx.Client) -> None:
    name = _tagged(client, "present")
    for reference in (digest_of(b"management: never pushed"), "absent"):
        response = client.delete(f"/v2/{name}/manifests/{reference}")
        assert response.status_code == 404, reference
        oci_error(response, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{name}/manifests/present").status_code == 200


def test_delete_in_a_repository_that_is_not_there_is_404(client: httpx.Client) -> None:
    name = "conformance/not-a-repository"
    for path in (f"/v2/{name}/manifests/{DIGEST}", f"/v2/{name}/blobs/{IMAGE.config.digest}"):
        response = client.delete(path)
        assert response.status_code == 404, path
        oci_error(response, "NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN")


def test_delete_of_a_blob_is_202_then_it_is_404(client: httpx.Client) -> None:
    name = new_name()
    digest = push_blob(client, name, blob_bytes(f"management/blob/{name}"))
    assert client.delete(f"/v2/{name}/blobs/{digest}").status_code == 202
    response = client.get(f"/v2/{name}/blobs/{digest}")
    assert response.status_code == 404
    oci_error(response, "BLOB_UNKNOWN")
    assert client.head(f"/v2/{name}/blobs/{digest}").status_code == 404


def test_delete_of_a_blob_that_is_not_there_is_404_blob_unknown(client: httpx.Client) -> None:
    name = new_name()
    push_blob(client, name, blob_bytes(f"management/other/{name}"))
    response = client.delete(f"/v2/{name}/blobs/{digest_of(b'management: never pushed')}")
    assert response.status_code == 404
    oci_error(response, "BLOB_UNKNOWN")


def test_deleting_a_blob_in_one_repository_leaves_it_in_another(client: httpx.Client) -> None:
    first, second = new_name(), new_name()
    data = blob_bytes(f"management/shared/{first}")
    digest = push_blob(client, first, data)
    push_blob(client, second, data)
    assert client.delete(f"/v2/{first}/blobs/{digest}").status_code == 202
    assert client.get(f"/v2/{first}/blobs/{digest}").status_code == 404
    kept = client.get(f"/v2/{second}/blobs/{digest}")
    assert (kept.status_code, kept.content) == (200, data)


def test_a_deleted_referrer_leaves_the_referrers_list(client: httpx.Client) -> None:
    name = _tagged(client, "subject")
    referrer = artifact(IMAGE, payload=b'{"management":1}')
    for blob in referrer.blobs():
        push_blob(client, name, blob.data)
    put = put_manifest(client, name, str(referrer.digest), referrer.manifest)
    assert put.status_code == 201
    before = client.get(f"/v2/{name}/referrers/{DIGEST}").json()["manifests"]
    assert [entry["digest"] for entry in before] == [str(referrer.digest)]
    assert client.delete(f"/v2/{name}/manifests/{referrer.digest}").status_code == 202
    after = client.get(f"/v2/{name}/referrers/{DIGEST}")
    assert after.status_code == 200
    assert after.json()["manifests"] == []
