"""A sync publishes complete tags only: failures injected at each step never leave a published
version holding a tag whose closure is incomplete, and a sync without its lease publishes
nothing.

Every version is checked against the manifests' own bytes (parsed with ``ocimirror.core``),
not against the store's reference rows, so a bug in recording cannot hide itself.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.proxy import FaultProxy
from fixtures.registry import Registry

import ocimirror
from ocimirror.backends.sql import SQLMetadataStore
from ocimirror.cli import EXIT_FAILED, EXIT_PARTIAL, main
from ocimirror.core.digest import Digest
from ocimirror.core.manifest import parse_manifest
from ocimirror.errors import LeaseLost
from ocimirror.sync import SyncProgress
from ocimirror.testing import Image, Index, random_image, random_index, serving
from ocimirror.upstream import RegistryClient

LAYER = 64 * 1024


@pytest.fixture
def upstream(
    docker_registry: Registry, registry_proxy: FaultProxy, registry_name: str
) -> dict[str, Any]:
    """Upstream: two images and a two-platform index, reached through a fault proxy."""
    images: dict[str, Image | Index] = {
        "v1": random_image(seed=f"{registry_name}-v1", layer_size=LAYER),
        "v2": random_image(seed=f"{registry_name}-v2", layer_size=LAYER),
        "multi": random_index(seed=f"{registry_name}-multi"),
    }
    for tag, image in images.items():
        docker_registry.push(registry_name, image, tag)
    return {"images": images, "proxy": registry_proxy, "name": registry_name}


def mirror(registry: ocimirror.Registry, upstream: dict[str, Any]) -> Any:
    registry.create_remote(
        name="up", url=upstream["proxy"].url, upstream_name=upstream["name"], max_retries=1
    )
    return registry.create_repository("mirror", remote="up")


def quick(registry: ocimirror.Registry) -> RegistryClient:
    """The remote's client with quick backoff, so failures do not make the tests slow."""
    return RegistryClient.from_remote(
        registry.remote("up"), backoff_base=0.01, backoff_max=0.05, timeout=5.0
    )


def child(upstream: dict[str, Any]) -> Image:
    index = upstream["images"]["multi"]
    assert isinstance(index, Index)
    return index.images()[1]


def assert_every_version_closed(registry: ocimirror.Registry, name: str) -> None:
    """Each version holds, for every tag, its manifest, children, config and layers, and the
    blob store has every blob's bytes."""
    repo = registry.repository(name)
    for version in repo.versions():
        for tag, digest in repo.tags(version).items():
            queue = [Digest.parse(digest)]
            while queue:
                current = queue.pop()
                assert repo.has_manifest(current, version), (version.number, tag, current)
                manifest = registry.get_manifest(current)
                queue += [c.digest for c in manifest.children()]
                for blob in manifest.blobs():
                    assert repo.has_blob(blob.digest, version), (version.number, tag, blob)
                    assert registry.has_blob(blob.digest), (tag, blob)


