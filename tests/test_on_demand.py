"""On-demand and streamed content (issue 11, part 1), against a real upstream and skopeo.

The upstream is Debian's docker-registry behind the fault proxy, which records every request
and can corrupt, fail or disappear; ocimirror serves with ``ocimirror serve`` (granian).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.clients import Tool
from fixtures.proxy import FaultProxy, ProxyFactory
from fixtures.registry import Registry

import ocimirror
from ocimirror.cli import main
from ocimirror.core.digest import Digest
from ocimirror.errors import IncompleteContent
from ocimirror.testing import Image, random_image, random_index, random_layer, serving

BIG = random_layer(3 << 20, seed="ondemand-big")


@pytest.fixture
def upstream(
    docker_registry: Registry, registry_name: str, fault_proxy_factory: ProxyFactory
) -> dict[str, Any]:
    images = {
        "v1": random_image(seed=f"{registry_name}-1", base=[BIG]),
        "v2": random_image(seed=f"{registry_name}-2"),
        "multi": random_index(seed=f"{registry_name}-multi"),
    }
    for tag, image in images.items():
        docker_registry.push(registry_name, image, tag)
    proxy = fault_proxy_factory(docker_registry.url)
    return {"registry": docker_registry, "name": registry_name, "images": images, "proxy": proxy}


def mirror(home: Path, upstream: dict[str, Any], policy: str) -> ocimirror.Registry:
    reg = ocimirror.open(home=home)
    proxy: FaultProxy = upstream["proxy"]
    reg.create_remote(name="up", url=proxy.url, upstream_name=upstream["name"], policy=policy)
    repo = reg.create_repository("mirror/app", remote="up")
    result = repo.sync()
    assert result.status == "complete"
    reg.create_distribution("app", base_path="mirror/app", repository="mirror/app")
    return reg


def stored(home: Path, digest: str) -> int | None:
    """The size of a blob in the home's blob store, or None."""

    async def look() -> int | None:
        async with await ocimirror.AsyncRegistry.open(home=home) as reg:
            return await reg.blobs.stat(Digest.parse(digest))

    return asyncio.run(look())


def layers(image: Image) -> list[str]:
    return [str(layer.digest) for layer in image.layers]


def blob_gets(proxy: FaultProxy) -> list[str]:
    return [
        r.path.rsplit("/", 1)[1]
        for r in proxy.requests
        if "/blobs/" in r.path and r.method == "GET"
    ]


def copy(skopeo: Tool, served: str, tag: str, dest: Path) -> Any:
    return skopeo.run(
        "copy",
        "--all",
        "--src-tls-verify=false",
        f"docker://{served}/mirror/app:{tag}",
        f"dir:{dest}",
    )


