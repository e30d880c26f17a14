"""Pull-through caching (issue 11, part 2): nothing created beforehand, skopeo and podman pull
``HOST/cache/<upstream repository>:<tag>`` and get the upstream's image, fetched once.

The upstream is Debian's docker-registry behind the fault proxy (which counts requests and
can disappear); ocimirror serves with ``ocimirror serve``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.clients import GREETING, Tool, describe
from fixtures.proxy import FaultProxy, ProxyFactory
from fixtures.registry import Registry

import ocimirror
from ocimirror.testing import random_image, random_index, serving


@pytest.fixture
def upstream(
    docker_registry: Registry, registry_name: str, fault_proxy_factory: ProxyFactory
) -> dict[str, Any]:
    images = {
        "v1": random_image(seed=f"{registry_name}-pt1"),
        "multi": random_index(seed=f"{registry_name}-ptm"),
    }
    for tag, image in images.items():
        docker_registry.push(registry_name, image, tag)
    return {
        "registry": docker_registry,
        "name": registry_name,
        "images": images,
        "proxy": fault_proxy_factory(docker_registry.url),
    }


def cache(home: Path, upstream: dict[str, Any], **dist: Any) -> None:
    proxy: FaultProxy = upstream["proxy"]
    with ocimirror.open(home=home) as reg:
        reg.create_pull_through_remote(
            name="hub", url=proxy.url, include_names=["test/*"], exclude_names=["test/secret*"]
        )
        reg.create_pull_through_distribution("cache", base_path="cache", remote="hub", **dist)


def requests_for(proxy: FaultProxy, name: str) -> list[str]:
    return [f"{r.method} {r.path}" for r in proxy.requests if f"/{name}/" in r.path]


def test_skopeo_pulls_through_a_cache_nothing_was_created_for(
    tmp_path: Path, upstream: dict[str, Any], skopeo: Tool
) -> None:
    home = tmp_path / "home"
    cache(home, upstream)
    proxy: FaultProxy = upstream["proxy"]
    name = upstream["name"]
    with serving(home, auth=False) as served:
        for tag, image in upstream["images"].items():
            out = tmp_path / tag
            done = skopeo.run(
                "copy", "--all", "--src-tls-verify=false",
                f"docker://{served}/cache/{name}:{tag}", f"dir:{out}",
            )  # fmt: skip
            assert done.returncode == 0, describe(done)
            assert (out / "manifest.json").read_bytes() == image.manifest
            for blob in image.blobs():
                assert (out / blob.digest.hex).read_bytes() == blob.data
        first = len(requests_for(proxy, name))
        # Again: answered from the cache (one HEAD per tag at most, no blob, no GET).
        for tag in upstream["images"]:
            done = skopeo.run(
                "copy", "--all", "--src-tls-verify=false",
                f"docker://{served}/cache/{name}:{tag}", f"dir:{tmp_path / ('again-' + tag)}",
            )  # fmt: skip
            assert done.returncode == 0, describe(done)
        again = requests_for(proxy, name)[first:]
        assert not [r for r in again if not r.startswith("HEAD ")], again
    with ocimirror.open(home=home) as reg:
        repo = reg.repository(f"cache/{name}")
        assert set(repo.tags()) == {"v1", "multi"}
        assert reg.remote(f"cache/{name}").policy == "on_demand"
        assert reg.distribution(f"cache/{name}").base_path == f"cache/{name}"


def test_podman_pulls_and_runs_an_image_through_the_cache(
    tmp_path: Path,
    docker_registry: Registry,
    registry_name: str,
    fault_proxy_factory: ProxyFactory,
    podman: Tool,
    podman_busybox: str,
) -> None:
    host = docker_registry.url.split("://", 1)[1]
    podman("push", "--tls-verify=false", podman_busybox, f"{host}/{registry_name}:busybox")
    upstream = {"proxy": fault_proxy_factory(docker_registry.url), "name": registry_name}
    home = tmp_path / "home"
    cache(home, upstream)
    with serving(home, auth=False) as served:
        ref = f"{served}/cache/{registry_name}:busybox"
        podman("pull", "--tls-verify=false", ref)
        try:
            ran = podman("run", "--rm", "--network", "none", ref)
            assert ran.stdout == f"{GREETING}\n", describe(ran)
        finally:
            podman.run("rmi", "--force", ref)


def test_names_outside_the_patterns_get_404_without_asking_upstream(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    cache(home, upstream)
    proxy: FaultProxy = upstream["proxy"]
    with serving(home, auth=False) as served:
        for name in ("other/thing", "test/secret-x"):
            response = httpx.get(f"http://{served}/v2/cache/{name}/manifests/v1", timeout=30)
            assert response.status_code == 404
            assert response.json()["errors"][0]["code"] in ("NAME_UNKNOWN", "MANIFEST_UNKNOWN")
    assert proxy.requests == []


def test_a_cached_tag_is_served_when_the_upstream_is_gone_and_refreshed_when_it_moves(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    cache(home, upstream, check_interval=0.001)
    proxy: FaultProxy = upstream["proxy"]
    registry: Registry = upstream["registry"]
    name = upstream["name"]
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    with serving(home, auth=False) as served:
        url = f"http://{served}/v2/cache/{name}/manifests/v1"
        first = httpx.get(url, headers=accept, timeout=30)
        assert first.status_code == 200 and first.content == upstream["images"]["v1"].manifest
        newer = random_image(seed=f"{name}-pt-newer")
        registry.push(name, newer, "v1")
        moved = httpx.get(url, headers=accept, timeout=30)
        assert moved.content == newer.manifest
        with ocimirror.open(home=home) as reg:
            assert reg.repository(f"cache/{name}").latest_version().number == 2
        proxy.status(503, times=1000)
        kept = httpx.get(url, headers=accept, timeout=30)
        assert kept.status_code == 200 and kept.content == newer.manifest
        missing = httpx.get(f"http://{served}/v2/cache/{name}/manifests/nope", timeout=30)
        assert missing.status_code == 503
        assert missing.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_fills_in_two_server_processes_land_beside_a_sync_holding_the_repository(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    """A fill only adds and takes no lease: with another process's sync holding the cached
    repository, two server processes on one home each fill a tag at once, and both land."""
    home = tmp_path / "home"
    cache(home, upstream)
    name = upstream["name"]
    images = upstream["images"]
    accept = {"Accept": "application/vnd.oci.image.index.v1+json, "
              "application/vnd.oci.image.manifest.v1+json"}  # fmt: skip
    with serving(home, auth=False) as one, serving(home, auth=False) as two:
        # The first pull makes the repository; then a sync elsewhere holds it.
        assert httpx.get(f"http://{one}/v2/cache/{name}/manifests/v1", timeout=30).is_success
        with ocimirror.open(home=home) as reg:
            meta = reg.aio.metadata
            reg._portal.call(
                meta.acquire_lease(f"cache/{name}", holder="someone-else", purpose="sync", ttl=60)
            )
        newer = random_image(seed=f"{name}-pt-beside")
        upstream["registry"].push(name, newer, "v2")

        def pull(served: str, tag: str) -> httpx.Response:
            url = f"http://{served}/v2/cache/{name}/manifests/{tag}"
            return httpx.get(url, headers=accept, timeout=30)

        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(pull, [one, two], ["v2", "multi"]))
    assert got[0].status_code == 200 and got[0].content == newer.manifest
    assert got[1].status_code == 200 and got[1].content == images["multi"].manifest
    with ocimirror.open(home=home) as reg:
        repo = reg.repository(f"cache/{name}")
        assert repo.tags() == {
            "v1": str(images["v1"].digest),
            "v2": str(newer.digest),
            "multi": str(images["multi"].digest),
        }
        assert repo.latest_version().number == 3
        reg._portal.call(reg.aio.metadata.release_lease(f"cache/{name}", holder="someone-else"))


def test_a_tag_is_checked_upstream_at_most_once_per_interval(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    cache(home, upstream, check_interval=3600)
    proxy: FaultProxy = upstream["proxy"]
    name = upstream["name"]
    with serving(home, auth=False) as served:
        url = f"http://{served}/v2/cache/{name}/manifests/v1"
        for _ in range(5):
            assert httpx.get(url, timeout=30).status_code == 200
    manifests = [r for r in requests_for(proxy, name) if "/manifests/" in r]
    # The first pull's GET (a tag not cached yet is fetched, not checked first); the four
    # others were answered from the cache, within the interval, without asking upstream.
    assert manifests == [f"GET /v2/{name}/manifests/v1"]


def test_a_private_cache_needs_pull_rights_and_a_public_one_lets_anyone_fill_it(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    cache(home, upstream)
    name = upstream["name"]
    with ocimirror.open(home=home) as reg:
        reg.create_pull_through_distribution(
            "private-cache", base_path="private", remote="hub", private=True
        )
    with serving(home) as served:  # token auth on
        # Anyone may pull a public cache, with no token at all, and so fill it.
        public = httpx.get(f"http://{served}/v2/cache/{name}/manifests/v1", timeout=30)
        assert public.status_code == 200
        private = httpx.get(f"http://{served}/v2/private/{name}/manifests/v1", timeout=30)
        assert private.status_code == 401
        assert "www-authenticate" in private.headers
    with ocimirror.open(home=home) as reg:
        assert f"cache/{name}" in [r.name for r in reg.repositories()]
        assert f"private/{name}" not in [r.name for r in reg.repositories()]


def test_retention_evicts_the_least_recently_pulled_tags(
    tmp_path: Path, docker_registry: Registry, registry_name: str, fault_proxy_factory: ProxyFactory
) -> None:
    images = {f"t{i}": random_image(seed=f"{registry_name}-ret{i}") for i in range(3)}
    for tag, image in images.items():
        docker_registry.push(registry_name, image, tag)
    upstream = {"proxy": fault_proxy_factory(docker_registry.url), "name": registry_name}
    home = tmp_path / "home"
    one = sum(b.size for b in images["t0"].blobs())
    cache(home, upstream, max_size=int(one * 2.5))
    with serving(home, auth=False) as served:
        for tag in ("t0", "t1", "t2"):
            url = f"http://{served}/v2/cache/{registry_name}/manifests/{tag}"
            assert httpx.get(url, timeout=30).status_code == 200
    with ocimirror.open(home=home) as reg:
        repo = reg.repository(f"cache/{registry_name}")
        assert set(repo.tags()) == {"t1", "t2"}  # t0 was pulled least recently
        versions = [v.number for v in repo.versions()]
        assert len(versions) == 1  # a cache keeps its latest version only


def test_pull_through_remotes_never_show_their_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ocimirror.cli import main
    from ocimirror.pullthrough import PullThroughRemote

    remote = PullThroughRemote(
        name="hub", url="https://bob:url-s3cret@registry.example", password="pw-s3cret",
        headers={"X-Api-Key": "hdr-s3cret"},
    )  # fmt: skip
    for shown in (repr(remote), str(remote.to_json())):
        assert "s3cret" not in shown
    assert remote.to_json(secrets=True)["password"] == "pw-s3cret"
    home = str(tmp_path / "home")
    assert main(["--home", home, "remote", "pull-through", "create", "--name", "hub",
                 "--url", "https://registry.example", "--username", "bob",
                 "--password", "pw-s3cret", "--include-names", "library/*"]) == 0  # fmt: skip
    assert main(["--home", home, "remote", "pull-through", "show", "--name", "hub"]) == 0
    assert main(["--home", home, "distribution", "pull-through", "create", "--name", "c",
                 "--base-path", "cache", "--remote", "hub", "--max-age", "3600"]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    assert "pw-s3cret" not in out + err
    assert '"include_names": [\n    "library/*"' in out or '"library/*"' in out
    assert '"max_age": 3600.0' in out


def test_a_tag_the_upstream_does_not_have_is_manifest_unknown(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    cache(home, upstream)
    with serving(home, auth=False) as served:
        url = f"http://{served}/v2/cache/{upstream['name']}/manifests/no-such-tag"
        response = httpx.get(url, timeout=30)
        assert response.status_code == 404
        assert response.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
