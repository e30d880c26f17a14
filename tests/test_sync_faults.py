"""Sync through a fault-injecting proxy: it completes correctly, or fails leaving the last
version intact; a corrupt blob is never stored."""

from __future__ import annotations

from typing import Any

import pytest
from fixtures.proxy import FaultProxy
from fixtures.registry import Registry

import ocimirror
from ocimirror.testing import random_image
from ocimirror.upstream import RegistryClient

LAYER = 256 * 1024


@pytest.fixture
def setup(
    registry: ocimirror.Registry,
    docker_registry: Registry,
    registry_proxy: FaultProxy,
    registry_name: str,
) -> dict[str, Any]:
    """Three images upstream, a remote that goes through the proxy, an empty repository."""
    images = {
        f"v{i}": random_image(seed=f"{registry_name}-{i}", layers=1, layer_size=LAYER)
        for i in range(3)
    }
    for tag, image in images.items():
        docker_registry.push(registry_name, image, tag)
    remote = registry.create_remote(
        name="up", url=registry_proxy.url, upstream_name=registry_name, max_retries=4
    )
    repo = registry.create_repository("mirror", remote="up")
    return {"images": images, "remote": remote, "repo": repo, "proxy": registry_proxy}


def client(remote: ocimirror.Remote, **options: Any) -> RegistryClient:
    """The remote's client with quick backoff, so the tests do not sleep for long."""
    return RegistryClient.from_remote(
        remote, backoff_base=0.01, backoff_max=0.05, **{"timeout": 5.0, **options}
    )


def assert_complete(registry: ocimirror.Registry, setup: dict[str, Any]) -> None:
    repo = setup["repo"]
    assert repo.tags() == {t: str(i.digest) for t, i in setup["images"].items()}
    assert registry.repair().ok


# Faults on the body of one layer (the configs are too small to be cut mid-body).
BLOB_GET = {"method": "GET", "path": "LAYER"}


def aim(setup: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Point a fault at the layer of image v1 when its path says LAYER."""
    if args.get("path") == "LAYER":
        return {**args, "path": f"/blobs/{setup['images']['v1'].layers[0].digest}"}
    return args


@pytest.mark.parametrize(
    ("fault", "args"),
    [
        ("reset_mid_body", {"after_bytes": LAYER // 2, "times": 2, **BLOB_GET}),
        ("truncate", {"after_bytes": LAYER // 3, "times": 2, **BLOB_GET}),
        ("stall", {"seconds": 0.5, "after_bytes": 1024, "times": 1, **BLOB_GET}),
        ("status", {"code": 503, "times": 3, "method": "GET", "path": "/blobs/"}),
        ("status", {"code": 502, "times": 3, "method": "GET", "path": "/manifests/"}),
        ("status", {"code": 500, "times": 2, "method": "GET", "path": "/tags/list"}),
        (
            "status",
            {"code": 429, "times": 2, "headers": {"Retry-After": "0"}, "path": "/manifests/"},
        ),
    ],
    ids=["reset", "truncate", "stall", "blob-503", "manifest-502", "tags-500", "429"],
)
def test_transient_faults_are_retried_and_the_sync_completes(
    registry: ocimirror.Registry, setup: dict[str, Any], fault: str, args: dict[str, Any]
) -> None:
    proxy: FaultProxy = setup["proxy"]
    getattr(proxy, fault)(**aim(setup, args))
    result = setup["repo"].sync(client=client(setup["remote"]))
    assert result.ok and result.version.number == 1
    assert any(r.fault for r in proxy.requests), "the fault was never triggered"
    assert result.requests.get("retry", 0) >= 1 or fault == "stall"
    assert_complete(registry, setup)


def test_a_broken_blob_download_resumes_with_a_range_request(
    registry: ocimirror.Registry, setup: dict[str, Any]
) -> None:
    proxy: FaultProxy = setup["proxy"]
    proxy.reset_mid_body(**aim(setup, {"after_bytes": LAYER // 2, **BLOB_GET}))
    assert setup["repo"].sync(client=client(setup["remote"])).ok
    assert any(r.range and r.range.startswith("bytes=") for r in proxy.requests)
    assert_complete(registry, setup)


def test_corrupted_bytes_are_never_stored(
    registry: ocimirror.Registry, setup: dict[str, Any]
) -> None:
    proxy: FaultProxy = setup["proxy"]
    # Corrupt every attempt at one layer: the tag fails, nothing corrupt is stored.
    victim = setup["images"]["v1"].layers[0]
    proxy.corrupt(LAYER // 4, times=100, method="GET", path=f"/blobs/{victim.digest}")
    result = setup["repo"].sync(client=client(setup["remote"], max_retries=2))
    assert not result.ok
    assert [f["tag"] for f in result.dropped] == ["v1"]
    assert "Digest" in result.dropped[0]["reason"]
    assert set(setup["repo"].tags()) == {"v0", "v2"}
    assert not registry._portal.call(registry.aio.blobs.exists(victim.digest))
    assert registry.repair().ok
    # Once the network is healthy again, the next sync completes.
    proxy.clear()
    assert setup["repo"].sync(client=client(setup["remote"])).ok
    assert_complete(registry, setup)


def test_a_corruption_that_clears_is_retried(
    registry: ocimirror.Registry, setup: dict[str, Any]
) -> None:
    proxy: FaultProxy = setup["proxy"]
    proxy.corrupt(**aim(setup, {"byte_offset": LAYER // 4, **BLOB_GET}))
    assert setup["repo"].sync(client=client(setup["remote"])).ok
    assert_complete(registry, setup)


def test_an_upstream_that_stays_down_fails_and_leaves_the_version_intact(
    registry: ocimirror.Registry, setup: dict[str, Any]
) -> None:
    repo = setup["repo"]
    proxy: FaultProxy = setup["proxy"]
    assert repo.sync(client=client(setup["remote"])).ok
    proxy.status(503, times=1000, path="/tags/list")
    with pytest.raises(ocimirror.OcimirrorError):
        repo.sync(client=client(setup["remote"], max_retries=1), mirror=True)
    assert repo.latest_version().number == 1
    assert_complete(registry, setup)


def test_a_failed_tag_is_not_deleted_by_a_mirror_sync(
    registry: ocimirror.Registry, setup: dict[str, Any]
) -> None:
    repo = setup["repo"]
    proxy: FaultProxy = setup["proxy"]
    assert repo.sync(client=client(setup["remote"])).ok
    proxy.status(500, times=1000, method="HEAD", path="/manifests/v1")
    result = repo.sync(client=client(setup["remote"], max_retries=1), mirror=True)
    assert [f["tag"] for f in result.dropped] == ["v1"]
    assert not result.created
    assert_complete(registry, setup)


def test_a_stall_longer_than_the_timeout_is_resumed(
    registry: ocimirror.Registry, setup: dict[str, Any]
) -> None:
    proxy: FaultProxy = setup["proxy"]
    proxy.stall(**aim(setup, {"seconds": 3.0, "after_bytes": LAYER // 2, **BLOB_GET}))
    result = setup["repo"].sync(client=client(setup["remote"], timeout=1.0))
    assert result.ok and result.requests["retry"] >= 1
    assert_complete(registry, setup)
