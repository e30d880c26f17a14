"""Push through the registry API: push repositories, read-only mirrors, uploads that outlive a
process, version coalescing, deletes and orphan cleanup (issue 8, section 1).

The OCI conformance workflows are in ``tests/conformance``; these are ocimirror's own rules.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocimirror import AsyncRegistry, Remote
from ocimirror.asgi import create_app
from ocimirror.backends.blobs import BlobLister
from ocimirror.backends.metadata import Coalesce
from ocimirror.server.access import OpenAccess

pytestmark = pytest.mark.anyio

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


Client = httpx.AsyncClient


@pytest.fixture
async def world(
    database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[AsyncRegistry, Callable[[], Client]]]:
    """A registry over each metadata backend and a way to get clients of its API (no auth)."""
    registry = await AsyncRegistry.open(
        database_url=database_url, storage_url=(tmp_path / "blobs").as_uri()
    )
    clients: list[Client] = []

    def client() -> Client:
        app = create_app(registry, auth=OpenAccess(), cache_ttl=0)
        made = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r")
        clients.append(made)
        return made

    try:
        yield registry, client
    finally:
        for made in clients:
            await made.aclose()
        await registry.close()


async def push_blob(client: Client, name: str, data: bytes) -> str:
    digest = digest_of(data)
    response = await client.post(
        f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data
    )
    assert response.status_code == 201, response.text
    return digest


def image_manifest(config: bytes, layers: list[bytes], **extra: Any) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest_of(layer),
                    "size": len(layer),
                }
                for layer in layers
            ],
            **extra,
        }
    ).encode()


async def push_image(client: Client, name: str, tag: str, layers: int = 2) -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    blobs = [f"{name}:{tag}:layer {i}".encode() * 100 for i in range(layers)]
    for blob in [config, *blobs]:
        await push_blob(client, name, blob)
    manifest = image_manifest(config, blobs)
    response = await client.put(
        f"/v2/{name}/manifests/{tag}", content=manifest, headers={"content-type": OCI_MANIFEST}
    )
    assert response.status_code == 201, response.text
    return manifest


World = tuple[AsyncRegistry, Callable[[], Client]]


async def test_a_push_to_a_new_path_creates_a_push_repository_and_a_private_distribution(
    world: World,
) -> None:
    registry, client = world
    manifest = await push_image(client(), "team/app", "v1")
    repository = await registry.repository("team/app")
    version = await repository.latest_version()
    assert version.number > 0
    assert await repository.tags() == {"v1": digest_of(manifest)}
    distribution = await registry.distribution("team/app")
    assert distribution.base_path == "team/app"
    assert distribution.repository == "team/app"
    assert distribution.private


async def test_a_push_into_a_repository_that_mirrors_a_remote_is_refused_as_read_only(
    world: World,
) -> None:
    registry, client = world
    await registry.create_remote(
        Remote(name="hub", url="https://registry.example", upstream_name="library/busybox")
    )
    await registry.create_repository("busybox", remote="hub")
    await registry.create_distribution("busybox", base_path="mirror/busybox", repository="busybox")
    api = client()
    for request in (
        api.post("/v2/mirror/busybox/blobs/uploads/"),
        api.put(
            "/v2/mirror/busybox/manifests/v1",
            content=image_manifest(b"{}", []),
            headers={"content-type": OCI_MANIFEST},
        ),
    ):
        response = await request
        assert response.status_code == 403
        error = response.json()["errors"][0]
        assert error["code"] == "DENIED"
        assert "read-only" in error["message"] and "mirrors" in error["message"]
    version = await (await registry.repository("busybox")).latest_version()
    assert version.number == 0


async def test_a_push_into_a_distribution_pinned_to_a_version_is_refused(world: World) -> None:
    registry, client = world
    await push_image(client(), "team/app", "v1")
    latest = (await (await registry.repository("team/app")).latest_version()).number
    await registry.create_distribution(
        "pinned", base_path="team/pinned", repository="team/app", repository_version=latest
    )
    response = await client().post("/v2/team/pinned/blobs/uploads/")
    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "DENIED"


async def test_a_burst_of_pushes_leaves_one_version(world: World) -> None:
    registry, client = world
    api = client()
    for tag in ("v1", "v2", "v3"):
        await push_image(api, "team/app", tag, layers=5)
    versions = await (await registry.repository("team/app")).versions()
    assert [v.number for v in versions][-1] == 0
    assert len(versions) == 2
    summary = versions[0].content_summary
    assert summary.added == {"container.blob": 18, "container.manifest": 3, "container.tag": 3}
    assert summary.present == summary.added


async def test_pushes_after_a_quiet_gap_start_a_new_version(world: World) -> None:
    registry, client = world
    registry.push.coalesce = Coalesce(quiet=0.0)
    api = client()
    await push_image(api, "team/app", "v1", layers=1)
    first = (await (await registry.repository("team/app")).latest_version()).number
    await push_image(api, "team/app", "v2", layers=1)
    versions = await (await registry.repository("team/app")).versions()
    assert first in [v.number for v in versions]
    assert len(versions) == 1 + 2 * 3  # version 0, then config, layer, manifest each time


async def test_a_version_a_distribution_is_pinned_to_is_never_squashed(world: World) -> None:
    registry, client = world
    api = client()
    await push_image(api, "team/app", "v1")
    pinned = (await (await registry.repository("team/app")).latest_version()).number
    await registry.create_distribution(
        "pin", base_path="pin/app", repository="team/app", repository_version=pinned
    )
    await push_image(api, "team/app", "v2")
    numbers = [v.number for v in await (await registry.repository("team/app")).versions()]
    assert pinned in numbers
    assert numbers[0] > pinned
    response = await api.get("/v2/pin/app/manifests/v2")
    assert response.status_code == 404


async def test_an_upload_outlives_the_process_that_started_it(
    database_url: str, tmp_path: Path
) -> None:
    """An upload's state is in the stores: another app (another process) carries it on."""
    storage = (tmp_path / "blobs").as_uri()
    data = b"0123456789" * 10_000
    first = await AsyncRegistry.open(database_url=database_url, storage_url=storage)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(first, auth=OpenAccess())),
        base_url="http://r",
    ) as api:
        location = (await api.post("/v2/team/app/blobs/uploads/")).headers["location"]
        response = await api.patch(
            location, content=data[:40_000], headers={"content-range": "0-39999"}
        )
        assert response.status_code == 202
    await first.close()

    second = await AsyncRegistry.open(database_url=database_url, storage_url=storage)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(second, auth=OpenAccess())),
            base_url="http://r",
        ) as api:
            status = await api.get(location)
            assert status.status_code == 204
            assert status.headers["range"] == "0-39999"
            await api.patch(location, content=data[40_000:])
            done = await api.put(location, params={"digest": digest_of(data)})
            assert done.status_code == 201, done.text
            blob = await api.get(f"/v2/team/app/blobs/{digest_of(data)}")
            assert blob.content == data
    finally:
        await second.close()


