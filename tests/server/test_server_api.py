"""The registry API app: what it serves, from which version, through which paths and caches.

(Named ``test_server_api`` because test module names are unique across the tests tree.)
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_harness import IMAGES, LATER, Harness, client_of, lifespan, oci_error, populate
from starlette.applications import Starlette
from starlette.routing import Mount

from ocimirror import AsyncRegistry
from ocimirror.asgi import create_app
from ocimirror.server.content import Content
from ocimirror.testing import Image, Index

APP = "/v2/library/app"
V1 = IMAGES["v1"]
assert isinstance(V1, Image)
LAYER = V1.layers[0]


def every_manifest() -> list[Image | Index]:
    """Every manifest of the ``world`` version 1, children of indexes included."""
    seen: dict[str, Image | Index] = {}
    for image in IMAGES.values():
        for manifest in image.manifests():
            seen[str(manifest.digest)] = manifest
    return list(seen.values())


class Counting:
    """A metadata store that counts the calls made to it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


def counting_app(world: Harness) -> tuple[Counting, httpx.AsyncClient]:
    """A new app over ``world``'s stores whose metadata reads are counted, and its client."""
    metadata = Counting(world.registry.metadata)
    registry = AsyncRegistry(metadata, world.registry.blobs)  # type: ignore[arg-type]
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(registry, cache_ttl=60)),
        base_url="http://test",
    )
    return metadata, client


# -- what is served ------------------------------------------------------------------------------


def test_the_version_check_answers_200_with_the_api_version(world: Harness) -> None:
    response = world.get("/v2/")
    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


@pytest.mark.parametrize("tag", sorted(IMAGES))
def test_a_manifest_by_tag_is_served_byte_for_byte_with_its_headers(
    world: Harness, tag: str
) -> None:
    image = IMAGES[tag]
    response = world.get(f"{APP}/manifests/{tag}")
    assert response.status_code == 200
    assert response.content == image.manifest
    assert response.headers["content-type"] == image.media_type
    assert response.headers["docker-content-digest"] == str(image.digest)
    assert response.headers["content-length"] == str(len(image.manifest))
    assert response.headers["etag"] == f'"{image.digest}"'


@pytest.mark.parametrize("manifest", every_manifest(), ids=lambda m: m.digest.short)
def test_every_manifest_and_child_manifest_is_served_by_digest(
    world: Harness, manifest: Image | Index
) -> None:
    response = world.get(f"{APP}/manifests/{manifest.digest}")
    assert response.status_code == 200
    assert response.content == manifest.manifest
    assert response.headers["content-type"] == manifest.media_type
    assert response.headers["docker-content-digest"] == str(manifest.digest)


def test_a_blob_is_served_whole_with_its_headers(world: Harness) -> None:
    response = world.get(f"{APP}/blobs/{LAYER.digest}")
    assert response.status_code == 200
    assert response.content == LAYER.data
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["docker-content-digest"] == str(LAYER.digest)
    assert response.headers["content-length"] == str(len(LAYER.data))
    assert response.headers["etag"] == f'"{LAYER.digest}"'
    assert response.headers["accept-ranges"] == "bytes"


def test_a_local_blob_is_handed_to_the_server_by_path_when_it_offers_pathsend(
    world: Harness,
) -> None:
    url = f"{APP}/blobs/{LAYER.digest}"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": url,
        "raw_path": url.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
        "extensions": {"http.response.pathsend": {}},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    world.run(world.app(scope, receive, send))
    start, body = sent
    assert start["status"] == 200
    assert (b"content-length", str(len(LAYER.data)).encode()) in start["headers"]
    assert body["type"] == "http.response.pathsend"
    assert Path(body["path"]).is_absolute()
    assert Path(body["path"]).read_bytes() == LAYER.data


@pytest.mark.parametrize(
    "url",
    [f"{APP}/manifests/v1", f"{APP}/manifests/{V1.digest}", f"{APP}/blobs/{LAYER.digest}"],
    ids=["manifest by tag", "manifest by digest", "blob"],
)
def test_if_none_match_with_the_etag_gives_304_and_another_etag_gives_200(
    world: Harness, url: str
) -> None:
    etag = world.get(url).headers["etag"]
    not_modified = world.get(url, {"If-None-Match": f'"sha256:x", {etag}'})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert world.get(url, {"If-None-Match": '"sha256:x"'}).status_code == 200
    assert world.get(url, {"If-None-Match": "*"}).status_code == 304


def test_a_private_distribution_is_served_by_name_though_not_listed(world: Harness) -> None:
    assert world.get("/v2/private/app/manifests/v1").content == V1.manifest
    assert "private/app" not in world.get("/v2/_catalog").json()["repositories"]


