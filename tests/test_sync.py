"""Sync from a real upstream (Debian's docker-registry), plain, Basic auth and token auth."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures.registry import Registry

import ocimirror
from ocimirror.cli import main
from ocimirror.errors import RepositoryBusy
from ocimirror.testing import Image, Index, random_image, random_index, random_layer

BASE = random_layer(4096, seed="sync-base")


def counts(*items: Image | Index, tags: int) -> dict[str, int]:
    """The content summary counts of a set of images and indexes under ``tags`` tags."""
    manifests = {str(m.digest) for item in items for m in item.manifests()}
    blobs = {str(b.digest) for item in items for b in item.blobs()}
    return {
        "container.blob": len(blobs),
        "container.manifest": len(manifests),
        "container.tag": tags,
    }


@pytest.fixture
def upstream(docker_registry: Registry, registry_name: str) -> dict[str, Any]:
    """An upstream repository: v1, v2, v2-rc1, latest (= v2) and a multi-arch index."""
    images = {
        "v1": random_image(seed=f"{registry_name}-1", base=[BASE]),
        "v2": random_image(seed=f"{registry_name}-2", base=[BASE]),
        "v2-rc1": random_image(seed=f"{registry_name}-rc"),
        "multi": random_index(seed=f"{registry_name}-multi"),
    }
    for tag, image in images.items():
        docker_registry.push(registry_name, image, tag)
    docker_registry.push(registry_name, images["v2"], "latest")
    return {"registry": docker_registry, "name": registry_name, "images": images}


def make(reg: ocimirror.Registry, upstream: dict[str, Any], **remote: Any) -> Any:
    registry: Registry = upstream["registry"]
    reg.create_remote(name="up", url=registry.url, upstream_name=upstream["name"], **remote)
    return reg.create_repository("mirror", remote="up")


def test_a_sync_brings_exactly_the_filtered_upstream_set(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    repo = make(registry, upstream, include_tags=["v*", "multi"], exclude_tags=["*-rc*"])
    result = repo.sync()
    images = upstream["images"]
    assert result.created and result.version.number == 1
    assert repo.tags() == {t: str(images[t].digest) for t in ("multi", "v1", "v2")}
    assert result.version.content_summary.present == counts(
        images["v1"], images["v2"], images["multi"], tags=3
    )
    assert result.ok and result.failed == ()
    assert repo.refresh().mirror
    assert registry.repair().ok


def test_a_second_sync_downloads_nothing_and_creates_no_version(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    repo = make(registry, upstream)
    first = repo.sync()
    again = repo.sync()
    assert not again.created and again.version.number == first.version.number
    assert again.manifests_downloaded == 0 and again.blobs_downloaded == 0
    assert again.requests.get("manifest_get", 0) == 0
    assert again.requests.get("blob", 0) == 0


def test_a_first_sync_gets_tags_and_a_resync_asks_with_head(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    """A tag the repository lacks costs one GET (no HEAD first); a tag it has costs a HEAD
    (not counted against Docker Hub's pull limit), and a GET only when it moved."""
    repo = make(registry, upstream, include_tags=["v1", "v2", "latest"])
    first = repo.sync()
    assert first.ok and first.requests["manifest_head"] == 0
    assert first.requests["manifest_get"] == 3  # v2 and latest are one manifest, fetched twice

    images = upstream["images"]
    upstream["registry"].push(upstream["name"], images["v2-rc1"], "v1")  # v1 moves
    registry.update_remote("up", include_tags=["v1", "v2", "latest", "multi"])
    again = repo.sync()
    assert again.ok and again.created
    assert again.requests["manifest_head"] == 3  # v1, v2, latest: known tags
    # v1's new manifest by digest, multi (new) by tag, and multi's two children.
    assert again.requests["manifest_get"] == 4
    assert repo.tags()["v1"] == str(images["v2-rc1"].digest)


def test_shared_layers_are_downloaded_once_and_reused_across_repositories(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    first = make(registry, upstream, include_tags=["v1"]).sync()
    # v1 and v2 share BASE: the second repository finds it stored.
    registry.create_repository("other", remote="up")
    registry.update_remote("up", include_tags=["v2"])
    second = registry.repository("other").sync()
    v2_blobs = len(upstream["images"]["v2"].blobs())
    assert first.blobs_downloaded == len(upstream["images"]["v1"].blobs())
    assert second.blobs_reused == 1 and second.blobs_downloaded == v2_blobs - 1


def test_mirror_sync_follows_deletes_and_retags_additive_keeps_them(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    up: Registry = upstream["registry"]
    name, images = upstream["name"], upstream["images"]
    repo = make(registry, upstream)
    repo.sync()
    # Upstream: v1 deleted, latest moved to a new image.
    up.delete_manifest(name, images["v1"].digest)
    newer = random_image(seed=f"{name}-3", base=[BASE])
    up.push(name, newer, "latest")

    own = len(newer.blobs()) - 1  # all but BASE
    additive = repo.sync()
    assert additive.version.content_summary.added == {
        "container.blob": own,
        "container.manifest": 1,
        "container.tag": 1,
    }
    assert additive.version.content_summary.removed == {"container.tag": 1}
    assert repo.tags()["v1"] == str(images["v1"].digest)  # kept
    assert repo.tags()["latest"] == str(newer.digest)

    mirrored = repo.sync(mirror=True)
    assert set(repo.tags()) == {"latest", "multi", "v2", "v2-rc1"}
    assert mirrored.version.content_summary.removed == {
        "container.blob": len(images["v1"].blobs()) - 1,  # BASE is still used
        "container.manifest": 1,
        "container.tag": 1,
    }
    assert mirrored.version.content_summary.present == counts(
        images["v2"], images["v2-rc1"], images["multi"], newer, tags=4
    )


def test_mirror_sync_drops_tags_outside_the_filters(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    repo = make(registry, upstream)
    repo.sync()
    registry.update_remote("up", include_tags=["v*"], exclude_tags=["*-rc*"])
    repo.sync(mirror=True)
    assert set(repo.tags()) == {"v1", "v2"}


def test_an_include_digest_syncs_that_manifest_untagged(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    multi = upstream["images"]["multi"]
    repo = make(registry, upstream, include_tags=["v1", str(multi.digest)])
    result = repo.sync()
    assert set(repo.tags()) == {"v1"}
    assert repo.has_manifest(multi.digest)
    assert result.version.content_summary.present["container.manifest"] == 1 + 3


def test_sync_behind_basic_auth(
    registry: ocimirror.Registry, docker_registry_basic: Registry, registry_name: str
) -> None:
    image = random_image(seed=registry_name)
    docker_registry_basic.push(registry_name, image, "v1")
    user, password = docker_registry_basic.credentials or ("", "")
    registry.create_remote(
        name="up",
        url=docker_registry_basic.url,
        upstream_name=registry_name,
        username=user,
        password=password,
    )
    repo = registry.create_repository("mirror", remote="up")
    assert repo.sync().ok
    assert repo.tags() == {"v1": str(image.digest)}


def test_sync_behind_token_auth_asks_for_a_handful_of_tokens(
    registry: ocimirror.Registry, docker_registry_token: Registry, registry_name: str
) -> None:
    images = [random_image(seed=f"{registry_name}-{i}", base=[BASE]) for i in range(12)]
    for i, image in enumerate(images):
        docker_registry_token.push(registry_name, image, f"t{i}")
    tokens = docker_registry_token.token_server
    assert tokens is not None
    tokens.reset()
    user, password = docker_registry_token.credentials or ("", "")
    registry.create_remote(
        name="up",
        url=docker_registry_token.url,
        upstream_name=registry_name,
        username=user,
        password=password,
    )
    repo = registry.create_repository("mirror", remote="up")
    result = repo.sync()
    assert result.ok and len(repo.tags()) == 12
    # 12 manifest GETs (a first sync sends no HEAD), 25 blobs: one scope, so one token
    # (a second at most on expiry).
    assert 1 <= len(tokens.requests) <= 2
    assert result.requests["token"] == len(tokens.requests)


def test_wrong_credentials_fail_the_sync_and_leave_the_repository_alone(
    registry: ocimirror.Registry, docker_registry_basic: Registry, registry_name: str
) -> None:
    registry.create_remote(
        name="up",
        url=docker_registry_basic.url,
        upstream_name=registry_name,
        username="tester",
        password="wrong",
    )
    repo = registry.create_repository("mirror", remote="up")
    with pytest.raises(ocimirror.OcimirrorError) as exc:
        repo.sync()
    assert "wrong" not in str(exc.value)
    assert repo.latest_version().number == 0


def test_a_second_sync_of_the_same_repository_fails_clearly(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    repo = make(registry, upstream)
    meta = registry.aio.metadata
    registry._portal.call(
        meta.acquire_lease("mirror", holder="someone-else", purpose="sync", ttl=60)
    )
    with pytest.raises(RepositoryBusy, match="someone-else"):
        repo.sync()
    registry._portal.call(meta.release_lease("mirror", holder="someone-else"))
    assert repo.sync().ok


def test_a_sync_of_named_tags_only_adds(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    """A pull-through fill (``only=``) takes no lease, so it may not remove anything: mirror
    mode is refused before anything is asked or written."""
    from ocimirror.remote import SyncPolicy
    from ocimirror.sync import sync_repository

    repo = make(registry, upstream)
    aio = registry.aio
    with pytest.raises(ocimirror.InvalidError, match="only="):
        registry._portal.call(
            sync_repository(
                aio.metadata, aio.blobs, "mirror", only=["v1"], policy=SyncPolicy(mirror=True)
            )
        )
    assert repo.latest_version().number == 0


def test_a_resync_that_changes_nothing_takes_no_lease(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    """A re-sync that finds the upstream as it was writes nothing, not even its lease, so it
    runs while another sync holds the repository; one with something to bring is refused
    before it downloads anything."""
    repo = make(registry, upstream, include_tags=["v1"])
    assert repo.sync().created
    meta = registry.aio.metadata
    registry._portal.call(
        meta.acquire_lease("mirror", holder="someone-else", purpose="sync", ttl=60)
    )
    try:
        again = repo.sync()
        assert again.ok and not again.created and again.version.number == 1
        assert again.blobs_downloaded == again.manifests_downloaded == 0
        registry.update_remote("up", include_tags=["v1", "v2"])
        with pytest.raises(RepositoryBusy, match="someone-else"):
            repo.sync()
        assert repo.latest_version().number == 1
    finally:
        registry._portal.call(meta.release_lease("mirror", holder="someone-else"))
    assert repo.sync().created
    assert set(repo.tags()) == {"v1", "v2"}


def test_sync_all_runs_every_repository_and_reports_failures(
    registry: ocimirror.Registry, upstream: dict[str, Any]
) -> None:
    up: Registry = upstream["registry"]
    registry.create_remote(name="a", url=up.url, upstream_name=upstream["name"],
                           include_tags=["v1"])  # fmt: skip
    registry.create_remote(name="b", url=up.url, upstream_name=upstream["name"],
                           include_tags=["multi"])  # fmt: skip
    registry.create_remote(name="gone", url=up.url, upstream_name="no/such-repo")
    for name in ("a", "b", "gone"):
        registry.create_repository(name, remote=name)
    registry.create_repository("no-remote")
    results = registry.sync_all()
    assert set(results) == {"a", "b", "gone"}
    assert isinstance(results["gone"], ocimirror.NotFound)
    assert registry.repository("a").tags() == {"v1": str(upstream["images"]["v1"].digest)}
    assert set(registry.repository("b").tags()) == {"multi"}


def test_the_cli_workflow_against_a_local_registry(
    upstream: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    up: Registry = upstream["registry"]
    name, images = upstream["name"], upstream["images"]

    def cli(*argv: str) -> Any:
        status = main(["--home", str(tmp_path / "home"), *argv])
        out, err = capsys.readouterr()
        assert status == 0, err
        return json.loads(out) if out.strip() else None

    cli("remote", "create", "--name", "up", "--url", up.url, "--upstream-name", name,
        "--include-tags", "v*", "--include-tags", "latest", "--exclude-tags", "*-rc*")  # fmt: skip
    cli("repository", "create", "--name", "foo", "--remote", "up")
    version = cli("repository", "sync", "--name", "foo")
    assert version["number"] == 1
    assert version["content_summary"]["present"] == counts(images["v1"], images["v2"], tags=3)
    up.delete_manifest(name, images["v1"].digest)
    newer = random_image(seed=f"{name}-cli")
    up.push(name, newer, "v2")
    kept = cli("repository", "sync", "--name", "foo")
    assert kept["content_summary"]["removed"] == {"container.tag": 1}  # v2 moved
    mirrored = cli("repository", "sync", "--name", "foo", "--mirror")
    assert mirrored["content_summary"]["present"] == counts(images["v2"], newer, tags=2)
    shown = cli("repository", "version", "show", "--repository", "foo", "--version", "3")
    assert shown["content_summary"] == mirrored["content_summary"]
    listed = cli("repository", "version", "list", "--repository", "foo")
    assert [v["number"] for v in listed] == [3, 2, 1, 0]


SYNCER = textwrap.dedent(
    """
    import sys
    import ocimirror
    db, storage, url, name = sys.argv[1:5]
    with ocimirror.open(database_url=db, storage_url=storage) as reg:
        reg.create_remote(name="up", url=url, upstream_name=name, download_concurrency=2)
        repo = reg.create_repository("victim", remote="up")
        print("started", flush=True)
        repo.sync()
    """
)


def test_a_sync_killed_midway_leaves_the_last_version_and_the_rerun_reuses_blobs(
    docker_registry: Registry, registry_name: str, database_url: str, tmp_path: Path
) -> None:
    images = [
        random_image(seed=f"{registry_name}-{i}", layers=2, layer_size=2 << 20) for i in range(8)
    ]
    for i, image in enumerate(images):
        docker_registry.push(registry_name, image, f"t{i}")
    storage = (tmp_path / "blobs").as_uri()
    proc = subprocess.Popen(
        [sys.executable, "-c", SYNCER, database_url, storage, docker_registry.url, registry_name],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"started"
        blobs_dir = tmp_path / "blobs" / "blobs"
        deadline = time.monotonic() + 60
        while not blobs_dir.exists() or sum(1 for _ in blobs_dir.rglob("*") if _.is_file()) < 4:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with ocimirror.open(database_url=database_url, storage_url=storage) as reg:
        repo = reg.repository("victim")
        assert repo.latest_version().number == 0
        assert reg.repair().ok
        result = repo.sync()
        assert result.ok and len(repo.tags()) == 8
        assert result.blobs_reused >= 4
        assert reg.repair().ok


def test_the_async_api_syncs_too(upstream: dict[str, Any], tmp_path: Path) -> None:
    up: Registry = upstream["registry"]

    async def go() -> int:
        async with await ocimirror.AsyncRegistry.open(home=tmp_path) as reg:
            await reg.create_remote(name="up", url=up.url, upstream_name=upstream["name"])
            repo = await reg.create_repository("foo", remote="up")
            seen: list[int] = []
            result = await repo.sync(progress=lambda p: seen.append(p.tags_done))
            assert seen and max(seen) == 5
            return result.version.number

    assert asyncio.run(go()) == 1