async def _stored(registry: AsyncRegistry) -> set[str]:
    assert isinstance(registry.blobs, BlobLister)
    return {str(d) async for d, _ in registry.blobs.list_blobs()}


async def test_a_wrong_digest_at_the_end_of_an_upload_keeps_nothing(world: World) -> None:
    registry, client = world
    api = client()
    before = await _stored(registry)
    location = (await api.post("/v2/team/app/blobs/uploads/")).headers["location"]
    await api.patch(location, content=b"first part", headers={"content-range": "0-9"})
    await api.patch(location, content=b" and more")
    response = await api.put(location, params={"digest": digest_of(b"something else")})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert await _stored(registry) == before
    assert (await api.get(location)).status_code == 404
    assert await registry.metadata.get_blob(digest_of(b"something else")) is None


async def test_orphan_cleanup_removes_abandoned_uploads_and_their_bytes(world: World) -> None:
    registry, client = world
    api = client()
    before = await _stored(registry)
    location = (await api.post("/v2/team/app/blobs/uploads/")).headers["location"]
    await api.patch(location, content=b"never finished")
    assert len(await _stored(registry)) == len(before) + 1
    kept = (await api.post("/v2/team/app/blobs/uploads/")).headers["location"]
    await asyncio.sleep(0.05)
    from datetime import timedelta

    report = await registry.orphan_cleanup(grace=timedelta(seconds=0.01))
    assert report.abandoned_uploads >= 2
    assert await _stored(registry) == before
    assert (await api.get(location)).status_code == 404
    assert (await api.get(kept)).status_code == 404


async def test_orphan_cleanup_keeps_the_bytes_of_an_upload_in_progress(world: World) -> None:
    registry, client = world
    api = client()
    location = (await api.post("/v2/team/app/blobs/uploads/")).headers["location"]
    await api.patch(location, content=b"in progress")
    report = await registry.orphan_cleanup()
    assert report.abandoned_uploads == 0
    done = await api.put(location, params={"digest": digest_of(b"in progress")})
    assert done.status_code == 201


async def test_a_chunk_out_of_order_answers_416_with_the_range_received(world: World) -> None:
    _, client = world
    api = client()
    location = (await api.post("/v2/team/app/blobs/uploads/")).headers["location"]
    await api.patch(location, content=b"abcd", headers={"content-range": "0-3"})
    response = await api.patch(location, content=b"ijkl", headers={"content-range": "8-11"})
    assert response.status_code == 416
    assert response.headers["range"] == "0-3"
    assert response.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"


async def test_a_manifest_must_name_blobs_the_repository_holds(world: World) -> None:
    _, client = world
    api = client()
    await push_blob(api, "elsewhere/app", b"config")
    manifest = image_manifest(b"config", [])
    response = await api.put(
        "/v2/team/app/manifests/v1", content=manifest, headers={"content-type": OCI_MANIFEST}
    )
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert error["detail"] == {"digest": digest_of(b"config")}