def test_a_version_later_than_the_pinned_one_is_served_only_by_the_moving_distribution(
    world: Harness,
) -> None:
    for url in (f"manifests/{LATER.digest}", "manifests/later", f"blobs/{LATER.layers[0].digest}"):
        assert world.get(f"{APP}/{url}").status_code == 200
        assert world.get(f"/v2/pinned/app/{url}").status_code == 404


@pytest.mark.parametrize("redirect", [False, True], ids=["served", "redirect asked"])
def test_blobs_are_served_from_every_store(
    make_harness: Callable[..., Harness],
    storage: tuple[str, dict[str, Any]],
    tmp_path: Path,
    redirect: bool,
) -> None:
    storage_url, options = storage
    harness = make_harness(
        fill=lambda registry: populate(registry, tmp_path),
        storage_url=storage_url,
        storage_options=options,
        redirect_blobs=redirect,
    )
    url = f"{APP}/blobs/{LAYER.digest}"
    whole = harness.get(url)
    if redirect and storage_url.startswith("s3://"):
        assert whole.status_code == 307
        assert whole.headers["docker-content-digest"] == str(LAYER.digest)
        fetched = httpx.get(whole.headers["location"], trust_env=False)
        assert fetched.content == LAYER.data
    else:
        assert whole.status_code == 200
        assert whole.content == LAYER.data
    head = harness.head(url)
    assert head.status_code == 200  # never redirected: a URL signed for GET refuses HEAD
    assert head.headers["content-length"] == str(len(LAYER.data))
    part = harness.get(url, {"Range": "bytes=100-199"})
    if part.status_code == 307:  # the store answers the range itself
        part = httpx.get(part.headers["location"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == LAYER.data[100:200]


# -- versions and caching ----------------------------------------------------------------------


def test_a_moving_distribution_follows_a_retag_within_cache_ttl_and_a_pinned_one_does_not(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    ttl = 0.3
    harness = make_harness(fill=lambda registry: populate(registry, tmp_path), cache_ttl=ttl)
    moving, pinned = f"{APP}/manifests/v1", "/v2/pinned/app/manifests/v1"
    assert harness.get(moving).headers["docker-content-digest"] == str(V1.digest)
    assert harness.get(pinned).headers["docker-content-digest"] == str(V1.digest)

    async def retag() -> None:
        repo = await harness.registry.repository("app")
        await repo.tag("v1", IMAGES["docker"].digest)

    harness.run(retag())
    retagged = time.monotonic()
    while harness.get(moving).headers["docker-content-digest"] == str(V1.digest):
        assert time.monotonic() - retagged < ttl + 0.5, "the moving distribution did not follow"
        time.sleep(0.02)
    assert harness.get(moving).content == IMAGES["docker"].manifest
    time.sleep(ttl)
    assert harness.get(pinned).headers["docker-content-digest"] == str(V1.digest)


def test_a_miss_rechecks_the_version_so_a_new_tag_shows_before_the_cache_expires(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    harness = make_harness(fill=lambda registry: populate(registry, tmp_path), cache_ttl=60)
    assert harness.get(f"{APP}/manifests/fresh").status_code == 404

    async def tag() -> None:
        repo = await harness.registry.repository("app")
        await repo.tag("fresh", V1.digest)

    harness.run(tag())
    time.sleep(0.15)  # a miss rechecks at most every 0.1 s
    assert harness.get(f"{APP}/manifests/fresh").content == V1.manifest
    assert harness.get("/v2/pinned/app/manifests/fresh").status_code == 404


def test_while_a_version_is_being_written_requests_are_answered_from_the_last_complete_one(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    harness = make_harness(fill=lambda registry: populate(registry, tmp_path), cache_ttl=0)

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with harness.registry.metadata.new_version("app") as builder:
            await builder.add("container.tag", "wip", str(V1.digest))
            await builder.remove("container.tag", "v1")
            tags = await harness.client.get(f"{APP}/tags/list")
            wip = await harness.client.get(f"{APP}/manifests/wip")
            v1 = await harness.client.get(f"{APP}/manifests/v1")
        return tags, wip, v1

    tags, wip, v1 = harness.run(scenario())
    assert "wip" not in tags.json()["tags"] and "v1" in tags.json()["tags"]
    assert wip.status_code == 404
    assert v1.status_code == 200
    assert harness.get(f"{APP}/manifests/wip").status_code == 200
    assert harness.get(f"{APP}/manifests/v1").status_code == 404


def test_a_warm_process_answers_repeated_pulls_without_reading_the_database(
    world: Harness,
) -> None:
    metadata, client = counting_app(world)
    urls = [f"{APP}/manifests/v1", f"{APP}/manifests/{V1.digest}", f"{APP}/blobs/{LAYER.digest}"]

    async def pull() -> None:
        for url in urls:
            assert (await client.get(url)).status_code == 200

    world.run(pull())
    warm = sum(metadata.calls.values())
    for _ in range(5):
        world.run(pull())
    assert sum(metadata.calls.values()) == warm
    world.run(client.aclose())


def test_concurrent_requests_for_a_name_share_one_resolution(world: Harness) -> None:
    metadata, client = counting_app(world)

    async def pulls() -> list[httpx.Response]:
        return await asyncio.gather(*(client.get(f"{APP}/manifests/v1") for _ in range(20)))

    assert all(r.status_code == 200 for r in world.run(pulls()))
    assert metadata.calls["serving"] == 1
    world.run(client.aclose())


@pytest.mark.parametrize(("room", "reads"), [(10, 3), (1 << 20, 2)], ids=["small", "large"])
def test_the_manifest_cache_is_bounded_by_bytes(world: Harness, room: int, reads: int) -> None:
    metadata = Counting(world.registry.metadata)
    first, second = IMAGES["v1"], IMAGES["docker"]
    content = Content(
        AsyncRegistry(metadata, world.registry.blobs),  # type: ignore[arg-type]
        manifest_cache_bytes=max(len(first.manifest), len(second.manifest)) + room,
    )

    async def reads_of_three() -> None:
        for image in (first, second, first):
            record = await content.manifest(str(image.digest))
            assert record is not None and record.data == image.manifest

    world.run(reads_of_three())
    assert metadata.calls["get_manifest"] == reads


# -- errors --------------------------------------------------------------------------------------


def test_an_unexpected_error_is_logged_and_answered_500_without_internals(
    world: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(world.registry)

    async def boom(digest: str) -> None:
        raise RuntimeError("secret internals")

    app.state.content.manifest = boom
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    with caplog.at_level(logging.ERROR, logger="ocimirror.server"):
        response = world.run(client.get(f"{APP}/manifests/v1"))
        head = world.run(client.head(f"{APP}/manifests/v1"))
    world.run(client.aclose())
    assert response.status_code == 500 and head.status_code == 500 and head.content == b""
    error = oci_error(response)
    assert error["code"] == "UNKNOWN" and "secret" not in response.text
    assert any(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in caplog.records)


def test_create_app_takes_a_registry_or_where_to_open_one_not_both(world: Harness) -> None:
    with pytest.raises(TypeError):
        create_app(world.registry, home="/somewhere")
    with pytest.raises(ValueError):
        create_app(world.registry, cache_ttl=-1)


# -- mounting and lifespan -----------------------------------------------------------------------


def test_a_mounted_app_answers_under_its_prefix_and_its_links_carry_it(world: Harness) -> None:
    parent = Starlette(routes=[Mount("/registry", app=create_app(world.registry))])
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=parent), base_url="http://test")

    def get(url: str) -> httpx.Response:
        return world.run(client.get(url))

    challenge = get("/registry/v2/")
    assert challenge.status_code == 401  # token auth, by default
    assert 'realm="http://test/registry/token"' in challenge.headers["www-authenticate"]
    assert "token" in get("/registry/token?service=ocimirror").json()
    assert get(f"/registry{APP}/manifests/v1").content == V1.manifest  # public: no token needed
    assert get(f"/registry{APP}/blobs/{LAYER.digest}").content == LAYER.data
    assert get(f"/registry{APP}/tags/list?n=1").headers["link"] == (
        f'</registry{APP}/tags/list?last=dlist&n=1>; rel="next"'
    )
    catalog = get("/registry/v2/_catalog?n=1")
    assert catalog.headers["link"] == '</registry/v2/_catalog?last=library/app&n=1>; rel="next"'
    nxt = catalog.headers["link"][1:].split(">")[0]
    assert get(nxt).json() == {"repositories": ["odd/manifests/blobs"]}
    # An anonymous caller learns nothing about names that are not public.
    assert oci_error(get("/registry/v2/no/such/tags/list"))["code"] == "UNAUTHORIZED"
    assert get("/v2/").status_code == 404
    world.run(client.aclose())


async def _prepare_home(home: Path, tmp: Path) -> None:
    registry = await AsyncRegistry.open(home=home)
    try:
        await populate(registry, tmp)
    finally:
        await registry.close()


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_an_app_given_no_registry_opens_one_in_its_lifespan_and_closes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    home = tmp_path / "home"
    asyncio.run(_prepare_home(home, tmp_path))
    if how == "environment":
        for name in ("OCIMIRROR_DATABASE_URL", "OCIMIRROR_STORAGE_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("OCIMIRROR_HOME", str(home))
        app = create_app()
    else:
        app = create_app(home=home)

    async def scenario() -> None:
        async with lifespan(app), client_of(app) as client:
            assert (await client.get(f"{APP}/manifests/v1")).content == V1.manifest
            assert (await client.get(f"{APP}/blobs/{LAYER.digest}")).content == LAYER.data

    asyncio.run(scenario())
    with pytest.raises(RuntimeError, match="not open"):
        _ = app.state.content.registry