def test_an_index_whose_child_always_fails_is_dropped_and_the_rest_published(
    upstream: dict[str, Any],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A child manifest answering 500 every time: v1 and v2 are published complete, multi is
    not, the JSON report names it with its reason, the exit status says "partial", and
    everything the server then serves resolves completely."""
    home = tmp_path / "home"
    monkeypatch.setenv("OCIMIRROR_DATABASE_URL", database_url)
    broken = child(upstream)
    upstream["proxy"].status(500, times=10_000, method="GET", path=f"/manifests/{broken.digest}")

    def cli(*argv: str) -> tuple[int, Any]:
        status = main(["--home", str(home), *argv])
        out, _ = capsys.readouterr()
        return status, json.loads(out) if out.strip() else None

    cli("remote", "create", "--name", "up", "--url", upstream["proxy"].url,
        "--upstream-name", upstream["name"])  # fmt: skip
    cli("repository", "create", "--name", "mirror", "--remote", "up")
    status, report = cli("repository", "sync", "--name", "mirror")
    assert status == EXIT_PARTIAL
    sync = report["sync"]
    assert sync["status"] == "partial" and sync["tags"] == 2
    assert [(d["tag"], d["digest"]) for d in sync["dropped"]] == [
        ("multi", str(upstream["images"]["multi"].digest))
    ]
    assert "500" in sync["dropped"][0]["reason"]

    with ocimirror.open(home=home) as registry:
        repo = registry.repository("mirror")
        assert set(repo.tags()) == {"v1", "v2"}
        assert repo.mirror
        assert_every_version_closed(registry, "mirror")
        registry.create_distribution("mirror", base_path="lib/mirror", repository="mirror")

    with serving(home) as host, httpx.Client(base_url=f"http://{host}") as http:
        tags = http.get("/v2/lib/mirror/tags/list").json()["tags"]
        assert sorted(tags) == ["v1", "v2"]
        for tag in tags:
            served = http.get(
                f"/v2/lib/mirror/manifests/{tag}",
                headers={"accept": ",".join(MANIFEST_TYPES)},
            )
            assert served.status_code == 200
            walk(http, parse_manifest(served.content, served.headers["content-type"]))


MANIFEST_TYPES = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
]


def walk(http: httpx.Client, manifest: Any) -> None:
    """Fetch every child manifest and blob of a served manifest; each must verify."""
    for item in manifest.children():
        response = http.get(
            f"/v2/lib/mirror/manifests/{item.digest}", headers={"accept": ",".join(MANIFEST_TYPES)}
        )
        assert response.status_code == 200
        walk(http, parse_manifest(response.content, item.media_type, expected=item.digest))
    for blob in manifest.blobs():
        response = http.get(f"/v2/lib/mirror/blobs/{blob.digest}")
        assert response.status_code == 200
        assert Digest.of(response.content) == blob.digest


def test_a_layer_that_never_verifies_drops_its_tags_only(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    """A layer corrupted on every attempt: its image's tag is dropped with the digest error;
    the others are published; nothing corrupt is stored."""
    repo = mirror(registry, upstream)
    victim = upstream["images"]["v2"].layers[0]
    upstream["proxy"].corrupt(
        LAYER // 2, times=10_000, method="GET", path=f"/blobs/{victim.digest}"
    )
    result = repo.sync(client=quick(registry))
    assert result.status == "partial"
    assert [d["tag"] for d in result.dropped] == ["v2"]
    assert "DigestMismatch" in result.dropped[0]["reason"]
    assert set(repo.tags()) == {"v1", "multi"}
    assert not registry.has_blob(victim.digest)
    assert_every_version_closed(registry, "mirror")


def test_a_failed_child_in_a_mirror_sync_keeps_the_previous_index(
    registry: ocimirror.Registry, upstream: dict[str, Any], docker_registry: Registry
) -> None:
    """Mirror mode never removes a tag because its refresh failed: when the new index's child
    fails, the tag keeps pointing at the old, complete index."""
    repo = mirror(registry, upstream)
    assert repo.sync(client=quick(registry)).ok
    old = repo.tags()["multi"]
    newer = random_index(seed=f"{upstream['name']}-multi-2")
    docker_registry.push(upstream["name"], newer, "multi")
    upstream["proxy"].status(
        500, times=10_000, method="GET", path=f"/manifests/{newer.images()[0].digest}"
    )
    result = repo.sync(mirror=True, client=quick(registry))
    assert result.status == "partial"
    assert [d["tag"] for d in result.dropped] == ["multi"]
    assert repo.tags()["multi"] == old
    assert_every_version_closed(registry, "mirror")


def test_a_sync_that_cannot_read_the_store_publishes_nothing(
    registry: ocimirror.Registry, upstream: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first lookup of stored manifests fails: every tag is dropped with that error, no
    version is made, and the status is "failed"."""
    repo = mirror(registry, upstream)
    original = SQLMetadataStore.existing_manifests
    calls = 0

    async def failing_once(self: SQLMetadataStore, digests: list[str]) -> set[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("the database went away")
        return await original(self, digests)

    monkeypatch.setattr(SQLMetadataStore, "existing_manifests", failing_once)
    result = repo.sync(client=quick(registry))
    assert result.status == "failed" and result.tags == 0
    assert {d["tag"] for d in result.dropped} == {"v1", "v2", "multi"}
    assert all("went away" in d["reason"] for d in result.dropped)
    assert repo.latest_version().number == 0


def test_a_sync_that_lost_its_lease_publishes_nothing(
    registry: ocimirror.Registry,
    upstream: dict[str, Any],
    database_url: str,
) -> None:
    """Another process takes the lease over just before publishing: the sync raises LeaseLost
    and the repository stays at its last version."""
    repo = mirror(registry, upstream)

    def steal() -> None:
        async def take() -> None:
            async with SQLMetadataStore(database_url) as other:
                await other.acquire_lease(
                    "mirror", holder="thief", purpose="sync", ttl=600, is_stale=lambda h: True
                )

        asyncio.run(take())

    def progress(p: SyncProgress) -> None:
        if p.phase == "publishing" and not stolen.is_set():
            stolen.set()
            thread = threading.Thread(target=steal)
            thread.start()
            thread.join()

    stolen = threading.Event()
    with pytest.raises(LeaseLost):
        repo.sync(client=quick(registry), progress=progress)
    assert stolen.is_set()
    assert repo.latest_version().number == 0 and repo.tags() == {}
    assert not repo.refresh().mirror


def test_the_cli_says_failed_when_nothing_could_be_published(
    upstream: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every manifest failing: exit status 1, status "failed", each tag listed."""
    upstream["proxy"].status(500, times=10_000, method="GET", path="/manifests/")
    home = str(tmp_path / "home")
    main(["--home", home, "remote", "create", "--name", "up", "--url", upstream["proxy"].url,
          "--upstream-name", upstream["name"], "--max-retries", "0"])  # fmt: skip
    main(["--home", home, "repository", "create", "--name", "mirror", "--remote", "up"])
    capsys.readouterr()
    status = main(["--home", home, "repository", "sync", "--name", "mirror"])
    out, err = capsys.readouterr()
    assert status == EXIT_FAILED
    report = json.loads(out)["sync"]
    assert report["status"] == "failed"
    assert {d["tag"] for d in report["dropped"]} == {"v1", "v2", "multi"}
    assert "failed" in err