async def test_a_manifest_pushed_by_digest_must_hash_to_it(world: World) -> None:
    _, client = world
    api = client()
    await push_blob(api, "team/app", b"config")
    manifest = image_manifest(b"config", [])
    response = await api.put(
        f"/v2/team/app/manifests/{digest_of(b'other')}",
        content=manifest,
        headers={"content-type": OCI_MANIFEST},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "DIGEST_INVALID"


async def test_a_manifest_with_a_subject_answers_with_oci_subject(world: World) -> None:
    _, client = world
    api = client()
    subject = await push_image(api, "team/app", "v1")
    await push_blob(api, "team/app", b"{}")
    referrer = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": digest_of(b"{}"),
                "size": 2,
            },
            "layers": [],
            "subject": {
                "mediaType": OCI_MANIFEST,
                "digest": digest_of(subject),
                "size": len(subject),
            },
        }
    ).encode()
    response = await api.put(
        f"/v2/team/app/manifests/{digest_of(referrer)}",
        content=referrer,
        headers={"content-type": OCI_MANIFEST},
    )
    assert response.status_code == 201
    assert response.headers["oci-subject"] == digest_of(subject)
    listed = await api.get(f"/v2/team/app/referrers/{digest_of(subject)}")
    assert listed.headers["content-type"] == OCI_INDEX
    assert [m["digest"] for m in listed.json()["manifests"]] == [digest_of(referrer)]
    assert listed.json()["manifests"][0]["artifactType"] == "application/vnd.example.sbom"


async def test_a_manifest_an_index_lists_cannot_be_deleted_before_the_index(world: World) -> None:
    _, client = world
    api = client()
    child = await push_image(api, "team/app", "v1")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": digest_of(child), "size": len(child)}
            ],
        }
    ).encode()
    put = await api.put(
        "/v2/team/app/manifests/multi", content=index, headers={"content-type": OCI_INDEX}
    )
    assert put.status_code == 201
    refused = await api.delete(f"/v2/team/app/manifests/{digest_of(child)}")
    assert refused.status_code == 409
    assert (await api.delete(f"/v2/team/app/manifests/{digest_of(index)}")).status_code == 202
    assert (await api.delete(f"/v2/team/app/manifests/{digest_of(child)}")).status_code == 202
    assert (await api.get("/v2/team/app/manifests/v1")).status_code == 404


async def test_a_blob_a_manifest_uses_cannot_be_deleted(world: World) -> None:
    _, client = world
    api = client()
    manifest = json.loads(await push_image(api, "team/app", "v1"))
    layer = manifest["layers"][0]["digest"]
    assert (await api.delete(f"/v2/team/app/blobs/{layer}")).status_code == 409
    loose = await push_blob(api, "team/app", b"loose")
    assert (await api.delete(f"/v2/team/app/blobs/{loose}")).status_code == 202
    assert (await api.get(f"/v2/team/app/blobs/{loose}")).status_code == 404


async def test_a_blob_mounts_only_from_a_repository_that_holds_it(world: World) -> None:
    _, client = world
    api = client()
    digest = await push_blob(api, "source/app", b"shared layer")
    mounted = await api.post(
        "/v2/target/app/blobs/uploads/", params={"mount": digest, "from": "source/app"}
    )
    assert mounted.status_code == 201
    assert mounted.headers["location"].endswith(f"/v2/target/app/blobs/{digest}")
    assert (await api.get(f"/v2/target/app/blobs/{digest}")).content == b"shared layer"
    other = digest_of(b"not there")
    fallback = await api.post(
        "/v2/target/app/blobs/uploads/", params={"mount": other, "from": "source/app"}
    )
    assert fallback.status_code == 202
    assert "/blobs/uploads/" in fallback.headers["location"]


async def test_concurrent_pushes_to_one_repository_all_land(world: World) -> None:
    registry, client = world
    api = client()
    tags = [f"t{i}" for i in range(8)]
    pushes: list[Awaitable[bytes]] = [push_image(api, "team/app", tag, layers=1) for tag in tags]
    manifests = await asyncio.gather(*pushes)
    assert await (await registry.repository("team/app")).tags() == {
        t: digest_of(m) for t, m in zip(tags, manifests, strict=True)
    }


async def test_a_repository_that_starts_mirroring_is_refused_at_once(world: World) -> None:
    """The server remembers a base path's repository for a moment, but every version's own
    transaction checks again: the push after a sync marked it a mirror is refused."""
    registry, client = world
    api = client()
    await push_blob(api, "team/app", b"config")
    async with registry.metadata.new_version("team/app") as builder:
        await builder.set_mirror(True)
    response = await api.post(
        "/v2/team/app/blobs/uploads/", params={"digest": digest_of(b"layer")}, content=b"layer"
    )
    assert response.status_code == 403
    assert "read-only" in response.json()["errors"][0]["message"]
    assert not await (await registry.repository("team/app")).has_blob(digest_of(b"layer"))