def test_an_on_demand_sync_records_layers_without_downloading_them(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    with mirror(tmp_path / "home", upstream, "on_demand") as reg:
        v1 = upstream["images"]["v1"]
        # Configs came; layers did not, yet they are content of the version.
        fetched = set(blob_gets(upstream["proxy"]))
        assert str(v1.config.digest) in fetched
        assert not fetched & set(layers(v1))
        repo = reg.repository("mirror/app")
        assert all(repo.has_blob(d) for d in layers(v1))
        blobs = {str(b.digest) for i in upstream["images"].values() for b in i.blobs()}
        assert repo.latest_version().content_summary.present["container.blob"] == len(blobs)


def test_an_on_demand_mirror_serves_every_tag_byte_identical_and_fetches_once(
    tmp_path: Path, upstream: dict[str, Any], skopeo: Tool
) -> None:
    home = tmp_path / "home"
    proxy: FaultProxy = upstream["proxy"]
    mirror(home, upstream, "on_demand").close()
    before = len(blob_gets(proxy))
    with serving(home, auth=False) as served:
        for tag, image in upstream["images"].items():
            out = tmp_path / f"first-{tag}"
            done = copy(skopeo, served, tag, out)
            assert done.returncode == 0, done.stderr
            for blob in image.blobs():
                assert (out / blob.digest.hex).read_bytes() == blob.data
        first = len(blob_gets(proxy))
        assert first > before
        # The second copy is served from storage: no blob request reaches the upstream.
        for tag in upstream["images"]:
            done = copy(skopeo, served, tag, tmp_path / f"second-{tag}")
            assert done.returncode == 0, done.stderr
        assert len(blob_gets(proxy)) == first
    # Each layer was fetched once, and is now in storage.
    gets = blob_gets(proxy)
    for image in upstream["images"].values():
        for one in image.images():
            for digest in layers(one):
                assert gets.count(digest) == 1
                assert stored(home, digest) is not None


def test_concurrent_cold_pulls_of_one_blob_make_one_upstream_request(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    proxy: FaultProxy = upstream["proxy"]
    mirror(home, upstream, "on_demand").close()
    big = str(BIG.digest)
    proxy.stall(0.5, after_bytes=1 << 20, path="/blobs/", times=1)
    with serving(home, auth=False) as served:
        url = f"http://{served}/v2/mirror/app/blobs/{big}"

        def pull(i: int) -> bytes:
            headers = {"Range": "bytes=1000-"} if i == 7 else {}
            response = httpx.get(url, headers=headers, timeout=60)
            assert response.status_code == (206 if i == 7 else 200)
            return response.content

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            bodies = list(pool.map(pull, range(8)))
    assert all(body == BIG.data for body in bodies[:7])
    assert bodies[7] == BIG.data[1000:]
    assert blob_gets(proxy).count(big) == 1


def test_a_corrupt_upstream_blob_is_never_stored_and_the_client_fails(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    proxy: FaultProxy = upstream["proxy"]
    mirror(home, upstream, "on_demand").close()
    big = str(BIG.digest)
    proxy.corrupt(5, path="/blobs/", times=10)
    with serving(home, auth=False) as served:
        url = f"http://{served}/v2/mirror/app/blobs/{big}"
        received = bytearray()
        with pytest.raises(httpx.HTTPError), httpx.stream("GET", url, timeout=60) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received += chunk
        # Never the whole (wrong) blob: the answer stops short of its last byte.
        assert len(received) < BIG.size
    assert stored(home, big) is None


def test_with_the_upstream_gone_pulled_content_is_served_and_the_rest_fails_clearly(
    tmp_path: Path, upstream: dict[str, Any], skopeo: Tool
) -> None:
    home = tmp_path / "home"
    proxy: FaultProxy = upstream["proxy"]
    mirror(home, upstream, "on_demand").close()
    with serving(home, auth=False) as served:
        done = copy(skopeo, served, "v2", tmp_path / "before")
        assert done.returncode == 0, done.stderr
        proxy.close()  # the upstream is gone
        done = copy(skopeo, served, "v2", tmp_path / "after")
        assert done.returncode == 0, done.stderr
        missing = layers(upstream["images"]["v1"])[-1]
        response = httpx.get(f"http://{served}/v2/mirror/app/blobs/{missing}", timeout=60)
        assert response.status_code == 503
        assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert "remote 'up'" in response.json()["errors"][0]["message"]
        # The remote cools down: the next request fails at once, without trying upstream.
        again = httpx.get(f"http://{served}/v2/mirror/app/blobs/{missing}", timeout=60)
        assert again.status_code == 503 and int(again.headers["retry-after"]) > 0
        assert "left alone" in again.json()["errors"][0]["message"]


def test_streamed_content_is_served_and_never_kept(
    tmp_path: Path, upstream: dict[str, Any], skopeo: Tool
) -> None:
    home = tmp_path / "home"
    proxy: FaultProxy = upstream["proxy"]
    mirror(home, upstream, "streamed").close()
    v1 = upstream["images"]["v1"]
    with serving(home, auth=False) as served:
        for n in (1, 2):
            out = tmp_path / f"copy-{n}"
            done = copy(skopeo, served, "v1", out)
            assert done.returncode == 0, done.stderr
            for blob in v1.blobs():
                assert (out / blob.digest.hex).read_bytes() == blob.data
    gets = blob_gets(proxy)
    for digest in layers(v1):
        assert gets.count(digest) == 2  # once per copy: nothing was kept
    for digest in layers(v1):
        assert stored(home, digest) is None


def test_head_of_remote_content_answers_without_fetching(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    proxy: FaultProxy = upstream["proxy"]
    mirror(home, upstream, "on_demand").close()
    before = len(blob_gets(proxy))
    with serving(home, auth=False) as served:
        big = str(BIG.digest)
        response = httpx.head(f"http://{served}/v2/mirror/app/blobs/{big}", timeout=30)
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == BIG.size
        assert response.headers["docker-content-digest"] == big
    assert len(blob_gets(proxy)) == before


def test_export_fetches_on_demand_content_or_names_it(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    v1 = upstream["images"]["v1"]
    with mirror(tmp_path / "home", upstream, "on_demand") as reg:
        repo = reg.repository("mirror/app")
        with pytest.raises(IncompleteContent) as info:
            repo.export_layout(tmp_path / "nofetch", tags=["v1"], fetch=False)
        assert set(info.value.detail["remote"]) == set(layers(v1))
        assert not (tmp_path / "nofetch" / "index.json").exists()
        before = reg.repair()
        assert before.ok and before.remote >= len(layers(v1))
        repo.export_layout(tmp_path / "out", tags=["v1"])
        for blob in v1.blobs():
            assert (
                tmp_path / "out" / "blobs" / "sha256" / blob.digest.hex
            ).read_bytes() == blob.data
        after = reg.repair()  # the export kept what it fetched (on_demand)
        assert after.ok and after.remote == before.remote - len(layers(v1))


def test_the_cli_takes_the_policies(
    tmp_path: Path, upstream: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    proxy: FaultProxy = upstream["proxy"]

    def cli(*argv: str) -> Any:
        status = main(["--home", str(tmp_path / "home"), *argv])
        out, err = capsys.readouterr()
        assert status == 0, err
        return json.loads(out) if out.strip() else None

    remote = cli("remote", "create", "--name", "up", "--url", proxy.url,
                 "--upstream-name", upstream["name"], "--policy", "streamed")  # fmt: skip
    assert remote["policy"] == "streamed"
    assert cli("remote", "update", "--name", "up", "--policy", "on_demand")["policy"] == "on_demand"
    cli("repository", "create", "--name", "app", "--remote", "up")
    synced = cli("repository", "sync", "--name", "app", "--no-progress")
    assert synced["sync"]["status"] == "complete"
    everything = {d for i in upstream["images"].values() for one in i.images() for d in layers(one)}
    assert not set(blob_gets(proxy)) & everything


def test_updating_a_cooling_remote_lets_it_be_tried_again(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    proxy: FaultProxy = upstream["proxy"]
    mirror(home, upstream, "on_demand").close()
    big = str(BIG.digest)
    proxy.status(503, path="/blobs/", times=1000)
    with serving(home, auth=False) as served:
        url = f"http://{served}/v2/mirror/app/blobs/{big}"
        assert httpx.get(url, timeout=60).status_code == 503
        assert "left alone" in httpx.get(url, timeout=60).json()["errors"][0]["message"]
        proxy.clear()
        with ocimirror.open(home=home) as reg:
            reg.update_remote("up", max_retries=1)  # a changed remote is worth trying now
        response = httpx.get(url, timeout=60)
        assert response.status_code == 200 and response.content == BIG.data


def test_export_without_fetching_names_the_remote_blobs_from_the_cli(
    tmp_path: Path, upstream: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    mirror(home, upstream, "on_demand").close()
    argv = ["--home", str(home), "repository", "export", "--name", "mirror/app",
            "--path", str(tmp_path / "out"), "--tag", "v2", "--no-fetch"]  # fmt: skip
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "on-demand content" in err
    assert main(argv[:-1]) == 0
    assert (tmp_path / "out" / "index.json").exists()
